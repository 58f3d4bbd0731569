// Signing in: the bearer token lives in sessionStorage (gone when the tab closes), and what the token may do
// is asked of the server itself, so the read-only view follows the server's role table, not a copy of it.
import { Code } from "@gen/google/rpc/code_pb.js";
import { call, setToken } from "./api/client";
import { GuardrailService, ModelRegistryService } from "./api/services";
import { ApiError } from "./api/status";

const TOKEN_KEY = "modelplane.console.token";

/** A signed-in token and what it may do. The server enforces every rule again on each call. */
export interface Session {
  token: string;
  /** May change models, aliases, deployments, rollouts and policies (admin, operator). */
  canWrite: boolean;
  /** May run CheckContent (admin, operator, service). */
  canCheck: boolean;
}

/**
 * Whether the token may call a method, from a call that can change nothing: its request is refused by
 * validation (INVALID_ARGUMENT, NOT_FOUND) after the role check, or by the role check (PERMISSION_DENIED).
 */
async function permitted(probe: () => Promise<unknown>): Promise<boolean> {
  try {
    await probe();
    return true;
  } catch (error) {
    if (error instanceof ApiError && (error.code === Code.PERMISSION_DENIED || error.code === Code.UNAUTHENTICATED)) {
      return false;
    }
    return true;
  }
}

/** Checks the token with a read every role may make, then what else it may do; throws ApiError if refused. */
export async function signIn(token: string): Promise<Session> {
  setToken(token);
  try {
    await call(ModelRegistryService.method.listModels, { pageSize: 1 });
  } catch (error) {
    setToken("");
    throw error;
  }
  const [canWrite, canCheck] = await Promise.all([
    // An alias of a model id that cannot exist, moved to no version: refused before anything is read.
    permitted(() => call(ModelRegistryService.method.setAlias, { name: "models/-/aliases/-", version: "" })),
    permitted(() => call(GuardrailService.method.checkContent, { policy: "policies/-", text: "" })),
  ]);
  sessionStorage.setItem(TOKEN_KEY, token);
  return { token, canWrite, canCheck };
}

/** The token this tab signed in with, if any. */
export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  setToken("");
}

// A server with auth on: no token is UNAUTHENTICATED, a bad one too, a token made with the CLI works.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { connect, ModelplaneError, PermissionDenied, RoleNotAllowed, TokenInvalid, TokenMissing, Unauthenticated } from "../src/index.js";
import { createToken, liveServer } from "./support/server.js";

const live = liveServer({ auth: true });

async function listModelsWith(token: string | undefined): Promise<unknown> {
  const conn = connect(live.server.address, token === undefined ? {} : { token });
  try {
    return await conn.registry.listModels({});
  } catch (error) {
    return error;
  } finally {
    conn.close();
  }
}

describe("auth", () => {
  test("a call without a token is UNAUTHENTICATED (TOKEN_MISSING)", async () => {
    const error = await listModelsWith(undefined);
    assert.ok(error instanceof TokenMissing, `got ${String(error)}`);
    assert.ok(error instanceof Unauthenticated);
  });

  test("an unknown token is UNAUTHENTICATED (TOKEN_INVALID)", async () => {
    const error = await listModelsWith("mp_not-a-real-token");
    assert.ok(error instanceof TokenInvalid, `got ${String(error)}`);
    assert.equal(error.reason, "TOKEN_INVALID");
  });

  test("a token made by `modelplane token create` is accepted; its role bounds what it may do", async () => {
    const reader = createToken(live.databaseUrl, "reader", "ts-reader");
    const listed = await listModelsWith(reader);
    assert.ok(!(listed instanceof ModelplaneError), `got ${String(listed)}`);

    const conn = connect(live.server.address, { token: reader });
    try {
      const refused = await conn.registry.createModel({ modelId: "chat", model: { provider: "openai" } }).catch((e: unknown) => e);
      assert.ok(refused instanceof RoleNotAllowed, `got ${String(refused)}`);
      assert.ok(refused instanceof PermissionDenied);
      assert.equal(refused.reason, "ROLE_NOT_ALLOWED");
    } finally {
      conn.close();
    }

    const operator = connect(live.server.address, { token: createToken(live.databaseUrl, "operator", "ts-operator") });
    try {
      const created = await operator.registry.createModel({ modelId: "chat", model: { provider: "openai" } });
      assert.equal(created.model?.name, "models/chat");
    } finally {
      operator.close();
    }
  });
});

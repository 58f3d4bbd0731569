// Retrying on UNAVAILABLE within one deadline: the same schedule as the Python client (gRFC A6).
//
// Before retry n the client waits a random time in [0, min(initial * multiplier^(n-1), maximum)], never less
// than the RetryInfo delay the server sent. All attempts share the call's deadline: a retry that could not
// start before it is not made, and the last error is thrown instead, so the caller sees why the call failed
// rather than a bare DEADLINE_EXCEEDED.

import { Code } from "@connectrpc/connect";
import type { ModelplaneError } from "./errors.js";

/** How often and how patiently a call is retried; maxAttempts counts the first attempt too. */
export interface RetryPolicy {
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly multiplier: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
  multiplier: 2,
});

export const NO_RETRY: RetryPolicy = Object.freeze({ ...DEFAULT_RETRY_POLICY, maxAttempts: 1 });

/** Throws RangeError unless `policy` is one a loop can follow. */
export function checkRetryPolicy(policy: RetryPolicy): RetryPolicy {
  if (!Number.isInteger(policy.maxAttempts) || policy.maxAttempts < 1) {
    throw new RangeError("maxAttempts must be an integer of at least 1");
  }
  if (policy.initialBackoffMs < 0 || policy.maxBackoffMs < policy.initialBackoffMs) {
    throw new RangeError("backoffs must satisfy 0 <= initialBackoffMs <= maxBackoffMs");
  }
  if (policy.multiplier < 1) {
    throw new RangeError("multiplier must be at least 1");
  }
  return policy;
}

/** The backoff state of one call or one run of a resuming stream: it counts consecutive failures and
 * forgets them when the loop makes progress (`reset`). */
export class Backoff {
  private failures = 0;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly random: () => number = Math.random,
  ) {
    checkRetryPolicy(policy);
  }

  /** True when maxAttempts - 1 retries have been made since the last reset. */
  get exhausted(): boolean {
    return this.failures >= this.policy.maxAttempts - 1;
  }

  /** Counts a failure; the wait before the next try: full jitter under the ceiling, at least `atLeastMs`. */
  nextDelayMs(atLeastMs?: number): number {
    this.failures += 1;
    const { initialBackoffMs, multiplier, maxBackoffMs } = this.policy;
    const ceiling = Math.min(initialBackoffMs * multiplier ** (this.failures - 1), maxBackoffMs);
    const delay = this.random() * ceiling;
    return atLeastMs === undefined ? delay : Math.max(delay, atLeastMs);
  }

  /** The loop made progress: the next failure waits the shortest time again. */
  reset(): void {
    this.failures = 0;
  }
}

/** UNAVAILABLE is the one code meaning "nothing was done, try again"; every other is the caller's. */
export function isRetryable(error: ModelplaneError): boolean {
  return error.code === Code.Unavailable;
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export interface RetryOptions {
  /** The whole call's deadline in milliseconds from now, retries included; undefined: none. */
  timeoutMs: number | undefined;
  policy: RetryPolicy;
  signal?: AbortSignal;
  random?: () => number;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** Runs attempt(remainingMs) until it succeeds, throws a non-retryable error, runs out of attempts or would
 * run past the deadline. `attempt` throws ModelplaneErrors only. */
export async function callWithRetry<T>(
  attempt: (remainingMs: number | undefined) => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const now = options.now ?? Date.now;
  const deadline = options.timeoutMs === undefined ? undefined : now() + options.timeoutMs;
  const backoff = new Backoff(options.policy, options.random);
  for (;;) {
    const remaining = deadline === undefined ? undefined : Math.max(deadline - now(), 0);
    try {
      return await attempt(remaining);
    } catch (thrown) {
      const error = thrown as ModelplaneError;
      if (!isRetryable(error) || backoff.exhausted) {
        throw error;
      }
      const delay = backoff.nextDelayMs(error.retryAfterMs);
      if (deadline !== undefined && now() + delay >= deadline) {
        throw error;
      }
      await (options.sleep ?? sleep)(delay, options.signal);
    }
  }
}

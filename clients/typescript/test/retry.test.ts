// The retry loop of unary calls, driven by scripted attempts and a manual clock (no I/O, no real waits).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Aborted, callWithRetry, DEFAULT_RETRY_POLICY, NO_RETRY, Unavailable } from "../src/index.js";
import { Backoff } from "../src/retry.js";

/** A clock that moves only when the loop sleeps, and a record of the waits. */
function manualClock(): { now: () => number; sleep: (ms: number) => Promise<void>; waits: number[] } {
  let time = 0;
  const waits: number[] = [];
  return {
    now: () => time,
    sleep: async (ms: number) => {
      waits.push(ms);
      time += ms;
    },
    waits,
  };
}

describe("callWithRetry", () => {
  test("retries UNAVAILABLE, waiting at least the server's RetryInfo delay, then returns the answer", async () => {
    const clock = manualClock();
    let attempts = 0;
    const answer = await callWithRetry(
      async () => {
        attempts += 1;
        if (attempts < 3) {
          throw new Unavailable("storage is away", { retryAfterMs: 700 });
        }
        return "done";
      },
      { timeoutMs: 10_000, policy: DEFAULT_RETRY_POLICY, ...clock, random: () => 0.5 },
    );
    assert.equal(answer, "done");
    assert.equal(attempts, 3);
    // Jitter alone would wait 50 ms, then 100 ms: RetryInfo's 700 ms wins both times.
    assert.deepEqual(clock.waits, [700, 700]);
  });

  test("UNAVAILABLE with any reason is retried", async () => {
    const clock = manualClock();
    let attempts = 0;
    await callWithRetry(
      async () => {
        attempts += 1;
        if (attempts === 1) {
          throw new Unavailable("the store is away", { reason: "STORAGE_UNAVAILABLE" });
        }
      },
      { timeoutMs: 10_000, policy: DEFAULT_RETRY_POLICY, ...clock },
    );
    assert.equal(attempts, 2);
  });

  test("never retries another code: ABORTED is the caller's to handle", async () => {
    const clock = manualClock();
    let attempts = 0;
    const failure = callWithRetry(
      async () => {
        attempts += 1;
        throw new Aborted("lost the race");
      },
      { timeoutMs: 10_000, policy: DEFAULT_RETRY_POLICY, ...clock },
    );
    await assert.rejects(failure, Aborted);
    assert.equal(attempts, 1);
    assert.deepEqual(clock.waits, []);
  });

  test("gives up with the last error when a wait would pass the deadline", async () => {
    const clock = manualClock();
    let attempts = 0;
    const failure = callWithRetry(
      async () => {
        attempts += 1;
        throw new Unavailable("shutting down", { retryAfterMs: 1_500 });
      },
      { timeoutMs: 2_000, policy: DEFAULT_RETRY_POLICY, ...clock },
    );
    await assert.rejects(failure, (error: unknown) => error instanceof Unavailable && error.retryAfterMs === 1_500);
    // One wait of 1.5 s fits in 2 s; a second would end at 3 s.
    assert.equal(attempts, 2);
  });

  test("NO_RETRY makes one attempt; the policy bounds the attempts", async () => {
    for (const [policy, expected] of [
      [NO_RETRY, 1],
      [DEFAULT_RETRY_POLICY, DEFAULT_RETRY_POLICY.maxAttempts],
    ] as const) {
      const clock = manualClock();
      let attempts = 0;
      await assert.rejects(
        callWithRetry(
          async () => {
            attempts += 1;
            throw new Unavailable("down");
          },
          { timeoutMs: undefined, policy, ...clock },
        ),
        Unavailable,
      );
      assert.equal(attempts, expected);
    }
  });
});

describe("Backoff", () => {
  test("ceilings grow by the multiplier up to the maximum; reset starts again", () => {
    const backoff = new Backoff({ maxAttempts: 10, initialBackoffMs: 100, maxBackoffMs: 500, multiplier: 2 }, () => 1);
    const delays = [1, 2, 3, 4, 5].map(() => backoff.nextDelayMs());
    assert.deepEqual(delays, [100, 200, 400, 500, 500]);
    backoff.reset();
    assert.equal(backoff.nextDelayMs(), 100);
  });

  test("refuses a policy no loop can follow", () => {
    assert.throws(() => new Backoff({ ...DEFAULT_RETRY_POLICY, maxAttempts: 0 }), RangeError);
    assert.throws(() => new Backoff({ ...DEFAULT_RETRY_POLICY, initialBackoffMs: 10, maxBackoffMs: 5 }), RangeError);
  });
});

// Watch streams that outlive a broken call: reopened where they stopped, with no gap and no repeat.
//
// WatchModels and WatchDeployment send `oneof event {change, progress}` messages in revision order, and
// their start_revision is inclusive (etcd's semantics; 0: from now). A stream that ends with UNAVAILABLE
// (a server shutting down, a lost connection) is reopened from the position the caller has reached, after a
// wait chosen by the retry schedule (full jitter, at least the server's RetryInfo, never past the deadline).

import { Backoff, isRetryable, sleep, type RetryPolicy } from "./retry.js";
import { fromConnectError } from "./errors.js";

/** A watch is long-lived and its likeliest break is a server restarting, which takes seconds: more and
 * longer waits than a unary call's policy, about half a minute in all. A message received restores it. */
export const WATCH_RESUME_POLICY: RetryPolicy = Object.freeze({
  maxAttempts: 10,
  initialBackoffMs: 200,
  maxBackoffMs: 5000,
  multiplier: 2,
});

/** The part of a watch message this module reads: which event it is and its revision. */
export interface WatchMessage {
  event: { case: "change" | "progress"; value: { revision: bigint } } | { case: undefined; value?: undefined };
}

/** Where to reopen a watch so that the caller sees no gap and no repeat.
 *
 * A progress mark at R says every change up to R was sent: reopen at R + 1. A change at R says only that
 * changes before R were all sent, since one revision can hold several changes and a stream can end between
 * them: reopen at R and drop as many changes of revision R as the caller already has. */
export class WatchPosition {
  /** How many changes of revision `startRevision` the caller already has. */
  receivedAtStart = 0;
  // Repeats still expected on the current stream: the changes of `startRevision` sent before.
  private repeats = 0;

  /** @param startRevision the start_revision to reopen with: 0 (from now) until the stream says more. */
  constructor(public startRevision: bigint) {}

  /** The start_revision of the next stream; from now on its repeats are dropped. */
  reopen(): bigint {
    this.repeats = this.receivedAtStart;
    return this.startRevision;
  }

  /** Records one message; false when it is a repeat to drop. */
  receive(message: WatchMessage): boolean {
    const { event } = message;
    if (event.case === "progress") {
      this.startRevision = event.value.revision + 1n;
      this.receivedAtStart = 0;
      this.repeats = 0;
    } else if (event.case === "change") {
      const revision = event.value.revision;
      if (revision === this.startRevision && this.repeats > 0) {
        this.repeats -= 1;
        return false;
      }
      if (revision === this.startRevision) {
        this.receivedAtStart += 1;
      } else {
        this.startRevision = revision;
        this.receivedAtStart = 1;
        this.repeats = 0;
      }
    }
    return true;
  }
}

export interface WatchOptions {
  /** The first revision to send (inclusive; 1 replays every change kept); 0n or undefined: from now. */
  startRevision?: bigint | number | string;
  /** Reopen the stream after UNAVAILABLE (default true). */
  resume?: boolean;
  /** Bounds the whole watch, reopenings included (default: none). */
  timeoutMs?: number;
  /** The waits between reopenings; maxAttempts bounds consecutive failed openings. */
  retry?: RetryPolicy;
  /** Stops the watch: the iteration ends by throwing the abort as a Cancelled error. */
  signal?: AbortSignal;
  random?: () => number;
}

/** Opens one stream from `startRevision`, with `timeoutMs` left of the watch's deadline. */
export type OpenWatch<M> = (startRevision: bigint, timeoutMs: number | undefined, signal: AbortSignal) => AsyncIterable<M>;

/** The messages of a watch opened by `open`, reopened on UNAVAILABLE when `resume` is set; any other
 * error, or UNAVAILABLE once the budget or the deadline is spent, is thrown as a ModelplaneError. */
export async function* resumableWatch<M extends WatchMessage>(
  open: OpenWatch<M>,
  options: WatchOptions = {},
): AsyncGenerator<M, void, undefined> {
  const now = Date.now;
  const deadline = options.timeoutMs === undefined ? undefined : now() + options.timeoutMs;
  const position = new WatchPosition(BigInt(options.startRevision ?? 0));
  const backoff = new Backoff(options.retry ?? WATCH_RESUME_POLICY, options.random);
  for (;;) {
    const remaining = deadline === undefined ? undefined : Math.max(deadline - now(), 0);
    // Each stream gets its own controller, so that a caller leaving the loop early closes the stream.
    const controller = new AbortController();
    const stopStream = (): void => controller.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", stopStream, { once: true });
    try {
      for await (const message of open(position.reopen(), remaining, controller.signal)) {
        // The stream works again: the next break gets the whole budget.
        backoff.reset();
        if (position.receive(message)) {
          yield message;
        }
      }
      return;
    } catch (thrown) {
      const error = fromConnectError(thrown);
      if (options.resume === false || !isRetryable(error) || backoff.exhausted) {
        throw error;
      }
      const delay = backoff.nextDelayMs(error.retryAfterMs);
      if (deadline !== undefined && now() + delay >= deadline) {
        throw error;
      }
      await sleep(delay, options.signal).catch((reason: unknown) => {
        throw fromConnectError(reason);
      });
    } finally {
      options.signal?.removeEventListener("abort", stopStream);
      controller.abort();
    }
  }
}

// A typed client of one modelplane service, derived from its generated descriptor: one method per RPC, with
// the signature Connect gives it (typed requests in, typed messages out), and the house rules on top.
//
// - Mutations get a request id: an empty `request_id` field is filled with a random UUID before the first
//   attempt, so a retried mutation runs once.
// - Unary calls have a deadline (10 s unless told otherwise) shared by their retries on UNAVAILABLE, which
//   wait at least the server's RetryInfo delay.
// - Watches (a server stream with `start_revision` in and `oneof event {change, progress}` out) reopen after
//   UNAVAILABLE where they stopped: no gap, no repeat (watch.ts).
// - Every failure is thrown as a ModelplaneError subclass, also from inside a stream.

import {
  clone,
  create,
  isMessage,
  type DescMessage,
  type DescMethod,
  type DescService,
  type Message,
} from "@bufbuild/protobuf";
import {
  createClient,
  type CallOptions,
  type Client,
  type Transport,
} from "@connectrpc/connect";
import { fromConnectError } from "./errors.js";
import { callWithRetry, type RetryPolicy } from "./retry.js";
import { resumableWatch, type WatchMessage } from "./watch.js";

/** What every call of a client shares unless a call's own options say otherwise. */
export interface CallSettings {
  /** Deadline of each unary call, retries included, in milliseconds. */
  readonly timeoutMs: number;
  /** Retries of unary calls on UNAVAILABLE (NO_RETRY turns them off). */
  readonly retry: RetryPolicy;
  /** Reopenings of a broken watch (NO_RETRY turns resuming off). */
  readonly watchRetry: RetryPolicy;
}

/** The client of one service: Connect's typed client, with the behaviour described above. */
export type ServiceClient<S extends DescService> = Client<S>;

type AnyFn = (...args: never[]) => unknown;

/** Builds the client of `service` on `transport`. */
export function createServiceClient<S extends DescService>(
  service: S,
  transport: Transport,
  settings: CallSettings,
): ServiceClient<S> {
  const connectClient = createClient(service, transport) as unknown as Record<string, AnyFn>;
  const methods: Record<string, AnyFn> = {};
  for (const method of service.methods) {
    methods[method.localName] = wrapMethod(method, connectClient[method.localName] as AnyFn, settings);
  }
  return methods as unknown as ServiceClient<S>;
}

// `call` is Connect's function of the method; its types are checked where ServiceClient<S> is used.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function wrapMethod(method: DescMethod, call: (...args: any[]) => any, settings: CallSettings): AnyFn {
  switch (method.methodKind) {
    case "unary": {
      return async (request: unknown, options: CallOptions = {}) => {
        const message = withRequestId(method.input, request);
        return callWithRetry(
          (remaining) => call(message, { ...options, timeoutMs: remaining }).catch(rethrow),
          {
            timeoutMs: options.timeoutMs ?? settings.timeoutMs,
            policy: settings.retry,
            ...(options.signal === undefined ? {} : { signal: options.signal }),
          },
        );
      };
    }
    case "server_streaming": {
      if (isWatch(method)) {
        return (request: unknown, options: CallOptions = {}) => {
          const first = withRequestId(method.input, request);
          return resumableWatch(
            (startRevision, timeoutMs, signal) => {
              const reopened = clone(method.input, first) as unknown as Record<string, unknown>;
              reopened["startRevision"] = startRevision;
              const stream = call(reopened as never, {
                ...options,
                signal,
                ...(timeoutMs === undefined ? {} : { timeoutMs }),
              });
              return stream as AsyncIterable<WatchMessage>;
            },
            {
              startRevision: (first as unknown as Record<string, bigint | undefined>)["startRevision"] ?? 0n,
              retry: settings.watchRetry,
              ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
              ...(options.signal === undefined ? {} : { signal: options.signal }),
            },
          );
        };
      }
      return (request: unknown, options?: CallOptions) => translated(call(request as never, options));
    }
    case "client_streaming": {
      return (requests: AsyncIterable<unknown>, options?: CallOptions) =>
        call(requests as never, options).catch(rethrow);
    }
    case "bidi_streaming": {
      return (requests: AsyncIterable<unknown>, options?: CallOptions) =>
        translated(call(requests as never, options));
    }
  }
}

function rethrow(thrown: unknown): never {
  throw fromConnectError(thrown);
}

/** The stream's messages; its failure thrown as a ModelplaneError. */
async function* translated<T>(stream: AsyncIterable<T>): AsyncGenerator<T, void, undefined> {
  try {
    yield* stream;
  } catch (thrown) {
    rethrow(thrown);
  }
}

/** A copy of the request (the caller's message is left alone) with a fresh request id if it has none. */
function withRequestId(schema: DescMessage, request: unknown): Message {
  const message: Message = isMessage(request, schema) ? clone(schema, request) : create(schema, request as never);
  const field = schema.fields.find((f) => f.name === "request_id" && f.fieldKind === "scalar");
  if (field !== undefined) {
    const values = message as unknown as Record<string, unknown>;
    if (values[field.localName] === "") {
      values[field.localName] = globalThis.crypto.randomUUID();
    }
  }
  return message;
}

/** A watch: a server stream taking `start_revision` and sending `oneof event {change, progress}`. */
function isWatch(method: DescMethod): boolean {
  const takesRevision = method.input.fields.some((f) => f.name === "start_revision");
  const event = method.output.oneofs.find((o) => o.name === "event");
  const cases = event?.fields.map((f) => f.name).sort().join(",");
  return takesRevision && cases === "change,progress";
}

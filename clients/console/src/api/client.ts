// Calls the server's HTTP/JSON API with the contract's own message types: a request is built with
// `create`, sent as proto3 JSON on the route its google.api.http annotation names, and the answer read back
// with `fromJson`, so int64s, enums, timestamps and durations keep their types end to end.
import {
  create,
  fromJson,
  toJson,
  type DescMessage,
  type DescMethod,
  type JsonObject,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { readEvents } from "./sse";
import { ApiError, networkError, statusError } from "./status";
import { transcode } from "./transcode";

/** A unary RPC of a generated service descriptor, with its request and response types. */
export type Unary<I extends DescMessage, O extends DescMessage> = DescMethod & {
  methodKind: "unary";
  input: I;
  output: O;
};

/** A server-streaming RPC of a generated service descriptor. */
export type ServerStream<I extends DescMessage, O extends DescMessage> = DescMethod & {
  methodKind: "server_streaming";
  input: I;
  output: O;
};

/** Every call's deadline; a stream has none, and ends when its page or panel goes away. */
const CALL_TIMEOUT_MS = 15_000;

/** The bearer token every call carries; empty for a server without auth. */
let bearerToken = "";

export function setToken(token: string): void {
  bearerToken = token;
}

function headers(accept: string): Headers {
  const result = new Headers({ Accept: accept });
  if (bearerToken) {
    result.set("Authorization", `Bearer ${bearerToken}`);
  }
  return result;
}

function requestJson<I extends DescMessage>(schema: I, init: MessageInitShape<I>): JsonObject {
  return toJson(schema, create(schema, init)) as JsonObject;
}

async function send(
  method: DescMethod,
  request: JsonObject,
  accept: string,
  signal: AbortSignal,
): Promise<Response> {
  const http = transcode(method, request);
  const init: RequestInit = { method: http.verb, headers: headers(accept), signal };
  if (http.body !== undefined) {
    init.body = http.body;
    (init.headers as Headers).set("Content-Type", "application/json");
  }
  let response: Response;
  try {
    response = await fetch(`.${http.url}`, init);
  } catch (cause) {
    if (signal.aborted) {
      throw cause;
    }
    throw networkError(cause);
  }
  if (!response.ok) {
    const text = await response.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    throw statusError(body, response.status);
  }
  return response;
}

/** Calls a unary RPC; throws ApiError with the server's status on failure. */
export async function call<I extends DescMessage, O extends DescMessage>(
  method: Unary<I, O>,
  init: MessageInitShape<I>,
): Promise<MessageShape<O>> {
  const signal = AbortSignal.timeout(CALL_TIMEOUT_MS);
  const response = await send(method, requestJson(method.input, init), "application/json", signal);
  return fromJson(method.output, (await response.json()) as JsonObject, { ignoreUnknownFields: true });
}

/**
 * Reads a server stream as server-sent events, handing each message to `onMessage` until the server ends
 * it (resolves), fails it (throws ApiError) or `signal` aborts it (resolves). `onOpen` runs once the
 * server has accepted the stream (its response has begun).
 */
export async function stream<I extends DescMessage, O extends DescMessage>(
  method: ServerStream<I, O>,
  init: MessageInitShape<I>,
  onMessage: (message: MessageShape<O>) => void,
  signal: AbortSignal,
  onOpen: () => void = () => undefined,
): Promise<void> {
  try {
    const response = await send(method, requestJson(method.input, init), "text/event-stream", signal);
    onOpen();
    if (response.body === null) {
      return;
    }
    for await (const event of readEvents(response.body, signal)) {
      const json: unknown = JSON.parse(event.data);
      if (event.type === "error") {
        throw statusError(json, 200);
      }
      onMessage(fromJson(method.output, json as JsonObject, { ignoreUnknownFields: true }));
    }
  } catch (error) {
    if (signal.aborted) {
      return;
    }
    if (error instanceof ApiError) {
      throw error;
    }
    throw networkError(error);
  }
}

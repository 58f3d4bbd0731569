// Everything of the client that runs wherever Connect does, browsers included: the service clients on any
// Connect transport, errors, retries, watches and helpers. `connect()` (Node's HTTP/2) is in index.ts.

export { createServiceClient } from "./service-client.js";
export type { CallSettings, ServiceClient } from "./service-client.js";
export { allPages } from "./pages.js";
export * from "./errors.js";
export { DEFAULT_RETRY_POLICY, NO_RETRY, callWithRetry, isRetryable } from "./retry.js";
export type { RetryPolicy } from "./retry.js";
export { WATCH_RESUME_POLICY, WatchPosition, resumableWatch } from "./watch.js";
export type { WatchOptions } from "./watch.js";
export * from "./time.js";
export { traceContext } from "./trace-context.js";
export type { ActiveContext, TracePropagation } from "./trace-context.js";
export { Code } from "@connectrpc/connect";

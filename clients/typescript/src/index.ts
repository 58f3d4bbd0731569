// The modelplane TypeScript client: `connect()`, the typed service clients, their errors and helpers.
// The generated messages, enums and services are under "@modelplane/client/gen/...".

export { connect, Connection, DEFAULT_TIMEOUT_MS, MAX_MESSAGE_BYTES } from "./connection.js";
export type { ConnectOptions, TlsOptions } from "./connection.js";
export { createServiceClient } from "./service-client.js";
export { allPages } from "./pages.js";
export type { CallSettings, ServiceClient } from "./service-client.js";
export * from "./errors.js";
export { DEFAULT_RETRY_POLICY, NO_RETRY, callWithRetry, isRetryable } from "./retry.js";
export type { RetryPolicy } from "./retry.js";
export { WATCH_RESUME_POLICY, WatchPosition, resumableWatch } from "./watch.js";
export type { WatchOptions } from "./watch.js";
export * from "./time.js";
export { Code } from "@connectrpc/connect";

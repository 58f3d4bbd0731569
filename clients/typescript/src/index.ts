// The modelplane TypeScript client for Node.js: `connect()`, the typed service clients, their errors and
// helpers. Browsers import "@modelplane/client/core" instead; the generated messages, enums and services are
// under "@modelplane/client/gen/...".

export { connect, Connection, DEFAULT_TIMEOUT_MS, MAX_MESSAGE_BYTES } from "./connection.js";
export type { ConnectOptions, TlsOptions } from "./connection.js";
export * from "./core.js";

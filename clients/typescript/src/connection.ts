// Connecting to a modelplane server: one HTTP/2 connection speaking gRPC (Connect's gRPC protocol, which a
// grpc.aio server understands), with the server's keepalive and size limits, and the four service clients.
//
// The bearer token travels as `authorization: Bearer <token>` on every call. Without TLS it is readable on
// the wire: use TLS beyond loopback.

import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { BalancingTransport } from "./balancing.js";
import { Health } from "./gen/grpc/health/v1/health_pb.js";
import { DeploymentService } from "./gen/modelplane/v1/deployments_pb.js";
import { GuardrailService } from "./gen/modelplane/v1/guardrails_pb.js";
import { LogService } from "./gen/modelplane/v1/logs_pb.js";
import { ModelRegistryService } from "./gen/modelplane/v1/registry_pb.js";
import { DEFAULT_RETRY_POLICY, checkRetryPolicy, type RetryPolicy } from "./retry.js";
import { createServiceClient, type CallSettings, type ServiceClient } from "./service-client.js";
import { WATCH_RESUME_POLICY } from "./watch.js";

/** Milliseconds a unary call may take, retries included, unless the caller says otherwise. */
export const DEFAULT_TIMEOUT_MS = 10_000;
// These match the server: it allows a keepalive ping every 30 s even with no call in flight, and it neither
// accepts nor sends messages above 4 MiB (model artifacts travel as URIs, never in messages).
export const KEEPALIVE_TIME_MS = 30_000;
export const KEEPALIVE_TIMEOUT_MS = 10_000;
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** TLS settings, PEM text or bytes. No root certificates means Node's bundled roots; a certificate chain and
 * a private key together make it mutual TLS; serverName overrides the name checked in the server's
 * certificate. */
export interface TlsOptions {
  rootCertificates?: string | Uint8Array;
  certificateChain?: string | Uint8Array;
  privateKey?: string | Uint8Array;
  serverName?: string;
}

export interface ConnectOptions {
  /** A bearer token (`modelplane token create`); none for a server run with --no-auth. */
  token?: string;
  /** true: TLS with Node's roots; TlsOptions: TLS with these settings; false (default): plaintext. */
  tls?: boolean | TlsOptions;
  /** Deadline of each unary call, retries included (default 10 s). */
  timeoutMs?: number;
  /** Retries of unary calls on UNAVAILABLE (NO_RETRY turns them off). */
  retry?: RetryPolicy;
  /** Reopenings of a broken watch (NO_RETRY turns resuming off). */
  watchRetry?: RetryPolicy;
  /** Headers sent with every call. */
  headers?: Readonly<Record<string, string>>;
  /** Connect interceptors, run on every call after the client's own. */
  interceptors?: Interceptor[];
  /** Spread calls round-robin over every replica of the target, healthy ones only: several addresses, or a
   * DNS name with a record per replica ("dns:///replicas.example:50051"), resolved again every 30 s. Given
   * several addresses, `connect` balances without being asked. */
  balance?: boolean;
}

/** One connection to a modelplane server and the clients of its services; close it when done. */
export class Connection {
  readonly registry: ServiceClient<typeof ModelRegistryService>;
  readonly deployments: ServiceClient<typeof DeploymentService>;
  readonly guardrails: ServiceClient<typeof GuardrailService>;
  readonly logs: ServiceClient<typeof LogService>;
  /** gRPC's health service (grpc.health.v1.Health): `check({})` is SERVING once the server can serve. */
  readonly health: ServiceClient<typeof Health>;

  constructor(
    private readonly closeTransport: () => void,
    transport: Transport,
    settings: CallSettings,
  ) {
    this.registry = createServiceClient(ModelRegistryService, transport, settings);
    this.deployments = createServiceClient(DeploymentService, transport, settings);
    this.guardrails = createServiceClient(GuardrailService, transport, settings);
    this.logs = createServiceClient(LogService, transport, settings);
    this.health = createServiceClient(Health, transport, settings);
  }

  /** Closes the connection; calls in flight fail with CANCELLED. */
  close(): void {
    this.closeTransport();
  }
}

function pem(value: string | Uint8Array | undefined): string | Buffer | undefined {
  return value === undefined || typeof value === "string" ? value : Buffer.from(value);
}

/** Opens a connection to the server at `target` ("host:port"), or to several replicas (see `balance`). */
export function connect(target: string | readonly string[], options: ConnectOptions = {}): Connection {
  const targets = typeof target === "string" ? [target] : target;
  const settings = {
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    retry: checkRetryPolicy(options.retry ?? DEFAULT_RETRY_POLICY),
    watchRetry: checkRetryPolicy(options.watchRetry ?? WATCH_RESUME_POLICY),
  };
  if (targets.length > 1 || options.balance === true) {
    const balancer = BalancingTransport.create(targets, (address) => {
      const { transport, sessions } = transportTo(address, options);
      return { transport, close: () => sessions.abort() };
    });
    return new Connection(() => balancer.close(), balancer, settings);
  }
  const { transport, sessions } = transportTo(targets[0] ?? "", options);
  return new Connection(() => sessions.abort(), transport, settings);
}

/** One HTTP/2 connection to `address` and the gRPC transport over it. */
function transportTo(address: string, options: ConnectOptions): { transport: Transport; sessions: Http2SessionManager } {
  const tls = options.tls === true ? {} : options.tls || undefined;
  const baseUrl = `${tls === undefined ? "http" : "https"}://${address}`;
  const nodeOptions =
    tls === undefined
      ? {}
      : {
          ca: pem(tls.rootCertificates),
          cert: pem(tls.certificateChain),
          key: pem(tls.privateKey),
          ...(tls.serverName === undefined ? {} : { servername: tls.serverName }),
        };
  if (tls !== undefined && (tls.certificateChain === undefined) !== (tls.privateKey === undefined)) {
    throw new TypeError("certificateChain and privateKey go together (mutual TLS) or not at all");
  }
  const sessions = new Http2SessionManager(
    baseUrl,
    { pingIntervalMs: KEEPALIVE_TIME_MS, pingTimeoutMs: KEEPALIVE_TIMEOUT_MS, pingIdleConnection: true },
    nodeOptions,
  );
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) {
    headers["authorization"] = `Bearer ${options.token}`;
  }
  const withHeaders: Interceptor = (next) => (request) => {
    for (const [key, value] of Object.entries(headers)) {
      request.header.set(key, value);
    }
    return next(request);
  };
  const transport = createGrpcTransport({
    baseUrl,
    sessionManager: sessions,
    interceptors: [withHeaders, ...(options.interceptors ?? [])],
    readMaxBytes: MAX_MESSAGE_BYTES,
    writeMaxBytes: MAX_MESSAGE_BYTES,
  });
  return { transport, sessions };
}

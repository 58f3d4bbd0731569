// The contract's plumbing as a user of the built npm package meets it (imported by the package's name, so
// from dist/ as installed): gRPC's health service; an error's ErrorInfo, BadRequest and RetryInfo decoded
// with the package's own generated google.rpc types; and x-request-id in the trailers of every call and in
// the headers of a stream's first response, read with Connect's onHeader/onTrailer.

import assert from "node:assert/strict";
import { createServer, connect as tcpConnect, type Server as TcpServer, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  connect,
  type Connection,
  InvalidArgument,
  ModelplaneError,
  NO_RETRY,
  NotFound,
  Unavailable,
} from "@modelplane/client";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "@modelplane/client/gen/google/rpc/error_details_pb";
import { HealthCheckResponse_ServingStatus } from "@modelplane/client/gen/grpc/health/v1/health_pb";
import { LogLevel } from "@modelplane/client/gen/modelplane/v1/logs_pb";
import { Server, freePort, throwAwayDatabase } from "./support/server.js";

const REQUEST_ID = "x-request-id";

/** The ModelplaneError `promise` rejects with. */
async function failure(promise: Promise<unknown>): Promise<ModelplaneError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  assert.ok(outcome instanceof ModelplaneError, `expected a ModelplaneError, got ${String(outcome)}`);
  return outcome;
}

/** A TCP proxy on loopback to `target` whose connections `cut()` ends, refusing new ones after it. */
class TcpProxy {
  private constructor(
    readonly port: number,
    private readonly listener: TcpServer,
    private readonly sockets: Set<Socket>,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    const port = await freePort();
    const sockets = new Set<Socket>();
    const listener = createServer((client) => {
      const upstream = tcpConnect(targetPort, "127.0.0.1");
      for (const socket of [client, upstream]) {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
        socket.on("error", () => socket.destroy());
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((listening) => listener.listen(port, "127.0.0.1", listening));
    return new TcpProxy(port, listener, sockets);
  }

  /** Ends every connection and refuses new ones: the database is gone, as far as the server can tell. */
  async cut(): Promise<void> {
    const closed = new Promise<void>((done) => this.listener.close(() => done()));
    for (const socket of this.sockets) {
      socket.destroy();
    }
    await closed;
  }
}

describe("the contract through the npm package", () => {
  let database: ReturnType<typeof throwAwayDatabase>;
  let server: Server;
  let conn: Connection;
  before(async () => {
    database = throwAwayDatabase();
    server = await Server.start(database.url, { auth: false });
    conn = connect(server.address);
  });
  after(async () => {
    conn.close();
    await server.stop();
    database.drop();
  });

  test("grpc.health.v1.Health answers SERVING: Watch, then Check", async () => {
    // The server may run several worker processes, each turning SERVING on its own; one connection reaches
    // one of them, so once its watch says SERVING, so does a check on the same connection.
    const statuses = [];
    for await (const reply of conn.health.watch({}, { timeoutMs: 30_000 })) {
      statuses.push(reply.status);
      if (reply.status === HealthCheckResponse_ServingStatus.SERVING) {
        break;
      }
    }
    assert.equal(statuses.at(-1), HealthCheckResponse_ServingStatus.SERVING);
    const reply = await conn.health.check({});
    assert.equal(reply.status, HealthCheckResponse_ServingStatus.SERVING);
  });

  test("an INVALID_ARGUMENT's ErrorInfo and BadRequest decode with the package's google.rpc types", async () => {
    const error = await failure(conn.registry.createModel({ modelId: "Bad_Id", model: { provider: "Not Valid!" } }));
    assert.ok(error instanceof InvalidArgument);
    const badRequest = error.detail(BadRequestSchema);
    assert.deepEqual(
      badRequest?.fieldViolations.map((v) => v.field),
      ["model_id", "model.provider"],
    );
    const info = error.detail(ErrorInfoSchema);
    assert.equal(info?.reason, "INVALID_FIELD");
    assert.equal(info?.domain, "modelplane");
  });

  test("x-request-id comes back in the trailers of a unary call (its headers arrive with them)", async () => {
    const seen: { header?: string | null; trailer?: string | null } = {};
    await conn.registry.createModel(
      { modelId: "headers-unary", model: { provider: "local" } },
      {
        headers: { [REQUEST_ID]: "ts-unary-1" },
        onHeader: (headers) => (seen.header = headers.get(REQUEST_ID)),
        onTrailer: (trailers) => (seen.trailer = trailers.get(REQUEST_ID)),
      },
    );
    assert.deepEqual(seen, { header: null, trailer: "ts-unary-1" });
  });

  test("x-request-id comes back in the headers and the trailers of a bidirectional stream", async () => {
    const seen: { header?: string | null; trailer?: string | null } = {};
    async function* requests() {
      const event = {
        eventId: "ts-stream-1",
        eventTime: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
        service: "ts",
        level: LogLevel.INFO,
        message: "hello",
      };
      yield { batch: { clientId: "ts-client", sequence: 1n, events: [event] } };
    }
    const acks = [];
    for await (const response of conn.logs.streamLogEvents(requests(), {
      headers: { [REQUEST_ID]: "ts-stream-1" },
      onHeader: (headers) => (seen.header = headers.get(REQUEST_ID)),
      onTrailer: (trailers) => (seen.trailer = trailers.get(REQUEST_ID)),
    })) {
      acks.push(response.ack?.sequence);
    }
    assert.deepEqual(acks, [1n]);
    assert.deepEqual(seen, { header: "ts-stream-1", trailer: "ts-stream-1" });
  });

  test("x-request-id comes back in the headers of a server stream's first message", async () => {
    let header: string | null = null;
    const controller = new AbortController();
    for await (const message of conn.registry.watchModels(
      {},
      {
        headers: { [REQUEST_ID]: "ts-watch-1" },
        onHeader: (headers) => (header = headers.get(REQUEST_ID)),
        signal: controller.signal,
      },
    )) {
      assert.equal(message.event.case, "progress");
      break;
    }
    assert.equal(header, "ts-watch-1");
  });

  test("a failed call carries its x-request-id (in the trailers: a call that fails before answering stays retryable)", async () => {
    const error = await failure(conn.registry.getModel({ name: "models/nope" }, { headers: { [REQUEST_ID]: "ts-fail-1" } }));
    assert.ok(error instanceof NotFound);
    assert.equal(error.requestId, "ts-fail-1");
  });
});

describe("an UNAVAILABLE through the npm package", () => {
  test("carries RetryInfo, decoded with the package's google.rpc types", async () => {
    const database = throwAwayDatabase();
    const url = new URL(database.url);
    const proxy = await TcpProxy.start(Number(url.port || "5432"));
    url.port = String(proxy.port);
    const server = await Server.start(url.toString(), { auth: false });
    const conn = connect(server.address, { retry: NO_RETRY });
    try {
      await conn.registry.createModel({ modelId: "before-the-cut", model: { provider: "local" } });
      await proxy.cut();
      // A write: it needs the database whatever this replica has cached.
      const error = await failure(conn.registry.createModel({ modelId: "after-the-cut", model: { provider: "local" } }));
      assert.ok(error instanceof Unavailable, `${error.code} ${error.message}`);
      assert.equal(error.detail(ErrorInfoSchema)?.reason, "STORAGE_UNAVAILABLE");
      const retry = error.detail(RetryInfoSchema);
      assert.ok(retry?.retryDelay !== undefined, "RetryInfo with a delay");
      assert.ok(error.retryAfterMs !== undefined && error.retryAfterMs > 0);
    } finally {
      conn.close();
      await server.stop();
      database.drop();
    }
  });
});

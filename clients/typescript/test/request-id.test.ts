// x-request-id comes back in the response headers (with the first response) and in the trailers, for unary
// and streaming calls, as the npm package's users see them through Connect's onHeader and onTrailer.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { connect, type Connection, ModelplaneError, NotFound } from "@modelplane/client";
import { LogLevel } from "@modelplane/client/gen/modelplane/v1/logs_pb";
import { Server, throwAwayDatabase } from "./support/server.js";

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

describe("x-request-id", () => {
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

  test("x-request-id comes back in the headers and the trailers of a unary call", async () => {
    const seen: { header?: string | null; trailer?: string | null } = {};
    await conn.registry.createModel(
      { modelId: "headers-unary", model: { provider: "local" } },
      {
        headers: { [REQUEST_ID]: "ts-unary-1" },
        onHeader: (headers) => (seen.header = headers.get(REQUEST_ID)),
        onTrailer: (trailers) => (seen.trailer = trailers.get(REQUEST_ID)),
      },
    );
    assert.deepEqual(seen, { header: "ts-unary-1", trailer: "ts-unary-1" });
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

// A watch across a server restart: SIGTERM ends the stream with UNAVAILABLE (SHUTTING_DOWN, RetryInfo); a
// watch told not to resume throws that error, a resuming one reopens where it stopped, no gap, no repeat.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, connect, NO_RETRY, ShuttingDown, Unavailable } from "../src/index.js";
import type { WatchModelsResponse } from "../src/gen/modelplane/v1/registry_pb.js";
import { freePort, Server, throwAwayDatabase } from "./support/server.js";

let database: ReturnType<typeof throwAwayDatabase>;
let address: string;

before(async () => {
  database = throwAwayDatabase();
  address = `127.0.0.1:${await freePort()}`;
});

after(() => {
  database?.drop();
});

/** The resources of the changes in `messages`. */
function resources(messages: WatchModelsResponse[]): string[] {
  return messages.flatMap((m) => (m.event.case === "change" ? [m.event.value.resource] : []));
}

describe("watch across a restart", () => {
  test("without resuming, the watch ends with UNAVAILABLE carrying SHUTTING_DOWN and RetryInfo", async () => {
    const server = await Server.start(database.url, { auth: false, address });
    const conn = connect(address, { watchRetry: NO_RETRY });
    try {
      await conn.registry.createModel({ modelId: "before-stop", model: { provider: "openai" } });
      const watch = conn.registry.watchModels({ startRevision: 1n })[Symbol.asyncIterator]();
      const first = await watch.next();
      assert.equal(first.done, false);
      assert.ok(await server.stop() === 0, "the server stops cleanly");
      const error = await (async () => {
        for (let next = await watch.next(); !next.done; next = await watch.next()) {
          // Progress marks may come before the end.
        }
      })().catch((e: unknown) => e);
      assert.ok(error instanceof ShuttingDown, `got ${String(error)}`);
      assert.ok(error instanceof Unavailable);
      assert.equal(error.code, Code.Unavailable);
      assert.equal(error.reason, "SHUTTING_DOWN");
      assert.ok(error.retryAfterMs !== undefined && error.retryAfterMs > 0, "RetryInfo's delay");
    } finally {
      conn.close();
      await server.stop();
    }
  });

  test("a resuming watch reopens after the restart: the next change arrives, none repeats", async () => {
    let server = await Server.start(database.url, { auth: false, address });
    const conn = connect(address);
    const seen: WatchModelsResponse[] = [];
    try {
      await conn.registry.createModel({ modelId: "first", model: { provider: "openai" } });
      const watch = conn.registry.watchModels({ startRevision: 1n })[Symbol.asyncIterator]();
      // Everything up to the model "first", whose creation is the last change so far.
      while (!resources(seen).includes("models/first")) {
        const next = await watch.next();
        assert.equal(next.done, false);
        seen.push(next.value as WatchModelsResponse);
      }
      const pending = watch.next();
      await server.stop();
      server = await Server.start(database.url, { auth: false, address });
      await conn.registry.createModel({ modelId: "second", model: { provider: "openai" } });
      let next = await pending;
      for (;;) {
        assert.equal(next.done, false);
        seen.push(next.value as WatchModelsResponse);
        if (resources(seen).includes("models/second")) {
          break;
        }
        next = await watch.next();
      }
      await watch.return?.();
      // The database's changes in order, each once: the model of the test before, then this test's two.
      assert.deepEqual(resources(seen), ["models/before-stop", "models/first", "models/second"]);
    } finally {
      conn.close();
      await server.stop();
    }
  });
});

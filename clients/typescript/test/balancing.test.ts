// Client-side balancing from Node: a DNS name with two A records (from a DNS server of the test's own, named in
// the target) reaches two replicas; calls spread over both, and go on when one is killed. Which replica served
// each call is read from each server's Prometheus endpoint.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { connect, type Connection } from "@modelplane/client";
import { DnsServer } from "./support/dns.js";
import { Server, freePort, throwAwayDatabase } from "./support/server.js";

const NAME = "replicas.modelplane.test";
// Calls of each round; bounded, each with the client's deadline.
const CALLS = 40;

/** GetModel calls that ended OK on the server whose metrics listen at `address`. */
async function servedGetModel(address: string): Promise<number> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("grpc_server_handled_total{") && line.includes('grpc_method="GetModel"') && line.includes('grpc_code="OK"')) {
      total += Number(line.split(" ").at(-1));
    }
  }
  return total;
}

describe("client-side balancing over a DNS name", () => {
  let database: ReturnType<typeof throwAwayDatabase>;
  let dns: DnsServer;
  const servers: Server[] = [];
  const metrics: string[] = [];
  let conn: Connection;
  before(async () => {
    database = throwAwayDatabase();
    const port = await freePort();
    for (const host of ["127.0.0.1", "127.0.0.2"]) {
      const metricsAddress = `127.0.0.1:${await freePort()}`;
      metrics.push(metricsAddress);
      servers.push(await Server.start(database.url, { auth: false, address: `${host}:${port}`, metricsAddress }));
    }
    dns = await DnsServer.start(NAME, ["127.0.0.1", "127.0.0.2"]);
    conn = connect(`dns://127.0.0.1:${dns.port}/${NAME}:${port}`, { balance: true });
  });
  after(async () => {
    conn.close();
    dns.close();
    for (const server of servers) {
      await server.stop();
    }
    database.drop();
  });

  test("spreads calls over both replicas, and goes on when one is killed", async () => {
    await conn.registry.createModel({ modelId: "spread", model: { provider: "local" } });
    // A replica gets calls once its health watch has said SERVING; until both have, calls go to the one that
    // has. Calls until each replica has served one (bounded), then the spread is measured from there.
    const warmUpEnd = Date.now() + 10_000;
    let served = await Promise.all(metrics.map(servedGetModel));
    while (served.some((n) => n === 0) && Date.now() < warmUpEnd) {
      await conn.registry.getModel({ name: "models/spread" });
      served = await Promise.all(metrics.map(servedGetModel));
    }
    for (let i = 0; i < CALLS; i++) {
      await conn.registry.getModel({ name: "models/spread" });
    }
    const now = await Promise.all(metrics.map(servedGetModel));
    const [first, second] = now.map((n, i) => n - (served[i] ?? 0));
    assert.equal((first ?? 0) + (second ?? 0), CALLS);
    assert.ok((first ?? 0) >= CALLS / 4 && (second ?? 0) >= CALLS / 4, `served ${first} and ${second}`);

    await servers[1]?.kill();
    const before = await servedGetModel(metrics[0] ?? "");
    for (let i = 0; i < CALLS; i++) {
      const model = await conn.registry.getModel({ name: "models/spread" });
      assert.equal(model.model?.name, "models/spread");
    }
    assert.equal((await servedGetModel(metrics[0] ?? "")) - before, CALLS);
  });
});

// TLS: a server with a certificate and auth on answers a client that trusts the certificate and sends a
// token; a client that does not trust it never reaches the server.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { connect, ModelplaneError } from "../src/index.js";
import { createToken, HAS_OPENSSL, selfSignedCertificate, Server, throwAwayDatabase } from "./support/server.js";

describe("TLS", { skip: HAS_OPENSSL ? false : "needs the openssl tool to make a certificate" }, () => {
  let database: ReturnType<typeof throwAwayDatabase>;
  let server: Server;
  let certificate: { certFile: string; keyFile: string };

  before(async () => {
    database = throwAwayDatabase();
    certificate = selfSignedCertificate();
    server = await Server.start(database.url, { auth: true, tls: certificate });
  });

  after(async () => {
    await server?.stop();
    database?.drop();
  });

  test("a client trusting the certificate, with a token, is answered", async () => {
    const token = createToken(database.url, "operator", "ts-tls");
    const conn = connect(server.address, { token, tls: { rootCertificates: readFileSync(certificate.certFile) } });
    try {
      const created = await conn.registry.createModel({ modelId: "over-tls", model: { provider: "openai" } });
      assert.equal(created.model?.name, "models/over-tls");
    } finally {
      conn.close();
    }
  });

  test("a client with Node's default roots refuses the self-signed certificate", async () => {
    const conn = connect(server.address, { tls: true });
    try {
      const refused = await conn.registry.listModels({}).catch((e: unknown) => e);
      // Connect reports a failed TLS handshake as INTERNAL, with the reason in the message; never retried.
      assert.ok(refused instanceof ModelplaneError, `got ${String(refused)}`);
      assert.match(refused.message, /self-signed certificate/);
    } finally {
      conn.close();
    }
  });
});

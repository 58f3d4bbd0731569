// TLS: a server with a certificate and auth on answers a client that trusts the certificate and sends a
// token; a client that does not trust it never reaches the server.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { connect, ModelplaneError } from "../src/index.js";
import { createToken, HAS_OPENSSL, liveServer, selfSignedCertificate } from "./support/server.js";

describe("TLS", { skip: HAS_OPENSSL ? false : "needs the openssl tool to make a certificate" }, () => {
  const certificate = selfSignedCertificate();
  const live = liveServer({ auth: true, tls: certificate });

  test("a client trusting the certificate, with a token, is answered", async () => {
    const token = createToken(live.databaseUrl, "operator", "ts-tls");
    const conn = connect(live.server.address, { token, tls: { rootCertificates: readFileSync(certificate.certFile) } });
    try {
      const created = await conn.registry.createModel({ modelId: "over-tls", model: { provider: "openai" } });
      assert.equal(created.model?.name, "models/over-tls");
    } finally {
      conn.close();
    }
  });

  test("a client with Node's default roots refuses the self-signed certificate", async () => {
    const conn = connect(live.server.address, { tls: true });
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

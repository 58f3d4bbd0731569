// traceContext: a call made in a traced context carries its traceparent, and the server's span of the call
// (a real `modelplane serve`, tracing to the console as OTEL_TRACES_EXPORTER says) is a child of it.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Interceptor } from "@connectrpc/connect";
import { connect, ModelNotFound, traceContext, type ActiveContext, type TracePropagation } from "../src/index.js";
import { liveServer } from "./support/server.js";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID = "00f067aa0ba902b7";

// What OpenTelemetry's API does with a context whose span is TRACE_ID/SPAN_ID, without the dependency.
const active: ActiveContext = { active: () => "the caller's context" };
const propagation: TracePropagation = {
  inject(context, carrier) {
    if (context === "the caller's context") {
      carrier["traceparent"] = `00-${TRACE_ID}-${SPAN_ID}-01`;
    }
  },
};

const live = liveServer({
  auth: false,
  env: { OTEL_TRACES_EXPORTER: "console", OTEL_BSP_SCHEDULE_DELAY: "50", OTEL_SERVICE_NAME: "modelplane-ts-test" },
});

// Records the headers each call goes out with (it runs after traceContext).
function recorder(seen: Headers[]): Interceptor {
  return (next) => (request) => {
    seen.push(new Headers(request.header));
    return next(request);
  };
}

async function until(condition: () => boolean, limitMs: number): Promise<void> {
  const end = Date.now() + limitMs;
  while (!condition() && Date.now() < end) {
    await new Promise((done) => setTimeout(done, 50));
  }
}

describe("trace context", () => {
  test("the server's span of a call continues the caller's trace", async () => {
    const seen: Headers[] = [];
    const conn = connect(live.server.address, { interceptors: [traceContext(propagation, active), recorder(seen)] });
    try {
      await assert.rejects(conn.registry.getModel({ name: "models/traced" }), ModelNotFound);
    } finally {
      conn.close();
    }
    assert.equal(seen[0]?.get("traceparent"), `00-${TRACE_ID}-${SPAN_ID}-01`);
    const parent = `"parent_id": "0x${SPAN_ID}"`;
    await until(() => live.server.output.includes(parent), 10_000);
    const output = live.server.output;
    assert.ok(output.includes(`"trace_id": "0x${TRACE_ID}"`), output);
    assert.ok(output.includes(parent), output);
    assert.ok(output.includes(`"name": "/modelplane.v1.ModelRegistryService/GetModel"`), output);
  });

  test("with nothing to propagate, nothing is added", async () => {
    const idle: ActiveContext = { active: () => undefined };
    const seen: Headers[] = [];
    const conn = connect(live.server.address, { interceptors: [traceContext(propagation, idle), recorder(seen)] });
    try {
      await assert.rejects(conn.registry.getModel({ name: "models/untraced" }), ModelNotFound);
    } finally {
      conn.close();
    }
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.get("traceparent"), null);
  });
});

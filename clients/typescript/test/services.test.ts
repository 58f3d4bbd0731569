// Deployments, guardrails and logs through the TypeScript client against a real server: a call to each
// service, a server stream of each kind (WatchDeployment, TailLogEvents) and both bidirectional streams
// (CheckStream, StreamLogEvents) over gRPC on HTTP/2.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { Code, DeploymentNotFound, durationFromMs, int64, NotFound, PolicyNotFound, timestampFromDate } from "../src/index.js";
import { Capability, ChangeKind } from "../src/gen/modelplane/v1/registry_pb.js";
import { TrafficSlot } from "../src/gen/modelplane/v1/common_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Decision,
  FailMode,
  PiiKind,
  Severity,
  type CheckStreamRequestSchema,
  type CheckStreamResponse,
} from "../src/gen/modelplane/v1/guardrails_pb.js";
import {
  InferenceStatus,
  LogLevel,
  type LogEvent,
  type LogEventSchema,
  type StreamLogEventsRequestSchema,
  type StreamLogEventsResponse,
} from "../src/gen/modelplane/v1/logs_pb.js";
import { liveServer } from "./support/server.js";

const live = liveServer({ auth: false }, async (conn) => {
  await conn.registry.createModel({ modelId: "chat-large", model: { provider: "openai" } });
  for (const snapshot of ["a", "b"]) {
    await conn.registry.createModelVersion({
      parent: "models/chat-large",
      modelVersion: {
        sourceUri: `openai:snapshot-${snapshot}`,
        capabilities: [Capability.CHAT],
        contextWindow: 128_000n,
        maxOutputTokens: 16_384n,
        pricing: { currencyCode: "USD", inputMicrosPerMillion: 2_500_000n, outputMicrosPerMillion: 10_000_000n },
      },
    });
  }
});

/** Yields `messages`, then stays open until `done` resolves, so the server decides when the stream ends. */
async function* sending<T>(messages: T[], done: Promise<unknown>): AsyncGenerator<T> {
  yield* messages;
  await done;
}

function inferenceEvent(eventId: string, service: string): MessageInitShape<typeof LogEventSchema> {
  return {
    eventId,
    eventTime: timestampFromDate(new Date()),
    service,
    level: LogLevel.INFO,
    message: "chat call",
    payload: {
      case: "inference",
      value: {
        provider: "openai",
        modelVersion: "models/chat-large/versions/1",
        inputTokens: 1200n,
        outputTokens: 300n,
        latency: durationFromMs(840),
        status: InferenceStatus.OK,
      },
    },
  };
}

describe("deployment service", () => {
  test("creates a deployment, routes a key to it, and WatchDeployment streams its change", async () => {
    const created = await live.conn.deployments.createDeployment({
      deploymentId: "chat-prod",
      deployment: {
        environment: "prod",
        model: "models/chat-large",
        traffic: {
          stable: { modelVersion: "models/chat-large/versions/1", endpoints: [{ address: "10.0.0.1:8000" }] },
        },
      },
    });
    assert.equal(created.deployment?.traffic?.stable?.weightBp, 10_000);
    const route = await live.conn.deployments.resolveRoute({ deployment: "deployments/chat-prod", routingKey: "user-42" });
    assert.equal(route.slot, TrafficSlot.STABLE);
    assert.equal(route.endpoint?.address, "10.0.0.1:8000");

    const controller = new AbortController();
    const watch = live.conn.deployments.watchDeployment(
      { deployment: "deployments/chat-prod", startRevision: 1n },
      { signal: controller.signal },
    );
    for await (const message of watch) {
      assert.equal(message.event.case, "change");
      assert.equal(message.event.value.kind, ChangeKind.CREATED);
      assert.equal(message.event.value.deployment?.traffic?.stable?.modelVersion, "models/chat-large/versions/1");
      break;
    }
  });

  test("an unknown deployment is DeploymentNotFound's reason on a NOT_FOUND", async () => {
    const error = await live.conn.deployments.getDeployment({ name: "deployments/nope" }).catch((e: unknown) => e);
    assert.ok(error instanceof DeploymentNotFound);
    assert.ok(error instanceof NotFound);
  });
});

describe("guardrail service", () => {
  before(async () => {
    await live.conn.guardrails.createPolicy({
      policyId: "kids-stories",
      policy: {
        failMode: FailMode.CLOSED,
        defaultFallback: "This story is not available.",
        fallbackContent: { violence: "The knight and the dragon became friends." },
        rules: [
          { id: "cards", severity: Severity.ERROR, category: "pii", kind: { case: "pii", value: { kinds: [PiiKind.PAYMENT_CARD] } } },
          { id: "violence", severity: Severity.CRITICAL, category: "violence", kind: { case: "bannedTerms", value: { terms: ["kill", "stab"] } } },
        ],
      },
    });
  });

  test("CheckContent redacts a card number", async () => {
    const { verdict } = await live.conn.guardrails.checkContent({
      policy: "policies/kids-stories",
      text: "Pay with 4111 1111 1111 1111 today.",
    });
    assert.equal(verdict?.decision, Decision.REDACT);
    assert.equal(verdict?.redactedText, "Pay with [REDACTED:pii] today.");
  });

  test("CheckStream (bidirectional) finds a banned term split across chunks and closes with a final verdict", async () => {
    let finished!: () => void;
    const done = new Promise<void>((resolve) => (finished = resolve));
    const requests: MessageInitShape<typeof CheckStreamRequestSchema>[] = [
      { event: { case: "start", value: { policy: "policies/kids-stories" } } },
      { event: { case: "chunk", value: "And then the knight will ki" } },
      { event: { case: "chunk", value: "ll the dragon." } },
      { event: { case: "end", value: {} } },
    ];
    const responses: CheckStreamResponse[] = [];
    for await (const response of live.conn.guardrails.checkStream(sending(requests, done))) {
      responses.push(response);
    }
    finished();
    const verdicts = responses.flatMap((r) => (r.event.case === "verdict" ? [r.event.value] : []));
    const last = verdicts.at(-1);
    assert.ok(last?.final, "a final verdict closes the stream");
    assert.equal(last.decision, Decision.BLOCK);
    assert.equal(last.fallbackContent, "The knight and the dragon became friends.");
    assert.deepEqual(
      last.violations.map((v) => v.ruleId),
      ["violence"],
    );
  });

  test("a stream's failure is a ModelplaneError too: CheckStream on an unknown policy", async () => {
    const requests: MessageInitShape<typeof CheckStreamRequestSchema>[] = [
      { event: { case: "start", value: { policy: "policies/nope" } } },
      { event: { case: "chunk", value: "text" } },
      { event: { case: "end", value: {} } },
    ];
    const failure = await (async () => {
      for await (const _ of live.conn.guardrails.checkStream(sending(requests, Promise.resolve()))) {
        // Nothing is expected before the error.
      }
    })().catch((e: unknown) => e);
    assert.ok(failure instanceof PolicyNotFound, `got ${String(failure)}`);
    assert.equal(failure.code, Code.NotFound);
    assert.equal(failure.reason, "POLICY_NOT_FOUND");
  });
});

describe("log service", () => {
  test("WriteLogEvents acknowledges a batch; QueryLogEvents finds it; GetIngestionStats counts it", async () => {
    const { ack } = await live.conn.logs.writeLogEvents({
      batch: { clientId: "ts-unary", sequence: 1n, events: [inferenceEvent("ts-unary-1", "ts-unary")] },
    });
    assert.equal(ack?.accepted, 1n);
    const found = await live.conn.logs.queryLogEvents({ filter: 'service = "ts-unary" AND kind = INFERENCE' });
    assert.deepEqual(
      found.events.map((e: LogEvent) => e.eventId),
      ["ts-unary-1"],
    );
    const stats = await live.conn.logs.getIngestionStats({});
    const client = stats.clients.find((c) => c.clientId === "ts-unary");
    assert.equal(client?.accepted, 1n);
  });

  test("StreamLogEvents (bidirectional) acknowledges each batch after commit", async () => {
    let finished!: () => void;
    const done = new Promise<void>((resolve) => (finished = resolve));
    const batches: MessageInitShape<typeof StreamLogEventsRequestSchema>[] = [1, 2, 3].map((sequence) => ({
      batch: { clientId: "ts-stream", sequence: int64(sequence), events: [inferenceEvent(`ts-stream-${sequence}`, "ts-stream")] },
    }));
    const acks: StreamLogEventsResponse[] = [];
    for await (const response of live.conn.logs.streamLogEvents(sending(batches, done))) {
      acks.push(response);
      if (response.ack?.sequence === 3n) {
        finished();
      }
    }
    assert.equal(acks.at(-1)?.ack?.sequence, 3n);
    assert.equal(
      acks.reduce((sum, a) => sum + (a.ack?.accepted ?? 0n), 0n),
      3n,
    );
  });

  test("TailLogEvents (server streaming) sends events committed after it opened", async () => {
    const controller = new AbortController();
    const tail = live.conn.logs.tailLogEvents({ filter: 'service = "ts-tail"' }, { signal: controller.signal });
    const iterator = tail[Symbol.asyncIterator]();
    const first = iterator.next();
    // The tail begins "from now", which it does not announce: write until one event arrives.
    let sequence = 0n;
    let received: IteratorResult<unknown> | undefined;
    while (received === undefined) {
      sequence += 1n;
      await live.conn.logs.writeLogEvents({
        batch: { clientId: "ts-tail", sequence, events: [inferenceEvent(`ts-tail-${sequence}`, "ts-tail")] },
      });
      received = await Promise.race([first, new Promise<undefined>((resolve) => setTimeout(resolve, 200))]);
    }
    controller.abort();
    const message = (received as IteratorResult<{ events: LogEvent[] }>).value;
    assert.ok(message.events.length >= 1);
    assert.ok(message.events.every((e: LogEvent) => e.service === "ts-tail"));
  });
});

// The registry through the TypeScript client against a real server: typed calls, request ids, the
// compare-and-set race, error decoding (ErrorInfo, BadRequest, ResolveModelFailure) and the watch stream.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  Aborted,
  AliasConflict,
  AlreadyExists,
  ModelAlreadyExists,
  ModelNotFound,
  NoMatchingModel,
  allPages,
  Code,
  connect,
  InvalidArgument,
  ModelplaneError,
  NotFound,
  int64,
  timestampDate,
} from "../src/index.js";
import {
  Capability,
  ModelVersionState,
  ResolveModelFailureSchema,
  type WatchModelsResponse,
} from "../src/gen/modelplane/v1/registry_pb.js";
import { ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { liveServer } from "./support/server.js";

const live = liveServer({ auth: false });

/** The ModelplaneError `promise` rejects with. */
async function failure(promise: Promise<unknown>): Promise<ModelplaneError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  assert.ok(outcome instanceof ModelplaneError, `expected a ModelplaneError, got ${String(outcome)}`);
  return outcome;
}

async function newVersion(model: string, contextWindow = 128_000): Promise<string> {
  const version = await live.conn.registry.createModelVersion({
    parent: model,
    modelVersion: {
      sourceUri: `openai:snapshot-${contextWindow}-${Math.random()}`,
      capabilities: [Capability.CHAT, Capability.TOOL_USE],
      contextWindow: int64(contextWindow),
      maxOutputTokens: int64(Math.min(16_384, contextWindow)),
      pricing: { currencyCode: "USD", inputMicrosPerMillion: int64("2500000"), outputMicrosPerMillion: 10_000_000n },
    },
  });
  return version.modelVersion?.name ?? assert.fail("no version in the response");
}

describe("model registry", () => {
  test("creates, reads and lists with typed messages: int64 as bigint, enums by name, times as Date", async () => {
    const created = await live.conn.registry.createModel({
      modelId: "chat-large",
      model: { provider: "openai", displayName: "Chat large", labels: { team: "assistants" } },
    });
    assert.equal(created.model?.name, "models/chat-large");
    const name = await newVersion("models/chat-large");
    const version = (await live.conn.registry.getModelVersion({ name })).modelVersion;
    assert.equal(version?.versionId, 1n);
    assert.equal(version?.state, ModelVersionState.READY);
    assert.deepEqual(version?.capabilities, [Capability.CHAT, Capability.TOOL_USE]);
    assert.equal(version?.pricing?.outputMicrosPerMillion, 10_000_000n);
    assert.ok(version?.createTime !== undefined && timestampDate(version.createTime) instanceof Date);
    const listed = await live.conn.registry.listModels({ pageSize: 10 });
    assert.deepEqual(
      listed.models.map((m) => m.name),
      ["models/chat-large"],
    );
  });

  test("allPages follows next_page_token through every page", async () => {
    for (const id of ["paged-a", "paged-b", "paged-c"]) {
      await live.conn.registry.createModel({ modelId: id, model: { provider: "openai" } });
    }
    const pageSizes: number[] = [];
    const names: string[] = [];
    const models = allPages(
      async (pageToken) => {
        const page = await live.conn.registry.listModels({ filter: 'provider = "openai"', pageSize: 2, pageToken });
        pageSizes.push(page.models.length);
        return page;
      },
      (page) => page.models,
    );
    for await (const model of models) {
      names.push(model.name);
    }
    assert.ok(pageSizes.length >= 2, `pages of ${pageSizes.join(", ")}`);
    assert.ok(pageSizes.every((size) => size <= 2));
    assert.deepEqual(new Set(names).size, names.length);
    assert.ok(["models/paged-a", "models/paged-b", "models/paged-c"].every((n) => names.includes(n)));
  });

  test("a mutation gets a request id: the same id again returns the first answer and runs nothing twice", async () => {
    const requestId = globalThis.crypto.randomUUID();
    const first = await live.conn.registry.createModel({ modelId: "idempotent", model: { provider: "x" }, requestId });
    const again = await live.conn.registry.createModel({ modelId: "idempotent", model: { provider: "x" }, requestId });
    assert.equal(again.model?.etag, first.model?.etag);
    // Without an id the client makes one per call, so a second create is a second request.
    const error = await failure(live.conn.registry.createModel({ modelId: "idempotent", model: { provider: "x" } }));
    assert.ok(error instanceof ModelAlreadyExists);
    assert.ok(error instanceof AlreadyExists, "a reason class is a subclass of its code's class");
    assert.equal(error.reason, "MODEL_ALREADY_EXISTS");
  });

  test("a retried mutation keeps its generated request id: the server runs it once", async () => {
    // The first attempt is refused before it leaves the client, as a lost connection would be.
    const sent: string[] = [];
    const flaky: Interceptor = (next) => async (request) => {
      const message = request.message as { requestId?: string };
      sent.push(message.requestId ?? "");
      if (sent.length === 1) {
        throw new ConnectError("connection lost", Code.Unavailable);
      }
      return next(request);
    };
    const conn = connect(live.server.address, { interceptors: [flaky] });
    try {
      const created = await conn.registry.createModel({ modelId: "retried", model: { provider: "openai" } });
      assert.equal(created.model?.name, "models/retried");
    } finally {
      conn.close();
    }
    assert.equal(sent.length, 2);
    assert.match(sent[0] ?? "", /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(sent[1], sent[0]);
  });

  test("two SetAlias with the same expected_version at once: exactly one wins, the other is ALIAS_CONFLICT", async () => {
    await live.conn.registry.createModel({ modelId: "race", model: { provider: "openai" } });
    const [v1, v2, v3] = [await newVersion("models/race"), await newVersion("models/race"), await newVersion("models/race")];
    const alias = "models/race/aliases/prod";
    await live.conn.registry.setAlias({ name: alias, version: v1, expectedVersion: "" });
    const results = await Promise.allSettled([
      live.conn.registry.setAlias({ name: alias, version: v2, expectedVersion: v1 }),
      live.conn.registry.setAlias({ name: alias, version: v3, expectedVersion: v1 }),
    ]);
    const winners = results.filter((r) => r.status === "fulfilled");
    const losers = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    assert.equal(winners.length, 1);
    assert.equal(losers.length, 1);
    const loser = losers[0];
    assert.ok(loser instanceof AliasConflict, `expected AliasConflict, got ${String(loser)}`);
    assert.ok(loser instanceof Aborted);
    assert.equal(loser.code, Code.Aborted);
    assert.equal(loser.reason, "ALIAS_CONFLICT");
    assert.equal(loser.domain, "modelplane");
    const now = await live.conn.registry.getAlias({ name: alias });
    const winner = winners[0];
    assert.ok(winner?.status === "fulfilled");
    assert.equal(now.alias?.version, winner.value.alias?.version);
    const history = await live.conn.registry.listAliasHistory({ parent: "models/race" });
    assert.equal(history.moves.length, 2);
  });

  test("NOT_FOUND decodes ErrorInfo: reason, domain, metadata and the request id", async () => {
    const error = await failure(live.conn.registry.getModel({ name: "models/nope" }));
    assert.ok(error instanceof ModelNotFound);
    assert.ok(error instanceof NotFound);
    assert.equal(error.codeName, "NOT_FOUND");
    assert.equal(error.reason, "MODEL_NOT_FOUND");
    assert.ok(error.requestId, "the server's x-request-id");
    const info = error.detail(ErrorInfoSchema);
    assert.equal(info?.reason, "MODEL_NOT_FOUND");
    assert.deepEqual(error.metadata, info?.metadata);
  });

  test("INVALID_ARGUMENT decodes BadRequest's field violations", async () => {
    const error = await failure(live.conn.registry.createModel({ modelId: "Not An Id!", model: { provider: "openai" } }));
    assert.ok(error instanceof InvalidArgument);
    assert.ok(error.reason.length > 0);
    assert.deepEqual(
      error.fieldViolations.map((v) => v.field),
      ["model_id"],
    );
    assert.ok(error.fieldViolations[0]?.description);
  });

  test("a failed resolution decodes ResolveModelFailure: each candidate's first failed constraint", async () => {
    await live.conn.registry.createModel({ modelId: "small", model: { provider: "openai" } });
    const name = await newVersion("models/small", 8_000);
    const error = await failure(
      live.conn.registry.resolveModel({
        selector: { case: "constraints", value: { model: "models/small", minContextWindow: 1_000_000n } },
      }),
    );
    assert.ok(error instanceof NoMatchingModel);
    assert.equal(error.reason, "NO_MATCHING_MODEL");
    const resolution = error.detail(ResolveModelFailureSchema);
    assert.ok(resolution !== undefined, "a ResolveModelFailure detail");
    assert.equal(resolution.candidateCount, 1n);
    assert.deepEqual(
      resolution.rejections.map((r) => [r.modelVersion, r.constraint]),
      [[name, "constraints.min_context_window"]],
    );
  });

  test("WatchModels streams changes in revision order from an inclusive start_revision", async () => {
    const controller = new AbortController();
    const seen: WatchModelsResponse[] = [];
    for await (const message of live.conn.registry.watchModels({ startRevision: 1n }, { signal: controller.signal })) {
      seen.push(message);
      if (message.event.case === "progress") {
        break;
      }
    }
    const changes = seen.flatMap((m) => (m.event.case === "change" ? [m.event.value] : []));
    assert.equal(changes[0]?.revision, 1n);
    assert.equal(changes[0]?.resource, "models/chat-large");
    const revisions = changes.map((c) => c.revision);
    assert.deepEqual(revisions, [...revisions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    assert.equal(seen.at(-1)?.event.case, "progress");
  });
});

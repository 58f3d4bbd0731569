// Models: every version with its capabilities, context window and prices, searched with the filter
// language; each model's aliases and who moved them, when and why; and "which model would I get".
import { Code } from "@gen/google/rpc/code_pb.js";
import {
  Capability,
  ModelVersionState,
  ResolveModelFailureSchema,
  type ModelConstraintsSchema,
  type ModelVersion,
  type ResolveModelRequestSchema,
} from "@gen/modelplane/v1/registry_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { call } from "../api/client";
import { ModelRegistryService } from "../api/services";
import { ApiError } from "../api/status";
import { field, h, replace, section, table } from "../ui/dom";
import { errorBox, filterErrorBox } from "../ui/errors";
import { enumLabel, formatCount, formatMicros, formatTime } from "../ui/format";
import type { Page } from "./page";

const CAPABILITIES = Object.values(Capability).filter(
  (value): value is Capability => typeof value === "number" && value !== Capability.UNSPECIFIED,
);

function versionRow(version: ModelVersion): (Node | string)[] {
  const pricing = version.pricing;
  const currency = pricing?.currencyCode ?? "";
  return [
    h("code", {}, version.name),
    version.provider,
    enumLabel(ModelVersionState, version.state),
    version.capabilities.map((capability) => enumLabel(Capability, capability)).join(", ") || "—",
    formatCount(version.contextWindow),
    formatCount(version.maxOutputTokens),
    pricing ? formatMicros(pricing.inputMicrosPerMillion, currency) : "—",
    pricing ? formatMicros(pricing.outputMicrosPerMillion, currency) : "—",
    version.aliases.join(", ") || "—",
  ];
}

const VERSION_HEADINGS = [
  "Version",
  "Provider",
  "State",
  "Capabilities",
  "Context window",
  "Max output",
  "Input per 1M tokens",
  "Output per 1M tokens",
  "Aliases",
];

function searchSection(): HTMLElement {
  const filter = h("input", {
    type: "search",
    name: "filter",
    placeholder: 'capabilities:tool_use AND context_window >= 32000',
    spellcheck: "false",
    autocomplete: "off",
  });
  const order = h(
    "select",
    { name: "order_by" },
    ["create_time desc", "create_time", "output_price", "context_window desc", "version_id desc"].map((value) =>
      h("option", { value }, value),
    ),
  );
  const results = h("div", { "aria-live": "polite" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More versions");
  let nextToken = "";
  let rows: (Node | string)[][] = [];
  let latest = 0;

  async function load(append: boolean): Promise<void> {
    filter.removeAttribute("aria-invalid");
    // Only the answer to the last search is shown, whichever order the answers come in.
    const mine = ++latest;
    try {
      const response = await call(ModelRegistryService.method.listModelVersions, {
        parent: "models/-",
        filter: filter.value,
        orderBy: order.value,
        pageSize: 50,
        pageToken: append ? nextToken : "",
      });
      if (mine !== latest) {
        return;
      }
      rows = [...(append ? rows : []), ...response.modelVersions.map(versionRow)];
      nextToken = response.nextPageToken;
      more.hidden = nextToken === "";
      replace(results, table("Model versions", VERSION_HEADINGS, rows, "No version matches the filter."));
    } catch (error) {
      if (mine !== latest) {
        return;
      }
      more.hidden = true;
      replace(results, filterErrorBox(error, filter));
    }
  }

  const form = h(
    "form",
    { class: "inline", role: "search", "aria-label": "Search model versions" },
    field("Filter", filter, "AIP-160: provider, state, capabilities, alias, labels.<key>, context_window, input_price, output_price, create_time"),
    field("Order by", order),
    h("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void load(false);
  });
  more.addEventListener("click", () => void load(true));
  void load(false);
  return section("Versions", form, results, more);
}

function aliasSection(canWrite: boolean): HTMLElement {
  const modelSelect = h("select", { name: "model" });
  const body = h("div", { "aria-live": "polite" });

  async function showModel(model: string): Promise<void> {
    if (!model) {
      replace(body, h("p", {}, "No model yet."));
      return;
    }
    try {
      const [aliases, history, versions] = await Promise.all([
        call(ModelRegistryService.method.listAliases, { parent: model, pageSize: 100 }),
        call(ModelRegistryService.method.listAliasHistory, { parent: model, pageSize: 50 }),
        call(ModelRegistryService.method.listModelVersions, { parent: model, pageSize: 100, orderBy: "version_id desc" }),
      ]);
      replace(
        body,
        table(
          "Aliases",
          ["Alias", "Points to", "Moved", "By"],
          aliases.aliases.map((alias) => [
            h("code", {}, alias.name),
            h("code", {}, alias.version),
            formatTime(alias.updateTime),
            alias.updatedBy,
          ]),
          "This model has no alias.",
        ),
        canWrite ? moveAliasForm(model, versions.modelVersions, () => void showModel(model)) : null,
        table(
          "Alias history (newest first)",
          ["When", "Alias", "From", "To", "Who", "Why"],
          history.moves.map((move) => [
            formatTime(move.moveTime),
            h("code", {}, move.alias.slice(move.alias.lastIndexOf("/") + 1)),
            move.fromVersion ? h("code", {}, move.fromVersion) : "(created)",
            move.toVersion ? h("code", {}, move.toVersion) : "(deleted)",
            move.actor,
            move.reason || "—",
          ]),
          "No alias has moved yet.",
        ),
      );
    } catch (error) {
      replace(body, errorBox(error));
    }
  }

  modelSelect.addEventListener("change", () => void showModel(modelSelect.value));
  call(ModelRegistryService.method.listModels, { pageSize: 1000 })
    .then((response) => {
      replace(
        modelSelect,
        response.models.map((model) => h("option", { value: model.name }, model.displayName || model.name)),
      );
      void showModel(modelSelect.value);
    })
    .catch((error: unknown) => replace(body, errorBox(error)));
  return section("Aliases and their history", field("Model", modelSelect), body);
}

function moveAliasForm(model: string, versions: ModelVersion[], done: () => void): HTMLElement {
  const alias = h("input", { name: "alias", required: true, pattern: "[a-z][a-z0-9-]{0,62}", placeholder: "prod" });
  const version = h(
    "select",
    { name: "version" },
    versions.map((candidate) => h("option", { value: candidate.name }, candidate.name)),
  );
  const reason = h("input", { name: "reason", maxlength: 1000 });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "inline", "aria-label": "Move an alias" },
    field("Alias", alias),
    field("To version", version),
    field("Reason", reason),
    h("button", { type: "submit" }, "Move alias"),
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    call(ModelRegistryService.method.setAlias, {
      name: `${model}/aliases/${alias.value.trim()}`,
      version: version.value,
      reason: reason.value,
    })
      .then(done)
      .catch((error: unknown) => replace(status, errorBox(error)));
  });
  return form;
}

/** Dollars (or any unit) per million tokens typed by a person, as integer micro-units. */
function toMicros(text: string): bigint | undefined {
  const match = /^\s*(\d+)(?:\.(\d{1,6}))?\s*$/.exec(text);
  if (!match) {
    return undefined;
  }
  return BigInt(match[1] ?? "0") * 1_000_000n + BigInt((match[2] ?? "").padEnd(6, "0"));
}

function resolveSection(): HTMLElement {
  const alias = h("input", { name: "alias", placeholder: "models/chat/aliases/prod", spellcheck: "false" });
  const provider = h("input", { name: "provider", placeholder: "openai" });
  const model = h("input", { name: "model", placeholder: "models/chat" });
  const minContext = h("input", { name: "min_context_window", type: "number", min: 0, step: 1 });
  const maxOutput = h("input", { name: "max_output_price", inputmode: "decimal", placeholder: "15.00" });
  const capabilityBoxes = CAPABILITIES.map((capability) => {
    const box = h("input", { type: "checkbox", name: "capability", value: String(capability) });
    return { capability, box, label: h("label", { class: "check" }, box, ` ${enumLabel(Capability, capability)}`) };
  });
  const result = h("div", { "aria-live": "polite" });

  function request(): MessageInitShape<typeof ResolveModelRequestSchema> {
    if (alias.value.trim()) {
      return { selector: { case: "alias", value: alias.value.trim() } };
    }
    const price = toMicros(maxOutput.value);
    const constraints: MessageInitShape<typeof ModelConstraintsSchema> = {
      model: model.value.trim(),
      provider: provider.value.trim(),
      requiredCapabilities: capabilityBoxes.filter((entry) => entry.box.checked).map((entry) => entry.capability),
      minContextWindow: BigInt(minContext.value || "0"),
      ...(price === undefined ? {} : { maxOutputPrice: { currencyCode: "USD", micros: price } }),
    };
    return { selector: { case: "constraints", value: constraints } };
  }

  const form = h(
    "form",
    { "aria-label": "Which model would I get" },
    field("By alias", alias, "Leave empty to resolve by the constraints below."),
    h(
      "fieldset",
      {},
      h("legend", {}, "Or by constraints"),
      h("div", { class: "inline" }, field("Model", model), field("Provider", provider), field("Minimum context window", minContext), field("Highest output price per 1M tokens (USD)", maxOutput)),
      h("fieldset", { class: "checks" }, h("legend", {}, "Required capabilities"), capabilityBoxes.map((entry) => entry.label)),
    ),
    h("button", { type: "submit" }, "Resolve"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    call(ModelRegistryService.method.resolveModel, request())
      .then((response) => {
        const version = response.modelVersion;
        replace(
          result,
          version
            ? h(
                "div",
                { class: "outcome ok", "data-testid": "resolved" },
                h("p", {}, "You would get ", h("code", {}, version.name), ` (read at revision ${response.revision}).`),
                table("Chosen version", VERSION_HEADINGS, [versionRow(version)]),
              )
            : h("p", {}, "The server chose no version."),
        );
      })
      .catch((error: unknown) => {
        const failure = error instanceof ApiError && error.code === Code.NOT_FOUND ? error.detail(ResolveModelFailureSchema) : undefined;
        if (!failure) {
          replace(result, errorBox(error));
          return;
        }
        replace(
          result,
          h(
            "div",
            { class: "outcome failed", "data-testid": "rejections" },
            h("p", { role: "alert" }, `No version matches: ${formatCount(failure.candidateCount)} considered. Why each one failed:`),
            table(
              "Rejected candidates",
              ["Version", "First constraint failed", "Why"],
              failure.rejections.map((rejection) => [h("code", {}, rejection.modelVersion), h("code", {}, rejection.constraint), rejection.reason]),
              "No version is READY.",
            ),
          ),
        );
      });
  });
  return section("Which model would I get?", form, result);
}

export const modelsPage: Page = (root, { session }) => {
  replace(root, h("h1", {}, "Models"), searchSection(), aliasSection(session.canWrite), resolveSection());
  return () => undefined;
};

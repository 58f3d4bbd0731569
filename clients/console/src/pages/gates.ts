// A rollout's analysis gates and their latest verdicts. Gates are not in this contract's Rollout yet: they
// are read from the rollout's JSON as a server with gates sends it (`analysis.gates`, `gateEvaluations`),
// so the panel appears as soon as the server has them, and nothing shows while it does not.
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { h, table } from "../ui/dom";

function objects(value: JsonValue | undefined): JsonObject[] {
  return Array.isArray(value)
    ? value.filter((item): item is JsonObject => typeof item === "object" && item !== null && !Array.isArray(item))
    : [];
}

function text(value: JsonValue | undefined): string {
  return value === undefined || value === null || typeof value === "object" ? "—" : String(value);
}

/** "ANALYSIS_SIGNAL_LATENCY_P95" -> "latency p95", with the enum's prefix named. */
function enumText(value: JsonValue | undefined, prefix: string): string {
  return typeof value === "string" ? value.replace(prefix, "").toLowerCase().replaceAll("_", " ") : "—";
}

function figure(value: JsonValue | undefined): string {
  return typeof value === "number" ? String(Number(value.toPrecision(4))) : text(value);
}

function bound(value: JsonValue | undefined): string {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "—";
  }
  const margin = typeof value["margin"] === "number" && value["margin"] !== 0 ? ` (margin ${figure(value["margin"])})` : "";
  if (value["maxRatio"] !== undefined) {
    return `canary ≤ ${figure(value["maxRatio"])} × stable${margin}`;
  }
  if (value["maxValue"] !== undefined) {
    return `canary ≤ ${figure(value["maxValue"])}${margin}`;
  }
  return "—";
}

/** The gates panel of a rollout's JSON, or null when the rollout has no gates. */
export function gatesView(rollout: JsonValue | undefined): HTMLElement | null {
  if (typeof rollout !== "object" || rollout === null || Array.isArray(rollout)) {
    return null;
  }
  const analysis = rollout["analysis"];
  const gates = typeof analysis === "object" && analysis !== null && !Array.isArray(analysis) ? objects(analysis["gates"]) : [];
  if (gates.length === 0) {
    return null;
  }
  const evaluations = objects(rollout["gateEvaluations"]);
  return h(
    "div",
    { class: "gates", "data-testid": "gates" },
    table(
      "Analysis gates",
      ["Gate", "Signal", "Window", "Bound", "Minimum samples", "On failure"],
      gates.map((gate) => [
        h("code", {}, text(gate["name"])),
        enumText(gate["signal"], "ANALYSIS_SIGNAL_"),
        text(gate["window"]),
        bound(gate["bound"]),
        text(gate["minSamples"]),
        enumText(gate["onFailure"], "GATE_ACTION_"),
      ]),
    ),
    table(
      "Latest gate verdicts",
      ["Gate", "Verdict", "Canary", "Stable", "Samples (canary / stable)", "p-value", "Why"],
      evaluations.map((evaluation) => [
        h("code", {}, text(evaluation["gate"])),
        h("strong", { class: `verdict ${enumText(evaluation["verdict"], "GATE_VERDICT_")}` }, enumText(evaluation["verdict"], "GATE_VERDICT_")),
        figure(evaluation["canaryValue"]),
        figure(evaluation["stableValue"]),
        `${text(evaluation["canarySamples"])} / ${text(evaluation["stableSamples"])}`,
        figure(evaluation["pValue"]),
        text(evaluation["reason"]),
      ]),
      "No gate has been evaluated yet.",
    ),
  );
}

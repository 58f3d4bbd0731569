// A rollout's analysis gates and their latest verdicts (Rollout.analysis, Rollout.gate_evaluations), and the
// one-line form of an evaluation that the history timeline shows beside the transition a gate decided.
import {
  AnalysisSignal,
  GateAction,
  GateVerdict,
  type AnalysisGate,
  type GateBound,
  type GateEvaluation,
  type Rollout,
} from "@gen/modelplane/v1/deployments_pb.js";
import { h, table } from "../ui/dom";
import { enumLabel, formatCount, formatDuration, formatTime } from "../ui/format";

const RATES = new Set([
  AnalysisSignal.ERROR_RATE,
  AnalysisSignal.GUARDRAIL_BLOCK_RATE,
  AnalysisSignal.GUARDRAIL_REDACT_RATE,
  AnalysisSignal.ROUTING_FAILURE_RATE,
]);
const LATENCIES = new Set([AnalysisSignal.LATENCY_P50, AnalysisSignal.LATENCY_P95, AnalysisSignal.LATENCY_P99]);

function number(value: number): string {
  return String(Number(value.toPrecision(4)));
}

/** A figure in its signal's unit: a rate as a percentage, a latency in ms, a cost in micro-units. */
export function signalFigure(signal: AnalysisSignal, value: number): string {
  if (RATES.has(signal)) {
    return `${number(value * 100)}%`;
  }
  if (LATENCIES.has(signal)) {
    return `${number(value)} ms`;
  }
  return number(value);
}

function boundText(gate: AnalysisGate): string {
  const bound: GateBound | undefined = gate.bound;
  if (bound?.limit.case === "maxRatio") {
    const margin = bound.margin !== 0 ? ` + ${signalFigure(gate.signal, bound.margin)}` : "";
    return `canary ≤ ${number(bound.limit.value)} × stable${margin}`;
  }
  if (bound?.limit.case === "maxValue") {
    return `canary ≤ ${signalFigure(gate.signal, bound.limit.value)}`;
  }
  return "—";
}

function signalText(gate: AnalysisGate): string {
  const signal = enumLabel(AnalysisSignal, gate.signal);
  return gate.currencyCode ? `${signal} (${gate.currencyCode})` : gate.policy ? `${signal} (${gate.policy})` : signal;
}

function verdictText(verdict: GateVerdict): HTMLElement {
  const label = enumLabel(GateVerdict, verdict);
  return h("strong", { class: `verdict ${label}` }, label);
}

/** "errors: fail · canary 6.2%, stable 2% over 1,000 / 1,000 events", for the history timeline. */
export function evaluationLine(evaluation: GateEvaluation): HTMLElement {
  return h(
    "li",
    { "data-testid": "gate-evaluation" },
    h("code", {}, evaluation.gate),
    ": ",
    verdictText(evaluation.verdict),
    ` · canary ${signalFigure(evaluation.signal, evaluation.canaryValue)},` +
      ` stable ${signalFigure(evaluation.signal, evaluation.stableValue)}` +
      ` over ${formatCount(evaluation.canarySamples)} / ${formatCount(evaluation.stableSamples)} events`,
  );
}

/** The gates panel of a rollout, or null when the rollout has no gates. */
export function gatesView(rollout: Rollout): HTMLElement | null {
  const analysis = rollout.analysis;
  if (!analysis || analysis.gates.length === 0) {
    return null;
  }
  const signals = new Map(analysis.gates.map((gate) => [gate.name, gate.signal]));
  return h(
    "div",
    { class: "gates", "data-testid": "gates" },
    table(
      "Analysis gates",
      ["Gate", "Signal", "Window", "Bound", "Minimum samples", "On failure"],
      analysis.gates.map((gate) => [
        h("code", {}, gate.name),
        signalText(gate),
        formatDuration(gate.window),
        boundText(gate),
        formatCount(gate.minSamples),
        enumLabel(GateAction, gate.onFailure),
      ]),
    ),
    h(
      "p",
      { "data-testid": "gates-policy" },
      `Each gate may fail by chance with probability ${number(analysis.alpha || 0.01)}; a step waits up to ` +
        `${formatDuration(analysis.maxWaitForData)} for enough events, then: ${enumLabel(GateAction, analysis.onNoData)}.`,
      rollout.dataWaitStart ? ` Waiting for data since ${formatTime(rollout.dataWaitStart)}.` : "",
    ),
    table(
      "Latest gate verdicts",
      ["Gate", "Verdict", "Canary", "Stable", "Threshold", "Samples (canary / stable)", "p-value", "Why"],
      rollout.gateEvaluations.map((evaluation) => {
        const signal = signals.get(evaluation.gate) ?? evaluation.signal;
        return [
          h("code", {}, evaluation.gate),
          verdictText(evaluation.verdict),
          signalFigure(signal, evaluation.canaryValue),
          signalFigure(signal, evaluation.stableValue),
          signalFigure(signal, evaluation.threshold),
          `${formatCount(evaluation.canarySamples)} / ${formatCount(evaluation.stableSamples)}`,
          number(evaluation.pValue),
          evaluation.reason,
        ];
      }),
      "No gate has been evaluated yet: the gates are checked when a timed step is due.",
    ),
  );
}

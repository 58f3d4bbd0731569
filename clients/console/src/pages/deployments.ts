// Deployments: the live traffic table of one deployment (a bar per slot, moved by the watch stream without a
// reload), its active rollout's steps and readiness with the controls a writer may use, and its history.
import {
  DeploymentTransition,
  EndpointHealth,
  RollbackMode,
  RolloutState,
  RolloutStrategy,
  type Deployment,
  type Endpoint,
  type Rollout,
  type RolloutStep,
  type SlotTraffic,
} from "@gen/modelplane/v1/deployments_pb.js";
import { call, stream } from "../api/client";
import { DeploymentService, ModelRegistryService } from "../api/services";
import { field, h, replace, section, table } from "../ui/dom";
import { errorBox } from "../ui/errors";
import { durationSeconds, enumLabel, formatTime, formatWeight } from "../ui/format";
import { evaluationLine, gatesView } from "./gates";
import type { Page } from "./page";
import { resourcePage } from "./picker";

const ACTIVE_STATES = new Set([
  RolloutState.WAITING_READY,
  RolloutState.PROGRESSING,
  RolloutState.PAUSED,
  RolloutState.ROLLING_BACK,
]);
/** How long a broken watch waits before it reconnects from the last revision it saw. */
const RECONNECT_MS = 1_000;

function slotBar(slot: "stable" | "canary", traffic: SlotTraffic | undefined): HTMLElement {
  const weight = traffic?.weightBp ?? 0;
  const percent = weight / 100;
  return h(
    "div",
    { class: `slot slot-${slot}`, "data-testid": `slot-${slot}`, "data-weight-bp": weight },
    h(
      "div",
      { class: "slot-label" },
      h("strong", {}, slot),
      " ",
      traffic ? h("code", {}, traffic.modelVersion) : "(no canary)",
    ),
    h(
      "div",
      {
        class: "bar",
        role: "meter",
        "aria-label": `${slot} share of the traffic`,
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": percent,
        "aria-valuetext": formatWeight(weight),
      },
      h("div", { class: "fill", style: `width: ${percent}%` }),
    ),
    h("span", { class: "weight" }, formatWeight(weight)),
  );
}

function endpointRows(slot: string, endpoints: Endpoint[]): (Node | string)[][] {
  return endpoints.map((endpoint) => [
    slot,
    h("code", {}, endpoint.address),
    h("span", { class: `health health-${EndpointHealth[endpoint.health]?.toLowerCase()}` }, enumLabel(EndpointHealth, endpoint.health)),
  ]);
}

function trafficView(deployment: Deployment, revision: bigint, live: boolean): HTMLElement {
  const traffic = deployment.traffic;
  return h(
    "div",
    { class: "traffic" },
    h(
      "p",
      { class: "live", "data-testid": "watch-state" },
      h("span", { class: live ? "dot on" : "dot" }, ""),
      live ? `Live · revision ${revision}` : `Reconnecting · revision ${revision}`,
    ),
    slotBar("stable", traffic?.stable),
    slotBar("canary", traffic?.canary),
    table("Endpoints", ["Slot", "Address", "Health"], [
      ...endpointRows("stable", traffic?.stable?.endpoints ?? []),
      ...endpointRows("canary", traffic?.canary?.endpoints ?? []),
    ]),
  );
}

function stepText(step: RolloutStep): string {
  const advance =
    step.advance.case === "duration"
      ? `holds ${durationSeconds(step.advance.value)} s`
      : step.advance.case === "pauseUntilPromoted"
        ? "until promoted"
        : "";
  return `${formatWeight(step.weightBp)} ${advance}`;
}

function rolloutView(rollout: Rollout, deployment: Deployment, canWrite: boolean, refresh: () => void): HTMLElement {
  const canary = deployment.traffic?.canary?.endpoints ?? [];
  const ready = canary.filter((endpoint) => endpoint.health === EndpointHealth.READY).length;
  const status = h("div", { "aria-live": "polite" });
  const reason = h("input", { name: "reason", maxlength: 1000 });

  function control(label: string, enabled: boolean, run: () => Promise<unknown>): HTMLButtonElement {
    return h(
      "button",
      {
        type: "button",
        disabled: !enabled,
        onclick: () => {
          replace(status);
          run().then(refresh).catch((error: unknown) => replace(status, errorBox(error)));
        },
      },
      label,
    );
  }

  const state = rollout.state;
  const common = { name: rollout.name, etag: rollout.etag };
  const controls = canWrite
    ? h(
        "form",
        { class: "inline controls", "aria-label": "Rollout controls", onsubmit: (event: Event) => event.preventDefault() },
        field("Reason", reason),
        control("Promote", state === RolloutState.PROGRESSING, () =>
          call(DeploymentService.method.promoteRollout, { ...common, reason: reason.value }),
        ),
        control("Promote to end", state === RolloutState.PROGRESSING, () =>
          call(DeploymentService.method.promoteRollout, { ...common, toEnd: true, reason: reason.value }),
        ),
        control("Pause", state === RolloutState.PROGRESSING || state === RolloutState.WAITING_READY, () =>
          call(DeploymentService.method.pauseRollout, { ...common, reason: reason.value }),
        ),
        control("Resume", state === RolloutState.PAUSED, () =>
          call(DeploymentService.method.resumeRollout, { ...common, reason: reason.value }),
        ),
        control("Roll back", ACTIVE_STATES.has(state) && state !== RolloutState.ROLLING_BACK, () =>
          call(DeploymentService.method.rollbackRollout, { ...common, mode: RollbackMode.INSTANT, reason: reason.value }),
        ),
        control("Abort", ACTIVE_STATES.has(state), () =>
          call(DeploymentService.method.abortRollout, { ...common, reason: reason.value }),
        ),
        status,
      )
    : null;

  return h(
    "div",
    { class: "rollout", "data-testid": "rollout" },
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Rollout"),
      h("dd", {}, h("code", {}, rollout.name)),
      h("dt", {}, "State"),
      h("dd", { "data-testid": "rollout-state" }, enumLabel(RolloutState, state)),
      h("dt", {}, "Strategy"),
      h("dd", {}, enumLabel(RolloutStrategy, rollout.strategy)),
      h("dt", {}, "From → to"),
      h("dd", {}, h("code", {}, rollout.fromVersion), " → ", h("code", {}, rollout.targetVersion)),
      h("dt", {}, "Readiness"),
      h("dd", {}, `${ready} of ${canary.length} canary endpoints ready`),
      h("dt", {}, "Next timed step"),
      h("dd", {}, formatTime(rollout.nextStepTime)),
      h("dt", {}, "Started by"),
      h("dd", {}, `${rollout.startedBy} at ${formatTime(rollout.createTime)}`),
    ),
    rollout.steps.length > 0
      ? h(
          "ol",
          { class: "steps", "aria-label": "Steps" },
          rollout.steps.map((step, index) =>
            h(
              "li",
              {
                class: index === rollout.currentStep && state === RolloutState.PROGRESSING ? "current" : index < rollout.currentStep ? "done" : "",
                "aria-current": index === rollout.currentStep && state === RolloutState.PROGRESSING ? "step" : undefined,
              },
              stepText(step),
            ),
          ),
        )
      : null,
    controls,
  );
}

function startRolloutForm(deployment: Deployment, versions: string[], refresh: () => void): HTMLElement {
  const target = h("select", { name: "target_version" }, versions.map((name) => h("option", { value: name }, name)));
  const endpoints = h("input", { name: "endpoints", required: true, placeholder: "10.0.0.9:8000, 10.0.0.10:8000" });
  const strategy = h(
    "select",
    { name: "strategy" },
    [RolloutStrategy.CANARY, RolloutStrategy.BLUE_GREEN, RolloutStrategy.IMMEDIATE].map((value) =>
      h("option", { value: String(value) }, enumLabel(RolloutStrategy, value)),
    ),
  );
  const steps = h("input", { name: "steps", value: "10, 50", placeholder: "10, 50" });
  const reason = h("input", { name: "reason", maxlength: 1000 });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "inline", "aria-label": "Start a rollout" },
    field("Target version", target),
    field("Canary endpoints", endpoints, "Comma-separated addresses."),
    field("Strategy", strategy),
    field("Canary steps (%)", steps, "Each step holds until promoted."),
    field("Reason", reason),
    h("button", { type: "submit" }, "Start rollout"),
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = Number(strategy.value) as RolloutStrategy;
    const weights = steps.value
      .split(",")
      .map((part) => part.trim())
      .filter(Boolean)
      .map((part) => Math.round(Number(part) * 100));
    call(DeploymentService.method.startRollout, {
      parent: deployment.name,
      rollout: {
        targetVersion: target.value,
        endpoints: endpoints.value
          .split(",")
          .map((address) => address.trim())
          .filter(Boolean)
          .map((address) => ({ address })),
        strategy: chosen,
        steps:
          chosen === RolloutStrategy.CANARY
            ? weights.map((weightBp) => ({ weightBp, advance: { case: "pauseUntilPromoted" as const, value: true } }))
            : [],
        reason: reason.value,
      },
    })
      .then(refresh)
      .catch((error: unknown) => replace(status, errorBox(error)));
  });
  return form;
}

function historyView(deployment: string): HTMLElement {
  const list = h("div", { "aria-live": "polite" });
  call(DeploymentService.method.listDeploymentHistory, { parent: deployment, pageSize: 50 })
    .then((response) =>
      replace(
        list,
        h(
          "ol",
          { class: "timeline", "aria-label": "History, newest first" },
          response.entries.map((entry) =>
            h(
              "li",
              {},
              h("time", {}, formatTime(entry.createTime)),
              h("strong", {}, enumLabel(DeploymentTransition, entry.transition)),
              entry.rollout ? h("span", {}, " · ", h("code", {}, entry.rollout), ` (${enumLabel(RolloutState, entry.rolloutState)})`) : null,
              h("span", {}, ` · by ${entry.actor}`),
              entry.reason ? h("span", {}, ` · “${entry.reason}”`) : null,
              h(
                "span",
                { class: "after" },
                ` · canary ${formatWeight(entry.trafficAfter?.canary?.weightBp ?? 0)}, stable ${formatWeight(entry.trafficAfter?.stable?.weightBp ?? 0)}`,
              ),
              entry.gateEvaluations.length > 0
                ? h("ul", { class: "gate-evaluations", "aria-label": "Gate evaluations" }, entry.gateEvaluations.map(evaluationLine))
                : null,
            ),
          ),
        ),
      ),
    )
    .catch((error: unknown) => replace(list, errorBox(error)));
  return list;
}

function deploymentDetail(root: HTMLElement, name: string, canWrite: boolean): () => void {
  const stop = new AbortController();
  const trafficPanel = h("div", { "aria-live": "off" });
  const rolloutPanel = h("div");
  const historyPanel = h("div");
  let deployment: Deployment | undefined;
  let revision = 0n;
  let versions: string[] = [];
  let shownRollout = "";
  let shownRevision = -1n;

  function refreshFromServer(): void {
    call(DeploymentService.method.getDeployment, { name })
      .then((response) => {
        if (response.deployment) {
          show(response.deployment, true);
        }
      })
      .catch((error: unknown) => replace(rolloutPanel, errorBox(error)));
  }

  function show(next: Deployment, live: boolean): void {
    deployment = next;
    revision = next.revision > revision ? next.revision : revision;
    replace(trafficPanel, trafficView(next, revision, live));
    if (shownRevision === next.revision && shownRollout === next.activeRollout) {
      return;
    }
    shownRevision = next.revision;
    shownRollout = next.activeRollout;
    replace(historyPanel, historyView(name));
    if (next.activeRollout) {
      call(DeploymentService.method.getRollout, { name: next.activeRollout })
        .then((response) => {
          if (response.rollout && deployment) {
            replace(
              rolloutPanel,
              rolloutView(response.rollout, deployment, canWrite, refreshFromServer),
              gatesView(response.rollout),
            );
          }
        })
        .catch((error: unknown) => replace(rolloutPanel, errorBox(error)));
    } else {
      replace(
        rolloutPanel,
        h("p", {}, "No rollout is active."),
        canWrite ? startRolloutForm(next, versions, refreshFromServer) : null,
      );
    }
  }

  async function watch(): Promise<void> {
    let startRevision = 0n;
    while (!stop.signal.aborted) {
      try {
        await stream(
          DeploymentService.method.watchDeployment,
          { deployment: name, startRevision },
          (message) => {
            if (message.event.case === "change" && message.event.value.deployment) {
              const change = message.event.value;
              startRevision = change.revision + 1n;
              revision = change.revision;
              show(change.deployment!, true);
            } else if (message.event.case === "progress") {
              startRevision = message.event.value.revision + 1n;
              revision = message.event.value.revision;
              if (deployment) {
                replace(trafficPanel, trafficView(deployment, revision, true));
              }
            }
          },
          stop.signal,
        );
      } catch (error) {
        replace(rolloutPanel, errorBox(error));
      }
      if (stop.signal.aborted) {
        return;
      }
      if (deployment) {
        replace(trafficPanel, trafficView(deployment, revision, false));
      }
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  replace(
    root,
    section("Live traffic", trafficPanel),
    section("Rollout", rolloutPanel),
    section("History", historyPanel),
  );
  call(DeploymentService.method.getDeployment, { name })
    .then(async (response) => {
      const model = response.deployment?.model ?? "";
      const listed = await call(ModelRegistryService.method.listModelVersions, { parent: model, pageSize: 100, orderBy: "version_id desc" });
      versions = listed.modelVersions.map((version) => version.name);
      void watch();
    })
    .catch((error: unknown) => replace(trafficPanel, errorBox(error)));
  return () => stop.abort();
}

export const deploymentsPage: Page = (root, { session, params }) =>
  resourcePage(root, {
    title: "Deployments",
    label: "Deployment",
    collection: "deployments",
    route: "deployments",
    chosen: params[0],
    list: async () =>
      (await call(DeploymentService.method.listDeployments, { pageSize: 1000 })).deployments.map((deployment) => deployment.name),
    show: (detail, name) => deploymentDetail(detail, name, session.canWrite),
  });

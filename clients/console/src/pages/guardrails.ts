// Guardrails: a policy's rules, a diff between two of its revisions, its violations over time by category
// and by severity, masked samples of what it found, and a box to check a text against it.
import { toJson } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  Decision,
  FailMode,
  PolicySchema,
  Severity,
  ViolationGroupBy,
  type Policy,
  type ViolationGroup,
} from "@gen/modelplane/v1/guardrails_pb.js";
import { call } from "../api/client";
import { GuardrailService } from "../api/services";
import { pivot, timeChart } from "../ui/chart";
import { lineDiff } from "../ui/diff";
import { field, h, replace, section, table } from "../ui/dom";
import { errorBox } from "../ui/errors";
import { enumLabel, formatTime } from "../ui/format";
import type { Page } from "./page";
import { resourcePage } from "./picker";

/** The violations chart's range and bucket: the last day, by the hour. */
const CHART_HOURS = 24;

function rulesView(policy: Policy): HTMLElement {
  return h(
    "div",
    {},
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Revision"),
      h("dd", { "data-testid": "policy-revision" }, String(policy.revision)),
      h("dt", {}, "Fail mode"),
      h("dd", {}, enumLabel(FailMode, policy.failMode)),
      h("dt", {}, "Decisions"),
      h(
        "dd",
        {},
        policy.decisions
          ? `info ${enumLabel(Decision, policy.decisions.info)}, warning ${enumLabel(Decision, policy.decisions.warning)}, error ${enumLabel(Decision, policy.decisions.error)}, critical ${enumLabel(Decision, policy.decisions.critical)}`
          : "—",
      ),
      h("dt", {}, "Updated"),
      h("dd", {}, formatTime(policy.updateTime)),
    ),
    table(
      "Rules",
      ["Rule", "Kind", "Severity", "Category", "Description"],
      policy.rules.map((rule) => [
        h("code", {}, rule.id),
        (rule.kind.case ?? "—").replace(/([A-Z])/g, " $1").toLowerCase(),
        enumLabel(Severity, rule.severity),
        rule.category,
        rule.description || "—",
      ]),
      "This policy has no rules.",
    ),
  );
}

/** A revision as the diff compares it: its JSON without what changes on every revision by itself. */
function revisionText(policy: Policy): string[] {
  const json = toJson(PolicySchema, policy) as Record<string, unknown>;
  for (const key of ["revision", "createTime", "updateTime", "etag"]) {
    delete json[key];
  }
  return JSON.stringify(json, null, 2).split("\n");
}

function revisionsSection(name: string): HTMLElement {
  const from = h("select", { name: "from_revision" });
  const to = h("select", { name: "to_revision" });
  const output = h("div", { "aria-live": "polite" });
  let revisions: Policy[] = [];

  function showDiff(): void {
    const older = revisions.find((policy) => String(policy.revision) === from.value);
    const newer = revisions.find((policy) => String(policy.revision) === to.value);
    if (!older || !newer) {
      replace(output, h("p", {}, "This policy has one revision."));
      return;
    }
    const lines = lineDiff(revisionText(older), revisionText(newer));
    const changed = lines.filter((line) => line.kind !== "same").length;
    replace(
      output,
      h("p", {}, changed === 0 ? "The two revisions are the same." : `${changed} lines differ.`),
      h(
        "pre",
        { class: "diff", tabindex: 0, "aria-label": `Changes from revision ${from.value} to ${to.value}` },
        lines.map((line) =>
          line.kind === "added"
            ? h("ins", {}, `+ ${line.text}\n`)
            : line.kind === "removed"
              ? h("del", {}, `- ${line.text}\n`)
              : h("span", {}, `  ${line.text}\n`),
        ),
      ),
    );
  }

  from.addEventListener("change", showDiff);
  to.addEventListener("change", showDiff);
  call(GuardrailService.method.listPolicyRevisions, { name, pageSize: 100 })
    .then((response) => {
      revisions = response.policies;
      const options = (): HTMLOptionElement[] =>
        revisions.map((policy) => h("option", { value: String(policy.revision) }, `revision ${policy.revision} · ${formatTime(policy.updateTime)}`));
      replace(from, options());
      replace(to, options());
      to.value = String(revisions[0]?.revision ?? "");
      from.value = String(revisions[1]?.revision ?? revisions[0]?.revision ?? "");
      showDiff();
    })
    .catch((error: unknown) => replace(output, errorBox(error)));
  return section("Revisions", h("div", { class: "inline" }, field("From", from), field("To", to)), output);
}

function violationsSection(policy: Policy): HTMLElement {
  const charts = h("div", { class: "charts", "aria-live": "polite" });
  const samples = h("div");
  const end = new Date();
  const start = new Date(end.getTime() - CHART_HOURS * 3600 * 1000);
  const categoryOf = new Map(policy.rules.map((rule) => [rule.id, rule.category]));
  const bucket = (group: ViolationGroup): number => (group.bucketStart ? timestampDate(group.bucketStart).getTime() / 1000 : 0);
  const range = {
    policy: policy.name,
    startTime: timestampFromDate(start),
    endTime: timestampFromDate(end),
    bucketWidth: { seconds: 3600n },
  };
  Promise.all([
    // The contract groups by rule, not category: each rule's category comes from the policy's rules.
    call(GuardrailService.method.aggregateViolations, {
      ...range,
      groupBy: [ViolationGroupBy.TIME_BUCKET, ViolationGroupBy.RULE],
    }),
    call(GuardrailService.method.aggregateViolations, {
      ...range,
      groupBy: [ViolationGroupBy.TIME_BUCKET, ViolationGroupBy.SEVERITY],
    }),
  ])
    .then(([byRule, bySeverity]) => {
      const categories = pivot(
        byRule.groups.filter((group) => group.ruleId),
        bucket,
        (group) => categoryOf.get(group.ruleId) ?? `rule ${group.ruleId}`,
        (group) => Number(group.violations),
      );
      const severities = pivot(
        bySeverity.groups.filter((group) => group.severity !== Severity.UNSPECIFIED),
        bucket,
        (group) => enumLabel(Severity, group.severity),
        (group) => Number(group.violations),
      );
      const span: [number, number] = [start.getTime() / 1000, end.getTime() / 1000];
      replace(
        charts,
        timeChart("Violations per hour by category", categories.buckets, categories.series, span),
        timeChart("Violations per hour by severity", severities.buckets, severities.series, span),
      );
    })
    .catch((error: unknown) => replace(charts, errorBox(error)));
  call(GuardrailService.method.listViolations, { filter: `policy = "${policy.name}"`, pageSize: 20 })
    .then((response) =>
      replace(
        samples,
        table(
          "Latest violations (masked)",
          ["When", "Rule", "Severity", "Category", "Decision", "Excerpt"],
          response.violations.map((violation) => [
            formatTime(violation.createTime),
            h("code", {}, violation.ruleId),
            enumLabel(Severity, violation.severity),
            violation.category,
            enumLabel(Decision, violation.decision),
            h("code", { class: "excerpt" }, violation.excerpt),
          ]),
          "No violation recorded.",
        ),
      ),
    )
    .catch((error: unknown) => replace(samples, errorBox(error)));
  return section(`Violations, last ${CHART_HOURS} hours`, charts, samples);
}

function checkSection(policy: Policy, canCheck: boolean): HTMLElement {
  if (!canCheck) {
    return section("Check a text", h("p", {}, "Checking needs an admin, operator or service token."));
  }
  const text = h("textarea", { name: "text", rows: 5, maxlength: 100000 });
  const result = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { "aria-label": "Check a text" },
    field("Text to check", text, `Checked against ${policy.name} at its active revision; nothing of the text is stored.`),
    h("button", { type: "submit" }, "Check"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    call(GuardrailService.method.checkContent, { policy: policy.name, text: text.value })
      .then((response) => {
        const verdict = response.verdict;
        if (!verdict) {
          replace(result, h("p", {}, "The server gave no verdict."));
          return;
        }
        replace(
          result,
          h(
            "div",
            { class: `outcome decision-${Decision[verdict.decision]?.toLowerCase()}`, "data-testid": "verdict" },
            h("p", {}, h("strong", { "data-testid": "decision" }, enumLabel(Decision, verdict.decision)), ` · highest severity ${enumLabel(Severity, verdict.highestSeverity)}`),
            table(
              "Violations found",
              ["Rule", "Severity", "Category", "Decision", "Characters", "Excerpt"],
              verdict.violations.map((violation) => [
                h("code", {}, violation.ruleId),
                enumLabel(Severity, violation.severity),
                violation.category,
                enumLabel(Decision, violation.decision),
                violation.span ? `${violation.span.start}–${violation.span.end}` : "—",
                h("code", { class: "excerpt" }, violation.excerpt),
              ]),
              "Nothing found.",
            ),
            verdict.redactedText ? h("div", {}, h("h3", {}, "Redacted text"), h("pre", {}, verdict.redactedText)) : null,
            verdict.fallbackContent ? h("div", {}, h("h3", {}, "Fallback content"), h("pre", {}, verdict.fallbackContent)) : null,
          ),
        );
      })
      .catch((error: unknown) => replace(result, errorBox(error)));
  });
  return section("Check a text", form, result);
}

function policyDetail(detail: HTMLElement, name: string, canCheck: boolean): () => void {
  call(GuardrailService.method.getPolicy, { name })
    .then((response) => {
      const policy = response.policy;
      if (!policy) {
        return;
      }
      replace(
        detail,
        section(policy.displayName || policy.name, rulesView(policy)),
        checkSection(policy, canCheck),
        violationsSection(policy),
        revisionsSection(policy.name),
      );
    })
    .catch((error: unknown) => replace(detail, errorBox(error)));
  return () => undefined;
}

export const guardrailsPage: Page = (root, { session, params }) =>
  resourcePage(root, {
    title: "Guardrails",
    label: "Policy",
    collection: "policies",
    route: "guardrails",
    chosen: params[0],
    list: async () => (await call(GuardrailService.method.listPolicies, { pageSize: 1000 })).policies.map((policy) => policy.name),
    show: (detail, name) => policyDetail(detail, name, session.canCheck),
  });

// Logs: a query with the filter language and keyset pages, a live tail over server-sent events, and charts of
// AggregateLogEvents: requests, error rate, latency percentiles, tokens and cost per model version and slot.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { TrafficSlot } from "@gen/modelplane/v1/common_pb.js";
import { LogGroupBy, LogLevel, type LogEvent, type LogGroup } from "@gen/modelplane/v1/logs_pb.js";
import { call, stream } from "../api/client";
import { LogService } from "../api/services";
import { pivot, timeChart } from "../ui/chart";
import { field, h, replace, section, table } from "../ui/dom";
import { errorBox, filterErrorBox } from "../ui/errors";
import { durationSeconds, enumLabel, formatDuration, formatTime } from "../ui/format";
import type { Page } from "./page";

/** The most rows the live tail keeps on screen; older ones scroll away. */
const TAIL_ROWS = 200;
const HEADINGS = ["Time", "Service", "Level", "Kind", "Message", "Model version", "Slot", "Latency"];

function payloadLatency(event: LogEvent): string {
  if (event.payload.case === "inference" || event.payload.case === "routing") {
    return formatDuration(event.payload.value.latency);
  }
  return "—";
}

function eventRow(event: LogEvent): (Node | string)[] {
  return [
    formatTime(event.eventTime),
    event.service,
    enumLabel(LogLevel, event.level),
    event.payload.case ? event.payload.case.replace(/([A-Z])/g, " $1").toLowerCase() : "message",
    event.message || "—",
    event.links?.modelVersion ? h("code", {}, event.links.modelVersion) : "—",
    event.links?.trafficSlot ? enumLabel(TrafficSlot, event.links.trafficSlot) : "—",
    payloadLatency(event),
  ];
}

function querySection(filter: HTMLInputElement): HTMLElement {
  const order = h(
    "select",
    { name: "order_by" },
    h("option", { value: "event_time desc" }, "newest first"),
    h("option", { value: "event_time asc" }, "oldest first"),
  );
  const results = h("div", { "aria-live": "polite" });
  const previous = h("button", { type: "button", class: "secondary", disabled: true }, "Previous page");
  const next = h("button", { type: "button", class: "secondary", disabled: true }, "Next page");
  const position = h("span", { class: "page-position" });
  // The token of each page shown so far: the keyset pages go forward by token, and back by this stack.
  let tokens: string[] = [""];
  let nextToken = "";
  let latest = 0;

  async function load(): Promise<void> {
    filter.removeAttribute("aria-invalid");
    // Only the answer to the last query is shown, whichever order the answers come in.
    const mine = ++latest;
    try {
      const response = await call(LogService.method.queryLogEvents, {
        filter: filter.value,
        orderBy: order.value,
        pageSize: 25,
        pageToken: tokens[tokens.length - 1] ?? "",
      });
      if (mine !== latest) {
        return;
      }
      nextToken = response.nextPageToken;
      next.disabled = nextToken === "";
      previous.disabled = tokens.length <= 1;
      replace(position, `page ${tokens.length}`);
      replace(results, table("Log events", HEADINGS, response.events.map(eventRow), "No event matches."));
    } catch (error) {
      if (mine !== latest) {
        return;
      }
      next.disabled = true;
      replace(results, filterErrorBox(error, filter));
    }
  }

  const form = h(
    "form",
    { class: "inline", role: "search", "aria-label": "Query log events" },
    field("Filter", filter, 'e.g. level >= WARNING AND service = "storyteller" AND message:timeout'),
    field("Order", order),
    h("button", { type: "submit" }, "Query"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    tokens = [""];
    void load();
  });
  next.addEventListener("click", () => {
    tokens.push(nextToken);
    void load();
  });
  previous.addEventListener("click", () => {
    tokens.pop();
    void load();
  });
  void load();
  return section("Query", form, results, h("div", { class: "pager" }, previous, position, next));
}

function tailSection(filter: HTMLInputElement): { element: HTMLElement; stop: () => void } {
  const toggle = h("button", { type: "button", "aria-pressed": "false" }, "Start live tail");
  const state = h("p", { class: "live", "aria-live": "polite", "data-testid": "tail-state" }, "Stopped.");
  const body = h("tbody");
  const rows: HTMLTableRowElement[] = [];
  let running: AbortController | undefined;

  function stop(): void {
    running?.abort();
    running = undefined;
    toggle.setAttribute("aria-pressed", "false");
    toggle.textContent = "Start live tail";
    replace(state, "Stopped.");
  }

  function start(): void {
    const controller = new AbortController();
    running = controller;
    toggle.setAttribute("aria-pressed", "true");
    toggle.textContent = "Stop live tail";
    const what = filter.value ? `“${filter.value}”` : "every event";
    replace(state, `Connecting to the tail of ${what}…`);
    stream(
      LogService.method.tailLogEvents,
      { filter: filter.value },
      (message) => {
        for (const event of message.events) {
          const row = h("tr", {}, ...eventRow(event).map((cell) => h("td", {}, cell)));
          body.prepend(row);
          rows.unshift(row);
        }
        while (rows.length > TAIL_ROWS) {
          rows.pop()?.remove();
        }
      },
      controller.signal,
      () => replace(state, h("span", { class: "dot on" }), ` Tailing ${what}…`),
    )
      .then(() => {
        if (running === controller) {
          stop();
        }
      })
      .catch((error: unknown) => {
        if (running === controller) {
          stop();
          replace(state, errorBox(error));
        }
      });
  }

  toggle.addEventListener("click", () => (running ? stop() : start()));
  const element = section(
    "Live tail",
    h("p", {}, "New events matching the filter above, newest on top."),
    toggle,
    state,
    h(
      "div",
      { class: "table-wrap", tabindex: 0, role: "region", "aria-label": "Live events" },
      h(
        "table",
        {},
        h("caption", {}, "Live events"),
        h("thead", {}, h("tr", {}, HEADINGS.map((heading) => h("th", { scope: "col" }, heading)))),
        body,
      ),
    ),
  );
  return { element, stop };
}

const RANGES = [
  { label: "last hour", seconds: 3600, bucket: 60 },
  { label: "last 6 hours", seconds: 6 * 3600, bucket: 300 },
  { label: "last 24 hours", seconds: 24 * 3600, bucket: 3600 },
];

function bucketOf(group: LogGroup): number {
  return group.bucketStart ? timestampDate(group.bucketStart).getTime() / 1000 : 0;
}

function versionAndSlot(group: LogGroup): string {
  const slot = group.trafficSlot === TrafficSlot.UNSPECIFIED ? "" : ` (${enumLabel(TrafficSlot, group.trafficSlot)})`;
  return `${group.modelVersion || "no version"}${slot}`;
}

function chartsSection(): HTMLElement {
  const range = h(
    "select",
    { name: "range" },
    RANGES.map((entry, index) => h("option", { value: String(index) }, entry.label)),
  );
  const charts = h("div", { class: "charts", "aria-live": "polite", "data-testid": "traffic-charts" });
  let latest = 0;

  async function load(): Promise<void> {
    const mine = ++latest;
    const chosen = RANGES[Number(range.value)] ?? RANGES[0]!;
    const now = Date.now() / 1000;
    const span: [number, number] = [now - chosen.seconds, now];
    const since = new Date(span[0] * 1000).toISOString();
    const timeFilter = `event_time >= "${since}"`;
    const bucketWidth = { seconds: BigInt(chosen.bucket) };
    try {
      const [overall, perVersion] = await Promise.all([
        call(LogService.method.aggregateLogEvents, {
          filter: `${timeFilter} AND (kind = INFERENCE OR kind = ROUTING)`,
          groupBy: [LogGroupBy.TIME_BUCKET],
          bucketWidth,
        }),
        call(LogService.method.aggregateLogEvents, {
          filter: `${timeFilter} AND kind = INFERENCE`,
          groupBy: [LogGroupBy.TIME_BUCKET, LogGroupBy.MODEL_VERSION, LogGroupBy.TRAFFIC_SLOT],
          bucketWidth,
        }),
      ]);
      if (mine !== latest) {
        return;
      }
      charts.dataset["range"] = chosen.label;
      const buckets = overall.groups.map(bucketOf);
      const latency = (pick: (group: LogGroup) => number): (number | null)[] =>
        overall.groups.map((group) => (group.latencyCount > 0n ? pick(group) : null));
      const requests = pivot(perVersion.groups, bucketOf, versionAndSlot, (group) => Number(group.count));
      const tokens = pivot(perVersion.groups, bucketOf, versionAndSlot, (group) => Number(group.inputTokens + group.outputTokens));
      const errors = pivot(perVersion.groups, bucketOf, versionAndSlot, (group) => group.errorRate * 100);
      const p95 = pivot(
        perVersion.groups.filter((group) => group.latencyCount > 0n),
        bucketOf,
        versionAndSlot,
        (group) => durationSeconds(group.latencyP95) * 1000,
      );
      const cost = pivot(perVersion.groups, bucketOf, versionAndSlot, (group) => Number(group.cost?.micros ?? 0n) / 1e6);
      replace(
        charts,
        timeChart("Requests by model version and slot", requests.buckets, requests.series, span),
        timeChart(
          "Error rate (inference and routed calls)",
          buckets,
          [{ label: "error rate", values: overall.groups.map((group) => group.errorRate * 100) }],
          span,
          (value) => `${value.toFixed(1)}%`,
        ),
        timeChart(
          "Latency percentiles",
          buckets,
          [
            { label: "p50", values: latency((group) => durationSeconds(group.latencyP50) * 1000) },
            { label: "p95", values: latency((group) => durationSeconds(group.latencyP95) * 1000) },
            { label: "p99", values: latency((group) => durationSeconds(group.latencyP99) * 1000) },
          ],
          span,
          (value) => `${value.toFixed(0)} ms`,
        ),
        timeChart("Inference error rate by model version and slot", errors.buckets, errors.series, span, (value) => `${value.toFixed(1)}%`),
        timeChart("p95 latency by model version and slot", p95.buckets, p95.series, span, (value) => `${value.toFixed(0)} ms`),
        timeChart("Tokens by model version and slot", tokens.buckets, tokens.series, span),
        timeChart("Cost (USD) by model version and slot", cost.buckets, cost.series, span, (value) => `$${value.toFixed(4)}`),
      );
    } catch (error) {
      if (mine === latest) {
        replace(charts, errorBox(error));
      }
    }
  }

  range.addEventListener("change", () => void load());
  void load();
  return section("Traffic", field("Range", range), charts);
}

export const logsPage: Page = (root) => {
  const filter = h("input", { type: "search", name: "filter", spellcheck: "false", autocomplete: "off" });
  const tail = tailSection(filter);
  replace(root, h("h1", {}, "Logs"), chartsSection(), querySection(filter), tail.element);
  return tail.stop;
};

// Time-series charts with uPlot (bundled, small), each with its figures as a table beside it for screen
// readers and for anyone who wants the numbers: the chart is a picture of the table, never the only copy.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { h, table, uniqueId } from "./dom";

/** One line of a chart: its name and a value per bucket (null where the bucket has none). */
export interface Series {
  label: string;
  values: (number | null)[];
}

/** Colours that keep a 3:1 contrast against white and stay apart for the common colour-blindnesses. */
const PALETTE = ["#0b5cad", "#b2411b", "#1a7f37", "#8a3ffc", "#a15c00", "#005f73", "#c0267b", "#4d4d4d"];

/** A chart's rows grouped into series by `key`, over the union of their buckets (seconds since the epoch). */
export function pivot<Row>(
  rows: Row[],
  bucket: (row: Row) => number,
  key: (row: Row) => string,
  value: (row: Row) => number,
): { buckets: number[]; series: Series[] } {
  const buckets = [...new Set(rows.map(bucket))].sort((a, b) => a - b);
  const index = new Map(buckets.map((start, position) => [start, position]));
  const byKey = new Map<string, (number | null)[]>();
  for (const row of rows) {
    const name = key(row);
    let values = byKey.get(name);
    if (!values) {
      values = buckets.map(() => null);
      byKey.set(name, values);
    }
    const position = index.get(bucket(row)) ?? 0;
    values[position] = (values[position] ?? 0) + value(row);
  }
  const series = [...byKey.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([label, values]) => ({ label, values }));
  return { buckets, series };
}

function bucketLabel(seconds: number): string {
  return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ");
}

/**
 * A titled line chart of `series` over `buckets` (seconds since the epoch), with the same figures in a
 * table; `format` writes a value for the table and the axis, and `span` (seconds since the epoch) is the
 * time axis's range, the range asked for, so a lone bucket sits where it belongs.
 */
export function timeChart(
  title: string,
  buckets: number[],
  series: Series[],
  span: [number, number],
  format: (value: number) => string = (value) => value.toLocaleString("en-US"),
): HTMLElement {
  const titleId = uniqueId("chart");
  const plot = h("div", { class: "plot", role: "img", "aria-labelledby": titleId });
  const figure = h(
    "figure",
    { class: "chart", "data-chart": title },
    h("figcaption", { id: titleId }, title),
    plot,
    h(
      "details",
      {},
      h("summary", {}, `${title}: the figures`),
      table(
        title,
        ["Bucket (UTC)", ...series.map((line) => line.label)],
        buckets.map((start, position) => [
          bucketLabel(start),
          ...series.map((line) => {
            const value = line.values[position];
            return value === null || value === undefined ? "—" : format(value);
          }),
        ]),
        "No data in this range.",
      ),
    ),
  );
  if (buckets.length === 0) {
    plot.append(h("p", { class: "empty" }, "No data in this range."));
    return figure;
  }
  const draw = (): void => {
    const width = Math.max(plot.clientWidth, 260);
    new uPlot(
      {
        width,
        height: 220,
        series: [
          {},
          ...series.map((line, position) => ({
            label: line.label,
            stroke: PALETTE[position % PALETTE.length] ?? "#000",
            width: 2,
            points: { show: buckets.length < 40 },
            value: (_plot: uPlot, value: number | null) => (value === null ? "—" : format(value)),
          })),
        ],
        scales: { x: { time: true, range: () => span } },
        axes: [{}, { values: (_plot: uPlot, ticks: number[]) => ticks.map(format), size: 70 }],
        legend: { show: true },
      },
      [buckets, ...series.map((line) => line.values)],
      plot,
    );
  };
  // uPlot measures its container: draw once the figure is in the page.
  requestAnimationFrame(draw);
  return figure;
}

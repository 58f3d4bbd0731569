// How values of the contract read on screen: times, durations, money in micro-units, basis points, enums.
import { timestampDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";

/** "2026-12-06 08:12:03 UTC", or "—" when unset. */
export function formatTime(timestamp: Timestamp | undefined): string {
  if (!timestamp) {
    return "—";
  }
  return timestampDate(timestamp).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** Seconds of a Duration as a number (fractional). */
export function durationSeconds(duration: Duration | undefined): number {
  if (!duration) {
    return 0;
  }
  return Number(duration.seconds) + duration.nanos / 1e9;
}

/** "1.5 ms", "2.1 s", "3 min". */
export function formatDuration(duration: Duration | undefined): string {
  if (!duration) {
    return "—";
  }
  const seconds = durationSeconds(duration);
  if (seconds < 1) {
    return `${(seconds * 1000).toFixed(1)} ms`;
  }
  if (seconds < 120) {
    return `${seconds.toFixed(1)} s`;
  }
  return `${(seconds / 60).toFixed(0)} min`;
}

/** Integer micro-units of a currency as "1.25 USD" (exact: no float goes through the integer part). */
export function formatMicros(micros: bigint, currency: string): string {
  const negative = micros < 0n;
  const absolute = negative ? -micros : micros;
  const units = absolute / 1_000_000n;
  const fraction = (absolute % 1_000_000n).toString().padStart(6, "0").replace(/0{1,4}$/, "");
  return `${negative ? "-" : ""}${units}.${fraction.padEnd(2, "0")} ${currency}`;
}

/** Basis points as a percentage: 2500 -> "25%", 125 -> "1.25%". */
export function formatWeight(basisPoints: number): string {
  return `${(basisPoints / 100).toFixed(2).replace(/\.?0+$/, "")}%`;
}

/** A proto enum value's name for people: "ROLLING_BACK" -> "rolling back". */
export function enumLabel(names: Record<number, string>, value: number): string {
  const name = names[value] ?? `${value}`;
  return name.toLowerCase().replaceAll("_", " ");
}

/** A whole number with thousands separators. */
export function formatCount(value: bigint | number): string {
  return value.toLocaleString("en-US");
}

/** The last part of a resource name: "models/chat/versions/3" -> "3". */
export function lastSegment(name: string): string {
  return name.slice(name.lastIndexOf("/") + 1);
}

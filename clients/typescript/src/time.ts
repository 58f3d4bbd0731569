// Conversions between the protobuf well-known types and JavaScript's: Date for Timestamp, milliseconds for
// Duration, and int64 values (bigint on the wire types) from numbers or decimal strings.

import { protoInt64 } from "@bufbuild/protobuf";
import {
  durationFromMs,
  durationMs,
  timestampDate,
  timestampFromDate,
  timestampFromMs,
  timestampMs,
  type Duration,
  type Timestamp,
} from "@bufbuild/protobuf/wkt";

export { durationFromMs, durationMs, timestampDate, timestampFromDate, timestampFromMs, timestampMs };
export type { Duration, Timestamp };

/** A Duration of `seconds` (fractions allowed), e.g. for a rollout step's bake time. */
export function durationFromSeconds(seconds: number): Duration {
  return durationFromMs(seconds * 1000);
}

/** An int64 field's value from a number (a safe integer) or a decimal string, e.g. "10000000". */
export function int64(value: bigint | number | string): bigint {
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new RangeError(`${value} is not a safe integer; pass a bigint or a decimal string`);
  }
  return protoInt64.parse(value);
}

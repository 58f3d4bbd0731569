// A line diff of two texts (longest common subsequence), for comparing policy revisions.

export interface DiffLine {
  kind: "same" | "added" | "removed";
  text: string;
}

/** Past this many lines on either side the diff is not computed line by line (its table would be huge). */
const MAX_LINES = 3000;

/** The lines of `after` against `before`: kept lines once, removed and added lines where they differ. */
export function lineDiff(before: string[], after: string[]): DiffLine[] {
  if (before.length > MAX_LINES || after.length > MAX_LINES) {
    return [
      ...before.map((text): DiffLine => ({ kind: "removed", text })),
      ...after.map((text): DiffLine => ({ kind: "added", text })),
    ];
  }
  const columns = after.length + 1;
  // common[i * columns + j] is the length of the longest common subsequence of before[i:] and after[j:].
  const common = new Uint16Array((before.length + 1) * columns);
  for (let i = before.length - 1; i >= 0; i -= 1) {
    for (let j = after.length - 1; j >= 0; j -= 1) {
      common[i * columns + j] =
        before[i] === after[j]
          ? (common[(i + 1) * columns + j + 1] ?? 0) + 1
          : Math.max(common[(i + 1) * columns + j] ?? 0, common[i * columns + j + 1] ?? 0);
    }
  }
  const lines: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < before.length && j < after.length) {
    if (before[i] === after[j]) {
      lines.push({ kind: "same", text: before[i] ?? "" });
      i += 1;
      j += 1;
    } else if ((common[(i + 1) * columns + j] ?? 0) >= (common[i * columns + j + 1] ?? 0)) {
      lines.push({ kind: "removed", text: before[i] ?? "" });
      i += 1;
    } else {
      lines.push({ kind: "added", text: after[j] ?? "" });
      j += 1;
    }
  }
  for (; i < before.length; i += 1) {
    lines.push({ kind: "removed", text: before[i] ?? "" });
  }
  for (; j < after.length; j += 1) {
    lines.push({ kind: "added", text: after[j] ?? "" });
  }
  return lines;
}

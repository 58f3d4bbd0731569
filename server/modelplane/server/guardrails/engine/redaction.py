"""Masked excerpts of violations and the redacted text of a REDACT decision."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

EXCERPT_CONTEXT = 18
EXCERPT_MATCH = 24
_BLANKS = str.maketrans("\n\r\t", "   ")


def merge_spans(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint spans covering the same characters as `spans`."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


def excerpt(text: str, start: int, end: int, keep_last: int, masked: Sequence[tuple[int, int]]) -> str:
    """A window of `text` around [start, end) with that span masked (its last `keep_last` characters kept
    when the span is short) and every span of `masked` (sorted and disjoint, see merge_spans) in the
    window masked as well."""
    if end <= start:
        return ""
    before_start = max(0, start - EXCERPT_CONTEXT)
    after_end = min(len(text), end + EXCERPT_CONTEXT)
    window = list(text[before_start:after_end])
    first = max(0, bisect.bisect_right(masked, (before_start, len(text) + 1)) - 1)
    for span_start, span_end in masked[first:]:
        if span_start >= after_end:
            break
        low, high = max(span_start, before_start), min(span_end, after_end)
        for index in range(low - before_start, high - before_start):
            window[index] = "*"
    length = end - start
    if length <= EXCERPT_MATCH:
        kept = text[end - keep_last : end] if 0 < keep_last < length else ""
        match = "*" * (length - len(kept)) + kept
    else:
        match = "*" * EXCERPT_MATCH + "..."
    before = "".join(window[: start - before_start])
    after = "".join(window[end - before_start :])
    return (before + match + after).translate(_BLANKS)


def redact(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    """`text` with each (start, end, category) span replaced by "[REDACTED:<category>]"; spans are sorted
    by start, overlapping ones merge and keep the first one's category; empty spans change nothing."""
    parts: list[str] = []
    position = 0
    current: tuple[int, int, str] | None = None
    for start, end, category in spans:
        if end <= start:
            continue
        if current is not None and start < current[1]:
            current = (current[0], max(current[1], end), current[2])
            continue
        if current is not None:
            parts.append(text[position : current[0]])
            parts.append(f"[REDACTED:{current[2]}]")
            position = current[1]
        current = (start, end, category)
    if current is not None:
        parts.append(text[position : current[0]])
        parts.append(f"[REDACTED:{current[2]}]")
        position = current[1]
    parts.append(text[position:])
    return "".join(parts)

"""Masked excerpts of violations and the redacted text of a REDACT decision."""

from __future__ import annotations

from collections.abc import Sequence

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


def mask(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` with every character of `spans` (sorted and disjoint, see merge_spans) replaced by '*'."""
    parts: list[str] = []
    position = 0
    for start, end in spans:
        parts.append(text[position:start])
        parts.append("*" * (end - start))
        position = end
    if not parts:
        return text
    parts.append(text[position:])
    return "".join(parts)


def excerpt(text: str, masked: str, start: int, end: int, keep_last: int, context: int = 0) -> str:
    """[start, end) of `text` masked (its last `keep_last` characters kept when the span is short), with
    `context` characters on each side taken from `masked`, `text` with the spans of the listed violations
    masked (see mask). With no context, nothing of the text outside the match is shown."""
    if end <= start:
        return ""
    length = end - start
    if length <= EXCERPT_MATCH:
        kept = text[end - keep_last : end] if 0 < keep_last < length else ""
        match = "*" * (length - len(kept)) + kept
    else:
        match = "*" * EXCERPT_MATCH + "..."
    if not context:
        return match
    window = masked[max(0, start - context) : start] + match + masked[end : end + context]
    # translate() reads a non-ASCII text one dictionary lookup per character; most windows need none.
    if "\n" in window or "\r" in window or "\t" in window:
        return window.translate(_BLANKS)
    return window


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

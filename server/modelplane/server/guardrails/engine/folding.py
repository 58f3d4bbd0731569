"""Long texts in slices: case folding with offsets kept, and the banned-terms automaton's walk.

str.lower and pyahocorasick hold the GIL for all their work; between slices the interpreter can hand the
GIL to a thread waiting for it (the server's event loop, while a worker thread checks a text), and a check
can look at its deadline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# A long text is case-folded and walked by the automaton in slices of about this many characters.
SLICE_CHARS = 1 << 16
# Where a long text may be cut for lower-casing: between two characters that are neither a capital sigma
# nor case-ignorable (see _lower).
_SAFE_CUT = re.compile(r"[A-Za-z0-9 \n]{2}")


def fold(text: str) -> str:
    """A lower-case copy with the same length, so offsets in it are offsets in `text`."""
    folded = _lower(text)
    if len(folded) == len(text):
        return folded
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _lower(text: str) -> str:
    """text.lower(), a slice at a time for a long text.

    str.lower maps each character on its own but a capital sigma, which becomes final or not after a look
    at the nearest characters on both sides that are not case-ignorable ('.', ':', combining marks, ...).
    A cut between two ASCII letters, digits, spaces or newlines (neither sigma nor case-ignorable) stops
    those looks on the same characters as in the whole text, so the slices lower to the same characters."""
    if len(text) <= SLICE_CHARS:
        return text.lower()
    parts: list[str] = []
    begin = 0
    while begin < len(text):
        found = _SAFE_CUT.search(text, begin + SLICE_CHARS)
        cut = len(text) if found is None else found.start() + 1
        parts.append(text[begin:cut].lower())
        begin = cut
    return "".join(parts)


def automaton_matches(automaton: Any, folded: str, scan_from: int, longest: int) -> Iterator[Any]:
    """What `automaton.iter(folded, scan_from)` yields, in the same order, walked in slices.

    A slice starts `longest - 1` characters before the previous one stopped and reports only keys
    ending past that stop. From there on the slice's automaton state is the whole walk's state: a state
    is the longest suffix of the text read that begins a key, at most `longest` characters, and the slice
    has read at least that many. So each key ends in exactly one slice and is reported as before."""
    size = len(folded)
    # Each slice must move past the last: it starts `longest - 1` characters back.
    slice_chars = max(SLICE_CHARS, 2 * longest)
    if size - scan_from <= slice_chars:
        yield from automaton.iter(folded, scan_from)
        return
    begin = reported_to = scan_from
    while True:
        stop = min(size, begin + slice_chars)
        # The slice is copied: pyahocorasick's own start argument costs time in proportion to the start.
        for last, value in automaton.iter(folded[begin:stop]):
            if last + begin >= reported_to:
                yield last + begin, value
        if stop == size:
            return
        reported_to = stop
        begin = stop - (longest - 1)

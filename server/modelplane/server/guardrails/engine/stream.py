"""StreamCheck: checks a text that arrives in chunks, reporting a BLOCK as soon as it is certain.

Each chunk is scanned together with a bounded tail of the text before it, so a match that spans two
chunks is found and the work per chunk does not grow with the text. A match counts before the end only
when no later text can undo it: it ends at least two characters before the current end (so the word
boundary and separator after it are known), it starts past the tail's left margin (so its left context
is known), and its rule is one whose matches later text cannot remove (banned terms, expressions, the
token-based PII detectors, a maximum length). `finish()` checks the whole text once, so its result is
always exactly `check()` of the same text, whatever the chunking.
"""

from __future__ import annotations

from modelplane.server.guardrails.engine.rules import (
    MAX_LISTED,
    MAX_LISTED_PER_RULE,
    BannedTerms,
    CheckResult,
    CheckTimeout,
    Decision,
    Length,
    Pattern,
    Pii,
    StreamProgress,
    Violation,
)
from modelplane.server.guardrails.engine.scan import HIT_ORDER, CompiledPolicy, check_size

# Characters of earlier text scanned again with each chunk; matches longer than the tail minus the margin
# are only found by finish().
LEFT_MARGIN = 64
MIN_TAIL = 1024
# A match must end this many characters before the end of the text seen so far to be settled.
SETTLE = 2


class StreamCheck:
    """One streamed text; feed() (or append() and scan()) its chunks in order, then finish(). Not safe for
    concurrent use, but for a scan() that runs on after its caller stopped waiting for it."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self._policy = policy
        self._chunks: list[str] = []
        self._length = 0
        self._tail = ""
        self._tail_size = max(MIN_TAIL, LEFT_MARGIN + 2 * policy.longest_term + SETTLE)
        self._seen: set[tuple[int, int, int]] = set()
        self._length_reported: set[int] = set()
        self._so_far: list[Violation] = []
        self._per_rule: dict[str, int] = {}
        # Set once a chunk's scan ran out of time: later chunks are only kept for finish().
        self._gave_up = False
        self._certain: Decision | None = None
        self._finished = False

    def feed(self, chunk: str, deadline: float | None = None) -> StreamProgress:
        """Adds the next chunk and scans it: append(), then scan() of what append() returned."""
        region = self.append(chunk)
        return self.progress() if region is None else self.scan(*region, deadline)

    def append(self, chunk: str) -> tuple[str, int] | None:
        """Keeps the next chunk (cheap: no rule runs); raises InvalidArgument once the text passes
        MAX_TEXT_CHARS. Returns the region to scan for early violations and its offset in the whole text,
        or None when nothing is to be scanned."""
        if self._finished:
            raise RuntimeError("the stream check is finished")
        check_size(self._length + len(chunk))
        self._chunks.append(chunk)
        previous = self._length
        self._length += len(chunk)
        region = self._tail + chunk
        self._tail = region[-self._tail_size :]
        self._check_lengths()
        if not chunk or self._certain is not None or self._gave_up:
            return None
        return region, previous + len(chunk) - len(region)

    def scan(self, region: str, base: int, deadline: float | None = None) -> StreamProgress:
        """Scans a region append() returned; a scan that passes `deadline` stops, and so does early
        scanning for the rest of the stream (finish() still checks the whole text)."""
        try:
            self._scan_new_text(region, base, deadline)
        except CheckTimeout:
            self._gave_up = True
        return self.progress()

    def stop_scanning(self) -> None:
        """No later chunk is scanned before finish(): the stream's time for early scanning is spent."""
        self._gave_up = True

    def progress(self) -> StreamProgress:
        return StreamProgress(tuple(self._so_far), self._certain)

    @property
    def text(self) -> str:
        """The whole text received so far (one string once finished)."""
        return "".join(self._chunks)

    def finish(self, deadline: float | None = None) -> CheckResult:
        """The result of the whole text: always equal to `check()` of the joined chunks."""
        self._finished = True
        text = "".join(self._chunks)
        self._chunks = [text]
        return self._policy.check(text, deadline)

    def _scan_new_text(self, region: str, base: int, deadline: float | None) -> None:
        policy = self._policy
        if not policy.has_local_rules:
            return
        scan_from = LEFT_MARGIN if base > 0 else 0
        hits = policy.scan(region, scan_from, deadline).hits
        limit = len(region) - SETTLE
        masked = None
        for hit in sorted(hits, key=HIT_ORDER):
            key = (hit.rule, base + hit.start, base + hit.end)
            kind = policy.rules[hit.rule].kind
            if (
                hit.end > limit
                or not hit.early
                or key in self._seen
                or not isinstance(kind, BannedTerms | Pattern | Pii)
            ):
                continue
            self._seen.add(key)
            if masked is None:
                masked = policy.masked(region, hits)
            self._add(policy.violation(region, hit, masked, base))

    def _check_lengths(self) -> None:
        for index, rule in enumerate(self._policy.rules):
            kind = rule.kind
            if (
                isinstance(kind, Length)
                and kind.max_chars
                and self._length > kind.max_chars
                and index not in self._length_reported
            ):
                self._length_reported.add(index)
                self._add(
                    Violation(
                        rule_id=rule.id,
                        severity=rule.severity,
                        category=rule.category,
                        start=kind.max_chars,
                        end=self._length,
                        excerpt="",
                        matched_text="",
                        decision=self._policy.decisions[rule.severity],
                    )
                )

    def _add(self, violation: Violation) -> None:
        if violation.decision == Decision.BLOCK:
            self._certain = Decision.BLOCK
        listed = self._per_rule.get(violation.rule_id, 0)
        if listed < MAX_LISTED_PER_RULE and len(self._so_far) < MAX_LISTED:
            self._per_rule[violation.rule_id] = listed + 1
            self._so_far.append(violation)

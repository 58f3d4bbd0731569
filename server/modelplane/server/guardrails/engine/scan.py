"""CompiledPolicy: checks a text against a compiled policy in one scan, and turns the matches into a result.

The scan: one RE2 set holds every user expression, every PII detector and a prefilter of all banned terms,
so the text is read once by a DFA; only the patterns the set reports run again to find their spans, and
validators (Luhn, mod-97, ...) run on those candidates only. Banned terms of every rule live in one
Aho-Corasick automaton over a case-folded copy of the text; it runs when the prefilter saw a term (or
always, for non-ASCII text, where the automaton's folding is the reference).

Every loop looks at the check's deadline and raises CheckTimeout past it. What a check keeps is bounded
whatever the text: at most MAX_LISTED_PER_RULE matches of each rule (the others are counted), at most
MAX_REDACTED_SPANS spans to redact.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from modelplane.server.errors import InvalidArgument
from modelplane.server.guardrails.engine.detectors import Detector
from modelplane.server.guardrails.engine.folding import automaton_matches, fold
from modelplane.server.guardrails.engine.redaction import excerpt, mask, merge_spans, redact
from modelplane.server.guardrails.engine.rules import (
    MAX_LISTED,
    MAX_LISTED_PER_RULE,
    MAX_REDACTED_BYTES,
    MAX_REDACTED_SPANS,
    MAX_TEXT_CHARS,
    BannedTerms,
    CheckResult,
    CheckTimeout,
    Decision,
    Length,
    Pattern,
    Pii,
    RequiredPattern,
    RuleSpec,
    Severity,
    Violation,
)
from modelplane.server.guardrails.engine.schema import JsonCheck

# Matches (or automaton reports) between two looks at the clock.
_CLOCK_EVERY = 256


class Hit(NamedTuple):
    """A match before it becomes a Violation: rule position in the policy, character span, how many
    trailing characters an excerpt keeps, whether a stream may trust it before the text is complete."""

    start: int
    rule: int
    end: int
    keep_last: int
    early: bool


# Hits are reported in this order: by start, then rule position, then end.
HIT_ORDER = operator.itemgetter(0, 1, 2)
# Spans to redact, (start, end, rule), in the same order.
_REDACT_ORDER = operator.itemgetter(0, 2, 1)


@dataclass(frozen=True)
class TermEntry:
    rule: int
    term: str
    case_sensitive: bool
    whole_words: bool


@dataclass(frozen=True)
class SetEntry:
    """What one pattern of the set stands for: a user expression of `rules`, a detector shared by
    `rules`, a required pattern, or the banned-terms prefilter."""

    role: str  # "regex", "pii", "required" or "terms"
    rules: tuple[int, ...]
    regex: Any = None  # a re2 expression on bytes, compiled without capturing groups
    detector: Detector | None = None


@dataclass
class Scan:
    """What a scan found: the first hits of each rule, how many each rule had in all, the rules whose
    required pattern is present, and the spans of REDACT rules (to MAX_REDACTED_SPANS + 1)."""

    hits: list[Hit] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    present: set[int] = field(default_factory=set)
    redact: list[tuple[int, int, int]] = field(default_factory=list)

    def add(self, start: int, rule: int, end: int, keep_last: int, early: bool, redacts: bool) -> None:
        count = self.counts[rule] = self.counts.get(rule, 0) + 1
        if count <= MAX_LISTED_PER_RULE:
            self.hits.append(Hit(start, rule, end, keep_last, early))
        if redacts and len(self.redact) <= MAX_REDACTED_SPANS:
            self.redact.append((start, end, rule))


def _clock(deadline: float | None) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise CheckTimeout


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class _CharOffsets:
    """Byte offsets of UTF-8 `encoded` to character offsets, asked in increasing order (one pass)."""

    def __init__(self, encoded: bytes) -> None:
        self._encoded = encoded
        self._byte = 0
        self._char = 0

    def __call__(self, offset: int) -> int:
        if offset < self._byte:
            self._byte = self._char = 0
        self._char += len(self._encoded[self._byte : offset].decode())
        self._byte = offset
        return self._char


class CompiledPolicy:
    """A policy ready to check texts. Immutable once built: `check` is pure, thread-safe and reentrant."""

    def __init__(
        self,
        rules: tuple[RuleSpec, ...],
        decisions: Mapping[Severity, Decision],
        entries: tuple[SetEntry, ...],
        pattern_set: Any,
        automaton: Any,
        json_checks: Mapping[int, JsonCheck],
        longest_term: int,
        excerpt_context: int = 0,
    ) -> None:
        self.rules = rules
        self.decisions: Mapping[Severity, Decision] = dict(decisions)
        self.excerpt_context = excerpt_context
        self._set_match = None if pattern_set is None else pattern_set.Match
        # Per pattern of the set, what the scan needs in the order it needs it: role, rules, RE2 object,
        # bytes of which each match holds one, validator, kept characters, early.
        self._plan = tuple(
            (entry.role, entry.rules, entry.regex, b"", None, 0, True)
            if entry.detector is None
            else (
                entry.role,
                entry.rules,
                entry.regex,
                entry.detector.needs,
                entry.detector.validator,
                entry.detector.keep_last,
                entry.detector.early,
            )
            for entry in entries
        )
        self._automaton = automaton
        self._terms_prefiltered = any(entry.role == "terms" for entry in entries)
        self._json = dict(json_checks)
        self._length_rules = tuple(
            (index, rule.kind) for index, rule in enumerate(rules) if isinstance(rule.kind, Length)
        )
        self._required = tuple(
            index for index, rule in enumerate(rules) if isinstance(rule.kind, RequiredPattern)
        )
        self._whole_text_rules = bool(self._length_rules or self._json or self._required)
        # What a violation of each rule carries, and whether its matches are local (masked in excerpts).
        self._rule_facts = tuple(
            (
                rule.id,
                rule.severity,
                rule.category,
                self.decisions[rule.severity],
                isinstance(rule.kind, BannedTerms | Pattern | Pii),
            )
            for rule in rules
        )
        self._redacts = tuple(self.decisions[rule.severity] is Decision.REDACT for rule in rules)
        self.has_local_rules = automaton is not None or any(e.role in ("regex", "pii") for e in entries)
        self.longest_term = longest_term

    def check(self, text: str, deadline: float | None = None) -> CheckResult:
        """Checks `text` (at most MAX_TEXT_CHARS characters) against every rule; CheckTimeout once
        `deadline` (a time.perf_counter() value) passes."""
        check_size(len(text))
        found = self.scan(text, 0, deadline)
        if self._whole_text_rules:
            self._whole_text_hits(text, found, deadline)
        return self.result(text, found, deadline)

    def scan(self, text: str, scan_from: int, deadline: float | None = None) -> Scan:
        """The local matches (terms, expressions, PII) starting at or after `scan_from`, and the rules
        whose required pattern is present; text before `scan_from` is context only."""
        try:
            encoded = text.encode()
        except UnicodeEncodeError:
            raise InvalidArgument.field("text", "is not valid Unicode text") from None
        ascii_only = len(encoded) == len(text)
        found = Scan()
        run_terms = self._automaton is not None and (not ascii_only or not self._terms_prefiltered)
        _clock(deadline)
        reported = () if self._set_match is None else self._set_match(encoded)
        if reported:
            plan = self._plan
            redacts = self._redacts
            size = len(encoded)
            byte_from = scan_from if ascii_only else len(text[:scan_from].encode())
            last_needed: dict[bytes, int] = {}
            for index in reported:
                role, rules, regexp, needs, validator, keep_last, early = plan[index]
                if role == "terms":
                    run_terms = True
                    continue
                if role == "required":
                    found.present.update(rules)
                    continue
                # Every match holds one of `needs`: a search starting past the last of them cannot
                # succeed, and skipping it spares the last search of each pattern, the one that reads the
                # rest of the text to find nothing.
                last = size
                if needs:
                    known = last_needed.get(needs)
                    if known is None:
                        known = last_needed[needs] = max(map(encoded.rfind, needs))
                    last = known
                if byte_from > last:
                    continue
                offsets = None if ascii_only else _CharOffsets(encoded)
                seen = 0
                for match in regexp.finditer(encoded, byte_from, size):
                    seen += 1
                    if seen % _CLOCK_EVERY == 0:
                        _clock(deadline)
                    start, end = match.span()
                    if end > start:
                        if offsets is not None:
                            start, end = offsets(start), offsets(end)
                        if validator is not None:
                            valid = validator(text[start:end])
                            if valid is None:
                                if match.end() > last:
                                    break
                                continue
                            start, end = start + valid[0], start + valid[1]
                        for rule in rules:
                            found.add(start, rule, end, keep_last, early, redacts[rule])
                    if match.end() > last:
                        break
                _clock(deadline)
        if run_terms:
            self._term_hits(text, scan_from, found, deadline)
        return found

    def _term_hits(self, text: str, scan_from: int, found: Scan, deadline: float | None) -> None:
        """Each rule's terms, leftmost-longest without overlaps within the rule, like an expression scan.

        The automaton reports matches by end; a match ending at `end` starts at `end - longest_term` or
        later, so per rule only the starts of the last `longest_term` characters are still open, and memory
        stays bounded whatever the number of matches."""
        folded = fold(text)
        longest_term = self.longest_term
        # Per rule: the longest end at each open start, and where its last chosen match ended.
        open_starts: dict[int, dict[int, int]] = {}
        covered: dict[int, int] = {}
        redacts = self._redacts

        def settle(rule: int, before: int) -> None:
            ends = open_starts[rule]
            for start in sorted(s for s in ends if s < before):
                end = ends.pop(start)
                if start >= covered.get(rule, -1):
                    found.add(start, rule, end, 0, True, redacts[rule])
                    covered[rule] = end

        length = len(text)
        seen = 0
        for last, (key_length, entries) in automaton_matches(
            self._automaton, folded, scan_from, longest_term
        ):
            seen += 1
            if seen % _CLOCK_EVERY == 0:
                _clock(deadline)
            start, end = last + 1 - key_length, last + 1
            for entry in entries:
                if entry.case_sensitive and text[start:end] != entry.term:
                    continue
                if entry.whole_words and (
                    (start > 0 and _word_char(entry.term[0]) and _word_char(text[start - 1]))
                    or (end < length and _word_char(entry.term[-1]) and _word_char(text[end]))
                ):
                    continue
                ends = open_starts.setdefault(entry.rule, {})
                if ends.get(start, -1) < end:
                    ends[start] = end
                if len(ends) > 4 * longest_term:
                    settle(entry.rule, end - longest_term)
        for rule in open_starts:
            _clock(deadline)
            settle(rule, length + 1)

    def _whole_text_hits(self, text: str, found: Scan, deadline: float | None) -> None:
        length = len(text)
        for index, kind in self._length_rules:
            if kind.max_chars and length > kind.max_chars:
                found.add(kind.max_chars, index, length, 0, True, self._redacts[index])
            elif kind.min_chars and length < kind.min_chars:
                found.add(0, index, length, 0, False, self._redacts[index])
        for index, json_check in self._json.items():
            if json_check.broken(text, deadline):
                found.add(0, index, length, 0, False, self._redacts[index])
        for index in self._required:
            if index not in found.present:
                found.add(0, index, 0, 0, False, False)

    def masked(self, text: str, hits: list[Hit]) -> str:
        """`text` with the spans of the local hits masked, for excerpts with context; `text` without."""
        if not self.excerpt_context:
            return text
        facts = self._rule_facts
        return mask(text, merge_spans([(hit.start, hit.end) for hit in hits if facts[hit.rule][4]]))

    def violation(self, text: str, hit: Hit, masked: str, offset: int = 0) -> Violation:
        """The Violation of `hit` found in `text`, which starts at `offset` of the whole text; `masked` is
        `masked(text, hits)`, for the excerpt."""
        start, rule, end, keep_last, _ = hit
        rule_id, severity, category, decision, local = self._rule_facts[rule]
        return Violation(
            rule_id,
            severity,
            category,
            start + offset,
            end + offset,
            excerpt(text, masked, start, end, keep_last, self.excerpt_context) if local else "",
            text[start:end],
            decision,
        )

    def result(self, text: str, found: Scan, deadline: float | None = None) -> CheckResult:
        if not found.counts:
            return CheckResult(Decision.ALLOW, (), None, None)
        hits = sorted(found.hits, key=HIT_ORDER)[:MAX_LISTED]
        facts = self._rule_facts
        decision = max(facts[rule][3] for rule in found.counts)
        highest = max(facts[rule][1] for rule in found.counts)
        masked = self.masked(text, hits)
        violations = tuple(self.violation(text, hit, masked) for hit in hits)
        listed: dict[int, int] = {}
        for hit in hits:
            listed[hit.rule] = listed.get(hit.rule, 0) + 1
        omitted = {
            facts[rule][0]: count - listed.get(rule, 0)
            for rule, count in found.counts.items()
            if count > listed.get(rule, 0)
        }
        redacted = None
        too_large = False
        if decision is Decision.REDACT:
            _clock(deadline)
            if len(found.redact) > MAX_REDACTED_SPANS:
                too_large = True
            else:
                ordered = sorted(found.redact, key=_REDACT_ORDER)
                redacted = redact(text, [(start, end, facts[rule][2]) for start, end, rule in ordered])
                too_large = len(redacted.encode()) > MAX_REDACTED_BYTES
            if too_large:
                decision, redacted = Decision.BLOCK, None
        return CheckResult(
            decision,
            violations,
            redacted,
            highest,
            omitted,
            too_large,
        )


def check_size(length: int) -> None:
    if length > MAX_TEXT_CHARS:
        raise InvalidArgument.field(
            "text", f"is {length} characters long; at most {MAX_TEXT_CHARS} are checked"
        )

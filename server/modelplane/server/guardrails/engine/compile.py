"""compile_policy: turns rule specs into a CompiledPolicy that checks a text in one scan.

The scan: one RE2 set holds every user expression, every PII detector and a prefilter of all banned
terms, so the text is read once by a DFA; only the patterns the set reports run again to find their
spans, and validators (Luhn, mod-97, ...) run on those candidates only. Banned terms of every rule live in
one Aho-Corasick automaton over a case-folded copy of the text; it runs when the prefilter saw a term (or
always, for non-ASCII text, where the automaton's folding is the reference).

A check of a short text costs microseconds, so the scan calls the RE2 extension (`re2._re2`) directly
rather than through the `re2` module's `re`-like wrapper, whose generators, match objects and offset
decoding cost more than the matching itself.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import ahocorasick  # type: ignore[import-not-found]  # no typing information is published
import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import re2  # type: ignore[import-untyped]  # no typing information is published

from modelplane.server.errors import FieldViolation, InvalidArgument
from modelplane.server.guardrails.engine.detectors import DETECTORS, Detector
from modelplane.server.guardrails.engine.redaction import excerpt, mask, merge_spans, redact
from modelplane.server.guardrails.engine.rules import (
    DEFAULT_DECISIONS,
    MAX_PATTERN_CHARS,
    MAX_REGEX_MEMORY,
    MAX_RULES,
    MAX_SCHEMA_CHARS,
    MAX_TERM_CHARS,
    MAX_TERMS,
    MAX_TEXT_CHARS,
    BannedTerms,
    CheckResult,
    Decision,
    Json,
    Length,
    Pattern,
    Pii,
    PiiKind,
    RequiredPattern,
    RuleSpec,
    Severity,
    Violation,
)

if TYPE_CHECKING:
    from modelplane.server.guardrails.engine.stream import StreamCheck

_CATEGORY = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# The set's DFA cache grows with the text; a set has no slower fallback, so it gets room.
_SET_MEMORY = 512 << 20
# Texts around every empty-width context RE2 knows (text edges, word and non-word characters, line
# ends): a pattern that matches empty in none of them cannot match empty anywhere.
_EMPTY_PROBES = tuple(a + b for a in ("", "a", " ", "\n") for b in ("", "a", " ", "\n"))
_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED
# A long text is case-folded and walked by the automaton in slices of about this many characters: str.lower
# and pyahocorasick hold the GIL for all their work, and between slices the interpreter can hand the GIL to
# a thread waiting for it (the server's event loop, when a large text is checked on a worker thread).
SLICE_CHARS = 1 << 16
# Where a long text may be cut for lower-casing: between two characters that are neither a capital sigma
# nor case-ignorable (see _lower).
_SAFE_CUT = re.compile(r"[A-Za-z0-9 \n]{2}")


class Hit(NamedTuple):
    """A match before it becomes a Violation: rule position in the policy, character span, how many
    trailing characters an excerpt keeps, whether a stream may trust it before the text is complete."""

    start: int
    rule: int
    end: int
    keep_last: int
    early: bool


# Hits are reported in this order: by start, then rule position, then end.
_HIT_ORDER = operator.itemgetter(0, 1, 2)


@dataclass(frozen=True)
class _TermEntry:
    rule: int
    term: str
    case_sensitive: bool
    whole_words: bool


@dataclass(frozen=True)
class _SetEntry:
    """What one pattern of the set stands for: a user expression of `rules`, a detector shared by
    `rules`, a required pattern, or the banned-terms prefilter."""

    role: str  # "regex", "pii", "required" or "terms"
    rules: tuple[int, ...]
    regex: Any = None  # re2._re2.RE2 on bytes, compiled without capturing groups
    detector: Detector | None = None


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _fold(text: str) -> str:
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


def _compile_regex(pattern: str, case_sensitive: bool, path: str, errors: list[FieldViolation]) -> Any | None:
    if not pattern:
        errors.append(FieldViolation(path, "is required"))
        return None
    if len(pattern) > MAX_PATTERN_CHARS:
        errors.append(FieldViolation(path, f"must be at most {MAX_PATTERN_CHARS} characters"))
        return None
    options = re2.Options()
    options.max_mem = MAX_REGEX_MEMORY
    options.case_sensitive = case_sensitive
    options.log_errors = False
    try:
        compiled = re2.compile(pattern.encode(), options)
    except re2.error as error:
        message = str(error)
        if "too large" in message or "pattern too big" in message:
            errors.append(FieldViolation(path, "compiles to a program too large for the expression limit"))
        else:
            errors.append(FieldViolation(path, f"is not a valid RE2 expression: {message}"))
        return None
    for probe in _EMPTY_PROBES:
        if any(m.start() == m.end() for m in compiled.finditer(probe.encode())):
            errors.append(FieldViolation(path, "must not match the empty text"))
            return None
    return _scanner(pattern, options)


def _scanner(pattern: str, options: Any) -> Any:
    """The RE2 object the scan runs: without capturing groups, RE2 finds a match's span with its DFAs
    alone instead of its slower submatch engines; groups never change where a match is."""
    scan_options = re2.Options()
    for name in re2.Options.NAMES:
        setattr(scan_options, name, getattr(options, name))
    scan_options.never_capture = True
    regexp = re2._re2.RE2(pattern.encode(), scan_options)
    if not regexp.ok():
        raise re2.error(regexp.error())
    return regexp


def _set_pattern(pattern: str, case_sensitive: bool) -> str:
    return f"(?:{pattern})" if case_sensitive else f"(?i:{pattern})"


class _JsonCheck:
    """A JSON rule: parse, then validate against the schema; `pattern` keywords run on RE2."""

    def __init__(self, schema: Mapping[str, Any] | bool | None) -> None:
        self._validator: Any = None
        if schema is not None:
            base: Any = jsonschema.validators.validator_for(schema)
            validator_class: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
                base, {"pattern": _re2_pattern_keyword}
            )
            self._validator = validator_class(schema)

    def broken(self, text: str) -> bool:
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return True
        if self._validator is None:
            return False
        try:
            return not self._validator.is_valid(value)
        except (RecursionError, jsonschema.exceptions.SchemaError, re2.error):
            return True


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _re2_pattern_keyword(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if isinstance(instance, str) and re2.search(pattern, instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _schema_keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _schema_keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schema_keys(value)


def _compile_schema(schema: str, path: str, errors: list[FieldViolation]) -> _JsonCheck | None:
    if not schema:
        return _JsonCheck(None)
    if len(schema) > MAX_SCHEMA_CHARS:
        errors.append(FieldViolation(path, f"must be at most {MAX_SCHEMA_CHARS} characters"))
        return None
    try:
        document = json.loads(schema)
    except (ValueError, RecursionError) as error:
        errors.append(FieldViolation(path, f"is not valid JSON: {error}"))
        return None
    if not isinstance(document, dict | bool):
        errors.append(FieldViolation(path, "must be a JSON Schema object"))
        return None
    keys = set(_schema_keys(document))
    if "patternProperties" in keys or "$dynamicRef" in keys:
        errors.append(FieldViolation(path, "must not use patternProperties or $dynamicRef"))
        return None
    # A $schema naming no draft jsonschema knows is refused: otherwise it would guess the latest draft
    # (with a deprecation warning) and check the policy against rules its author did not write for.
    validator_for: Any = jsonschema.validators.validator_for(document, default=cast(Any, None))
    if validator_for is None:
        if isinstance(document, dict) and "$schema" in document:
            errors.append(
                FieldViolation(path, "names a $schema this server does not know; use a JSON Schema draft URI")
            )
            return None
        validator_for = jsonschema.validators.validator_for({})
    try:
        validator_for.check_schema(document)
        if isinstance(document, dict):
            for pattern in _schema_patterns(document):
                re2.compile(pattern)
    except jsonschema.exceptions.SchemaError as error:
        errors.append(FieldViolation(path, f"is not a valid JSON Schema: {error.message}"))
        return None
    except re2.error as error:
        errors.append(FieldViolation(path, f"has a pattern that is not a valid RE2 expression: {error}"))
        return None
    return _JsonCheck(document)


def _schema_patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _schema_patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schema_patterns(value)


class CompiledPolicy:
    """A policy ready to check texts. Immutable once built: `check` is pure, thread-safe and reentrant."""

    def __init__(
        self,
        rules: tuple[RuleSpec, ...],
        decisions: Mapping[Severity, Decision],
        entries: tuple[_SetEntry, ...],
        pattern_set: Any,
        automaton: Any,
        json_checks: Mapping[int, _JsonCheck],
        longest_term: int,
    ) -> None:
        self.rules = rules
        self.decisions: Mapping[Severity, Decision] = dict(decisions)
        self._entries = entries
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
        self.has_local_rules = automaton is not None or any(e.role in ("regex", "pii") for e in entries)
        self.longest_term = longest_term

    def check(self, text: str) -> CheckResult:
        """Checks `text` (at most MAX_TEXT_CHARS characters) against every rule."""
        check_size(len(text))
        hits, present = self.scan(text, 0)
        if self._whole_text_rules:
            hits.extend(self._whole_text_hits(text, present))
        return self.result(text, hits)

    def stream(self) -> StreamCheck:
        """A check of a text that arrives in chunks; its `finish()` equals `check` of the whole text."""
        from modelplane.server.guardrails.engine.stream import StreamCheck

        return StreamCheck(self)

    def scan(self, text: str, scan_from: int) -> tuple[list[Hit], set[int]]:
        """The local matches (terms, expressions, PII) starting at or after `scan_from`, and the rules
        whose required pattern is present; text before `scan_from` is context only."""
        try:
            encoded = text.encode()
        except UnicodeEncodeError:
            raise InvalidArgument.field("text", "is not valid Unicode text") from None
        ascii_only = len(encoded) == len(text)
        hits: list[Hit] = []
        present: set[int] = set()
        run_terms = self._automaton is not None and (not ascii_only or not self._terms_prefiltered)
        reported = () if self._set_match is None else self._set_match(encoded)
        if reported:
            plan = self._plan
            size = len(encoded)
            byte_from = scan_from if ascii_only else len(text[:scan_from].encode())
            spans: list[tuple[int, int, int]] = []
            last_needed: dict[bytes, int] = {}
            for index in reported:
                role, rules, regexp, needs, _, _, _ = plan[index]
                if role == "terms":
                    run_terms = True
                elif role == "required":
                    present.update(rules)
                else:
                    # Every match holds one of `needs`: a search starting past the last of them cannot
                    # succeed, and skipping it spares the last search of each pattern, the one that reads
                    # the rest of the text to find nothing.
                    last = size
                    if needs:
                        known = last_needed.get(needs)
                        if known is None:
                            known = last_needed[needs] = max(map(encoded.rfind, needs))
                        last = known
                    # The steps of the re2 module's finditer, which this must agree with on every pattern.
                    pos = byte_from
                    while pos <= last:
                        start, end = regexp.Match(_UNANCHORED, encoded, pos, size)[0]
                        if start < 0:
                            break
                        if end > start:
                            spans.append((index, start, end))
                        if pos == size:
                            break
                        pos = pos + 1 if pos == end else end
            if spans and not ascii_only:
                offsets = _char_offsets(
                    encoded, {offset for _, start, end in spans for offset in (start, end)}
                )
                spans = [(index, offsets[start], offsets[end]) for index, start, end in spans]
            for index, start, end in spans:
                _, rules, _, _, validator, keep_last, early = plan[index]
                if validator is not None:
                    valid = validator(text[start:end])
                    if valid is None:
                        continue
                    start, end = start + valid[0], start + valid[1]
                for rule in rules:
                    hits.append(Hit(start, rule, end, keep_last, early))
        if run_terms:
            hits.extend(self._term_hits(text, scan_from))
        return hits, present

    def _term_hits(self, text: str, scan_from: int) -> list[Hit]:
        folded = _fold(text)
        found: dict[int, list[tuple[int, int]]] = {}
        length = len(text)
        for last, (key_length, entries) in _automaton_matches(
            self._automaton, folded, scan_from, self.longest_term
        ):
            start, end = last + 1 - key_length, last + 1
            for entry in entries:
                if entry.case_sensitive and text[start:end] != entry.term:
                    continue
                if entry.whole_words and (
                    (start > 0 and _word_char(entry.term[0]) and _word_char(text[start - 1]))
                    or (end < length and _word_char(entry.term[-1]) and _word_char(text[end]))
                ):
                    continue
                found.setdefault(entry.rule, []).append((start, end))
        hits: list[Hit] = []
        for rule, spans in found.items():
            # Leftmost-longest, without overlaps within one rule, like a regular expression scan.
            covered = -1
            for start, end in sorted(spans, key=lambda span: (span[0], -span[1])):
                if start >= covered:
                    hits.append(Hit(start, rule, end, 0, True))
                    covered = end
        return hits

    def _whole_text_hits(self, text: str, present: set[int]) -> list[Hit]:
        hits: list[Hit] = []
        length = len(text)
        for index, kind in self._length_rules:
            if kind.max_chars and length > kind.max_chars:
                hits.append(Hit(kind.max_chars, index, length, 0, True))
            elif kind.min_chars and length < kind.min_chars:
                hits.append(Hit(0, index, length, 0, False))
        for index, json_check in self._json.items():
            if json_check.broken(text):
                hits.append(Hit(0, index, length, 0, False))
        hits.extend(Hit(0, index, 0, 0, False) for index in self._required if index not in present)
        return hits

    def violation(self, text: str, hit: Hit, masked: str, offset: int = 0) -> Violation:
        """The Violation of `hit` found in `text`, which starts at `offset` of the whole text; `masked` is
        `text` with the spans of every local hit masked (see redaction.mask), for the excerpt."""
        start, rule, end, keep_last, _ = hit
        rule_id, severity, category, decision, local = self._rule_facts[rule]
        return Violation(
            rule_id,
            severity,
            category,
            start + offset,
            end + offset,
            excerpt(text, masked, start, end, keep_last) if local else "",
            text[start:end],
            decision,
        )

    def result(self, text: str, hits: list[Hit]) -> CheckResult:
        if not hits:
            return CheckResult(Decision.ALLOW, (), None, None)
        hits.sort(key=_HIT_ORDER)
        facts = self._rule_facts
        masked = mask(text, merge_spans([(hit.start, hit.end) for hit in hits if facts[hit.rule][4]]))
        violations: list[Violation] = []
        decision = Decision.ALLOW
        highest = Severity.INFO
        redacted_spans: list[tuple[int, int, str]] = []
        # What violation() does for each hit, inline: a check with findings spends much of its time here.
        for start, rule, end, keep_last, _ in hits:
            rule_id, severity, category, rule_decision, local = facts[rule]
            violations.append(
                Violation(
                    rule_id,
                    severity,
                    category,
                    start,
                    end,
                    excerpt(text, masked, start, end, keep_last) if local else "",
                    text[start:end],
                    rule_decision,
                )
            )
            decision = max(decision, rule_decision)
            highest = max(highest, severity)
            if rule_decision == Decision.REDACT:
                redacted_spans.append((start, end, category))
        redacted = redact(text, redacted_spans) if decision == Decision.REDACT else None
        return CheckResult(decision, tuple(violations), redacted, highest)


def _automaton_matches(automaton: Any, folded: str, scan_from: int, longest: int) -> Iterator[Any]:
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


def check_size(length: int) -> None:
    if length > MAX_TEXT_CHARS:
        raise InvalidArgument.field(
            "text", f"is {length} characters long; at most {MAX_TEXT_CHARS} are checked"
        )


def _char_offsets(encoded: bytes, offsets: set[int]) -> dict[int, int]:
    """Byte offsets of UTF-8 `encoded` (all on character boundaries) to character offsets, in one pass."""
    result: dict[int, int] = {}
    previous_byte = previous_char = 0
    for offset in sorted(offsets):
        previous_char += len(encoded[previous_byte:offset].decode())
        previous_byte = offset
        result[offset] = previous_char
    return result


def compile_policy(
    rules: Sequence[RuleSpec],
    decisions: Mapping[Severity, Decision] = DEFAULT_DECISIONS,
    *,
    path: str = "policy.rules",
) -> CompiledPolicy:
    """Compiles `rules`; raises InvalidArgument naming every bad field (e.g. "policy.rules[3].regex.pattern").

    Severities missing from `decisions` take their DEFAULT_DECISIONS entry.
    """
    errors: list[FieldViolation] = []
    if len(rules) > MAX_RULES:
        raise InvalidArgument.field(path, f"has {len(rules)} rules; at most {MAX_RULES} are allowed")
    table = {**DEFAULT_DECISIONS, **decisions}
    seen_ids: set[str] = set()
    entries: list[_SetEntry] = []
    set_patterns: list[str] = []
    terms: dict[str, list[_TermEntry]] = {}
    term_count = 0
    detector_rules: dict[int, list[int]] = {}
    json_checks: dict[int, _JsonCheck] = {}
    for index, rule in enumerate(rules):
        at = f"{path}[{index}]"
        if not _RULE_ID.fullmatch(rule.id):
            errors.append(FieldViolation(f"{at}.id", "must be 1 to 63 letters, digits, '_', '.' or '-'"))
        elif rule.id in seen_ids:
            errors.append(FieldViolation(f"{at}.id", f"repeats the rule id {rule.id!r}"))
        seen_ids.add(rule.id)
        if not _CATEGORY.fullmatch(rule.category):
            errors.append(
                FieldViolation(f"{at}.category", "must be 1 to 63 lower-case letters, digits, '_' or '-'")
            )
        kind = rule.kind
        if isinstance(kind, BannedTerms):
            if not kind.terms:
                errors.append(FieldViolation(f"{at}.banned_terms.terms", "must hold at least one term"))
            term_count += len(kind.terms)
            if term_count > MAX_TERMS:
                errors.append(
                    FieldViolation(
                        f"{at}.banned_terms.terms", f"the policy holds more than {MAX_TERMS} terms"
                    )
                )
                continue
            for term_index, term in enumerate(kind.terms):
                term_path = f"{at}.banned_terms.terms[{term_index}]"
                if not term.strip():
                    errors.append(FieldViolation(term_path, "must not be empty or blank"))
                elif len(term) > MAX_TERM_CHARS:
                    errors.append(FieldViolation(term_path, f"must be at most {MAX_TERM_CHARS} characters"))
                elif "\x00" in term:
                    errors.append(FieldViolation(term_path, "must not contain NUL characters"))
                else:
                    folded = _fold(term)
                    terms.setdefault(folded, []).append(
                        _TermEntry(index, term, kind.case_sensitive, kind.whole_words)
                    )
        elif isinstance(kind, Pattern | RequiredPattern):
            field = "regex" if isinstance(kind, Pattern) else "required_pattern"
            case_sensitive = kind.case_sensitive if isinstance(kind, Pattern) else True
            compiled = _compile_regex(kind.pattern, case_sensitive, f"{at}.{field}.pattern", errors)
            if compiled is not None:
                role = "regex" if isinstance(kind, Pattern) else "required"
                entries.append(_SetEntry(role, (index,), compiled))
                set_patterns.append(_set_pattern(kind.pattern, case_sensitive))
        elif isinstance(kind, Pii):
            for kind_index, pii in enumerate(kind.kinds):
                if not isinstance(pii, PiiKind):
                    errors.append(FieldViolation(f"{at}.pii.kinds[{kind_index}]", "is not a PII kind"))
            wanted = set(kind.kinds) or set(PiiKind)
            for detector_index, detector in enumerate(DETECTORS):
                if detector.kind in wanted:
                    detector_rules.setdefault(detector_index, []).append(index)
        elif isinstance(kind, Length):
            if kind.min_chars < 0:
                errors.append(FieldViolation(f"{at}.length.min_chars", "must not be negative"))
            if kind.max_chars < 0:
                errors.append(FieldViolation(f"{at}.length.max_chars", "must not be negative"))
            if kind.min_chars == 0 and kind.max_chars == 0:
                errors.append(FieldViolation(f"{at}.length", "sets no bound: give min_chars or max_chars"))
            elif kind.max_chars and kind.min_chars > kind.max_chars:
                errors.append(FieldViolation(f"{at}.length.max_chars", "must not be less than min_chars"))
        elif isinstance(kind, Json):
            json_check = _compile_schema(kind.schema, f"{at}.json.schema", errors)
            if json_check is not None:
                json_checks[index] = json_check
        else:
            errors.append(FieldViolation(at, "has no rule kind"))
    for severity in Severity:
        if not isinstance(table.get(severity), Decision):
            errors.append(FieldViolation(f"decisions[{severity.name}]", "is not a decision"))
    if errors:
        raise InvalidArgument(errors)
    for detector_index, rule_indexes in detector_rules.items():
        detector = DETECTORS[detector_index]
        entries.append(_SetEntry("pii", tuple(rule_indexes), _detector_scanner(detector_index), detector))
        set_patterns.append(detector.pattern)
    automaton = None
    if terms:
        automaton = ahocorasick.Automaton()
        for folded, term_entries in terms.items():
            automaton.add_word(folded, (len(folded), tuple(term_entries)))
        automaton.make_automaton()
        entries.append(_SetEntry("terms", ()))
        set_patterns.append("(?i:" + "|".join(re2.escape(folded) for folded in terms) + ")")
    longest_term = max((len(folded) for folded in terms), default=0)
    pattern_entries, pattern_set = _build_set(entries, set_patterns)
    return CompiledPolicy(
        tuple(rules), table, pattern_entries, pattern_set, automaton, json_checks, longest_term
    )


def _build_set(entries: list[_SetEntry], patterns: list[str]) -> tuple[tuple[_SetEntry, ...], Any]:
    """The set of every pattern; without the terms prefilter if the set cannot hold it (the automaton
    then runs on every text)."""
    while patterns:
        options = re2.Options()
        options.max_mem = _SET_MEMORY
        options.log_errors = False
        pattern_set = re2._re2.Set(_UNANCHORED, options)
        added = all(pattern_set.Add(pattern.encode()) >= 0 for pattern in patterns)
        if not added or not pattern_set.Compile():
            if entries[-1].role != "terms":
                raise re2.error("the patterns do not fit in one RE2 set")
            entries, patterns = entries[:-1], patterns[:-1]
            continue
        return tuple(entries), pattern_set
    return tuple(entries), None


@functools.cache
def _detector_scanner(index: int) -> Any:
    """The scan's RE2 object of DETECTORS[index], built once per process: RE2 objects are thread-safe."""
    return _scanner(DETECTORS[index].pattern, re2.Options())

"""compile_policy: validates rule specs and builds what a CompiledPolicy scans with.

Each rule is checked and reported by its field path; expressions compile on RE2 with a memory budget,
banned terms go into one Aho-Corasick automaton, and every expression, PII detector and a prefilter of
all terms into one RE2 set (see scan.py for how a check uses them). Only google-re2's public API is used.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ahocorasick  # type: ignore[import-not-found]  # no typing information is published
import re2  # type: ignore[import-untyped]  # no typing information is published

from modelplane.server.errors import FieldViolation, InvalidArgument
from modelplane.server.guardrails.engine.detectors import DETECTORS
from modelplane.server.guardrails.engine.folding import fold
from modelplane.server.guardrails.engine.rules import (
    DEFAULT_DECISIONS,
    MAX_EXCERPT_CONTEXT,
    MAX_PATTERN_CHARS,
    MAX_REGEX_MEMORY,
    MAX_RULES,
    MAX_TERM_CHARS,
    MAX_TERMS,
    BannedTerms,
    Decision,
    Json,
    Length,
    Pattern,
    Pii,
    PiiKind,
    RequiredPattern,
    RuleSpec,
    Severity,
)
from modelplane.server.guardrails.engine.scan import CompiledPolicy, SetEntry, TermEntry
from modelplane.server.guardrails.engine.schema import JsonCheck, compile_schema

_CATEGORY = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# The set's DFA cache grows with the text; a set has no slower fallback, so it gets room.
_SET_MEMORY = 512 << 20
# Texts around every empty-width context RE2 knows (text edges, word and non-word characters, line
# ends): a pattern that matches empty in none of them cannot match empty anywhere.
_EMPTY_PROBES = tuple(a + b for a in ("", "a", " ", "\n") for b in ("", "a", " ", "\n"))


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
    """The expression the scan runs: without capturing groups, RE2 finds a match's span with its DFAs
    alone instead of its slower submatch engines; groups never change where a match is."""
    scan_options = re2.Options()
    for name in re2.Options.NAMES:
        setattr(scan_options, name, getattr(options, name))
    scan_options.never_capture = True
    return re2.compile(pattern.encode(), scan_options)


def _set_pattern(pattern: str, case_sensitive: bool) -> str:
    return f"(?:{pattern})" if case_sensitive else f"(?i:{pattern})"


def compile_policy(
    rules: Sequence[RuleSpec],
    decisions: Mapping[Severity, Decision] = DEFAULT_DECISIONS,
    *,
    path: str = "policy.rules",
    excerpt_context: int = 0,
) -> CompiledPolicy:
    """Compiles `rules`; raises InvalidArgument naming every bad field (e.g. "policy.rules[3].regex.pattern").

    Severities missing from `decisions` take their DEFAULT_DECISIONS entry.
    """
    errors: list[FieldViolation] = []
    if len(rules) > MAX_RULES:
        raise InvalidArgument.field(path, f"has {len(rules)} rules; at most {MAX_RULES} are allowed")
    table = {**DEFAULT_DECISIONS, **decisions}
    seen_ids: set[str] = set()
    entries: list[SetEntry] = []
    set_patterns: list[str] = []
    terms: dict[str, list[TermEntry]] = {}
    term_count = 0
    detector_rules: dict[int, list[int]] = {}
    json_checks: dict[int, JsonCheck] = {}
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
                    folded = fold(term)
                    terms.setdefault(folded, []).append(
                        TermEntry(index, term, kind.case_sensitive, kind.whole_words)
                    )
        elif isinstance(kind, Pattern | RequiredPattern):
            field = "regex" if isinstance(kind, Pattern) else "required_pattern"
            case_sensitive = kind.case_sensitive if isinstance(kind, Pattern) else True
            compiled = _compile_regex(kind.pattern, case_sensitive, f"{at}.{field}.pattern", errors)
            if compiled is not None:
                role = "regex" if isinstance(kind, Pattern) else "required"
                entries.append(SetEntry(role, (index,), compiled))
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
            json_check = compile_schema(kind.schema, f"{at}.json.schema", errors)
            if json_check is not None:
                json_checks[index] = json_check
        else:
            errors.append(FieldViolation(at, "has no rule kind"))
    if not 0 <= excerpt_context <= MAX_EXCERPT_CONTEXT:
        errors.append(
            FieldViolation("excerpt_context_chars", f"must be from 0 to {MAX_EXCERPT_CONTEXT} characters")
        )
    for severity in Severity:
        if not isinstance(table.get(severity), Decision):
            errors.append(FieldViolation(f"decisions[{severity.name}]", "is not a decision"))
    if errors:
        raise InvalidArgument(errors)
    for detector_index, rule_indexes in detector_rules.items():
        detector = DETECTORS[detector_index]
        entries.append(SetEntry("pii", tuple(rule_indexes), _detector_scanner(detector_index), detector))
        set_patterns.append(detector.pattern)
    automaton = None
    if terms:
        automaton = ahocorasick.Automaton()
        for folded, term_entries in terms.items():
            automaton.add_word(folded, (len(folded), tuple(term_entries)))
        automaton.make_automaton()
        entries.append(SetEntry("terms", ()))
        set_patterns.append("(?i:" + "|".join(re2.escape(folded) for folded in terms) + ")")
    longest_term = max((len(folded) for folded in terms), default=0)
    pattern_entries, pattern_set = _build_set(entries, set_patterns)
    return CompiledPolicy(
        tuple(rules),
        table,
        pattern_entries,
        pattern_set,
        automaton,
        json_checks,
        longest_term,
        excerpt_context,
    )


def _build_set(entries: list[SetEntry], patterns: list[str]) -> tuple[tuple[SetEntry, ...], Any]:
    """The set of every pattern; without the terms prefilter if the set cannot hold it (the automaton
    then runs on every text)."""
    while patterns:
        options = re2.Options()
        options.max_mem = _SET_MEMORY
        options.log_errors = False
        pattern_set = re2.Set.SearchSet(options)
        try:
            for pattern in patterns:
                pattern_set.Add(pattern.encode())
            pattern_set.Compile()
            compiled = True
        except re2.error:
            compiled = False
        if not compiled:
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

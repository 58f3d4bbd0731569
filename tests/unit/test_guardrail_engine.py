"""The guardrails rule engine: every rule kind on true and false positives, the decision table, redaction,
streaming against one-shot checks, linear-time expressions, and compile errors with their field paths."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.server.errors import InvalidArgument
from modelplane.server.guardrails.engine import (
    MAX_LISTED,
    MAX_LISTED_PER_RULE,
    MAX_TERMS,
    MAX_TEXT_CHARS,
    BannedTerms,
    CheckTimeout,
    CompiledPolicy,
    Decision,
    Json,
    Length,
    Pattern,
    Pii,
    PiiKind,
    RequiredPattern,
    RuleKind,
    RuleSpec,
    Severity,
    StreamCheck,
    compile_policy,
    luhn_valid,
)


def _policy(kind: RuleKind, severity: Severity = Severity.ERROR) -> CompiledPolicy:
    return compile_policy([RuleSpec("rule", severity, "cat", kind)])


def _found(kind: RuleKind, text: str) -> list[str]:
    return [text[v.start : v.end] for v in _policy(kind).check(text).violations]


SCHEMA = (
    '{"type": "object", "required": ["title"],'
    ' "properties": {"title": {"type": "string", "pattern": "^[A-Z]"}}}'
)

# (rule kind, text, the matched texts expected; [] is a true negative)
TABLE: list[tuple[RuleKind, str, list[str]]] = [
    (BannedTerms(("darn",)), "Darn it, that was close.", ["Darn"]),
    (BannedTerms(("darn",)), "a darned sock", []),
    (BannedTerms(("darn",), whole_words=False), "a darned sock", ["darn"]),
    (BannedTerms(("Darn",), case_sensitive=True), "darn it, Darn it", ["Darn"]),
    (BannedTerms(("heck no", "heck")), "oh heck no!", ["heck no"]),
    (BannedTerms(("straße",)), "Die STRASSE und die Straße", ["Straße"]),
    (Pattern(r"order #\d{4,}"), "see order #12345 now", ["order #12345"]),
    (Pattern(r"order #\d{4,}"), "see order #123 now", []),
    (Pattern(r"secret", case_sensitive=False), "a SECRET plan", ["SECRET"]),
    (Pii((PiiKind.EMAIL,)), "write to jane.doe+x@mail.example.org today", ["jane.doe+x@mail.example.org"]),
    (Pii((PiiKind.EMAIL,)), "not an email: user@localhost or a@b.c or @handle", []),
    (
        Pii((PiiKind.PHONE_NUMBER,)),
        "call +44 20 7946 0958 or (415) 555-0100",
        ["+44 20 7946 0958", "(415) 555-0100"],
    ),
    (Pii((PiiKind.PHONE_NUMBER,)), "build 2024-01-15 and 12345", []),
    (Pii((PiiKind.PAYMENT_CARD,)), "card 4111 1111 1111 1111, thanks", ["4111 1111 1111 1111"]),
    (Pii((PiiKind.PAYMENT_CARD,)), "card 4111-1111-1111-1111", ["4111-1111-1111-1111"]),
    (Pii((PiiKind.PAYMENT_CARD,)), "card 4111 1111 1111 1112 fails Luhn", []),
    (Pii((PiiKind.PAYMENT_CARD,)), "order 1234567890123 is not a card", []),
    (Pii((PiiKind.IBAN,)), "pay to DE89 3704 0044 0532 0130 00 by Friday", ["DE89 3704 0044 0532 0130 00"]),
    (Pii((PiiKind.IBAN,)), "pay to GB82WEST12345698765432.", ["GB82WEST12345698765432"]),
    (Pii((PiiKind.IBAN,)), "wrong checksum DE88 3704 0044 0532 0130 00", []),
    (Pii((PiiKind.US_SSN,)), "SSN 123-45-6789.", ["123-45-6789"]),
    (Pii((PiiKind.US_SSN,)), "not SSNs: 666-12-3456 900-12-3456 000-12-3456 123-00-4567 123-45-0000", []),
    (Pii((PiiKind.IP_ADDRESS,)), "hosts 192.168.1.20 and 2001:db8::1.", ["192.168.1.20", "2001:db8::1"]),
    (Pii((PiiKind.IP_ADDRESS,)), "version 1.2.3.4.5, v10.0.0.1, 256.1.1.1, at 12:30:45", []),
    (Pii((PiiKind.SECRET,)), "key AKIAIOSFODNN7EXAMPLE here", ["AKIAIOSFODNN7EXAMPLE"]),
    (Pii((PiiKind.SECRET,)), "token ghp_" + "a1" * 18 + " used", ["ghp_" + "a1" * 18]),
    (Pii((PiiKind.SECRET,)), "sk-proj-abcdefghijklmnopqrstuvwx", ["sk-proj-abcdefghijklmnopqrstuvwx"]),
    (
        Pii((PiiKind.SECRET,)),
        "x -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- y",
        ["-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"],
    ),
    (Pii((PiiKind.SECRET,)), "sk-short and AKIA1234 and a -----BEGIN PUBLIC KEY----- block", []),
    (Length(max_chars=5), "abcdefgh", ["fgh"]),
    (Length(max_chars=5), "abcde", []),
    (Length(min_chars=5), "abc", ["abc"]),
    (Json(), '{"a": [1, 2]}', []),
    (Json(), '{"a": [1, 2}', ['{"a": [1, 2}']),
    (Json(), "NaN", ["NaN"]),
    (Json(SCHEMA), '{"title": "Dune"}', []),
    (Json(SCHEMA), '{"title": "dune"}', ['{"title": "dune"}']),
    (Json(SCHEMA), '{"name": "Dune"}', ['{"name": "Dune"}']),
    (RequiredPattern(r"(?i)once upon a time"), "Once upon a time, a fox.", []),
    (RequiredPattern(r"(?i)once upon a time"), "A fox.", [""]),
]


@pytest.mark.parametrize(("kind", "text", "expected"), TABLE)
def test_rule_kinds_find_true_positives_and_skip_false_ones(
    kind: RuleKind, text: str, expected: list[str]
) -> None:
    assert _found(kind, text) == expected


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


def test_excerpts_show_the_masked_match_alone_by_default() -> None:
    text = "my card is 4111 1111 1111 1111 and mail bob@example.com"
    result = _policy(Pii(())).check(text)
    card, email = result.violations
    assert card.excerpt == "***************1111"
    assert email.excerpt == "***************"
    assert email.matched_text == "bob@example.com"


def test_excerpts_with_context_mask_the_other_violations_in_their_window() -> None:
    text = "my card is 4111 1111 1111 1111 and mail bob@example.com"
    policy = compile_policy([RuleSpec("rule", Severity.ERROR, "cat", Pii(()))], excerpt_context=18)
    card, email = policy.check(text).violations
    # The email in the card's window is masked too, though it is another violation's match.
    assert card.excerpt == "my card is ***************1111 and mail ********"
    assert email.excerpt == "******** and mail ***************"


def test_an_excerpt_rebuilds_no_character_outside_the_matches() -> None:
    # Every vowel is an INFO match: with context each excerpt showed the consonants around it, and
    # a reader could rebuild most of the text, a secret included.
    text = "the launch code is zebra-kilo-91 and the vault opens at dawn"
    policy = compile_policy([RuleSpec("vowels", Severity.INFO, "cat", Pattern("[aeiou]"))])
    result = policy.check(text)
    assert result.violations
    assert {v.excerpt for v in result.violations} == {"*"}
    shown = "".join(v.excerpt for v in result.violations)
    assert not set(shown) & set(text)


def _mixed_policy() -> CompiledPolicy:
    return compile_policy(
        [
            RuleSpec("info-1", Severity.INFO, "style", BannedTerms(("very",))),
            RuleSpec("info-2", Severity.INFO, "style", BannedTerms(("really",))),
            RuleSpec("warn", Severity.WARNING, "tone", BannedTerms(("stupid",))),
            RuleSpec("pii", Severity.ERROR, "pii", Pii((PiiKind.EMAIL,))),
            RuleSpec("crit", Severity.CRITICAL, "violence", BannedTerms(("kill",))),
        ]
    )


@given(st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=30))
@settings(max_examples=30, deadline=None)
def test_one_critical_among_any_number_of_infos_blocks(infos: int, position: int) -> None:
    words = ["very"] * infos
    words.insert(min(position, len(words)), "kill")
    result = _mixed_policy().check(" ".join(words))
    assert result.decision == Decision.BLOCK
    assert result.highest_severity == Severity.CRITICAL
    assert result.redacted_text is None
    assert len(result.violations) == infos + 1


def test_warning_alone_allows_and_lists() -> None:
    result = _mixed_policy().check("a really stupid and very stupid idea")
    assert result.decision == Decision.ALLOW
    assert [v.rule_id for v in result.violations] == ["info-2", "warn", "info-1", "warn"]
    assert result.highest_severity == Severity.WARNING
    assert result.redacted_text is None


def test_no_violation_allows_with_nothing_listed() -> None:
    result = _mixed_policy().check("a calm story")
    assert (result.decision, result.violations, result.highest_severity) == (Decision.ALLOW, (), None)


def test_the_decision_table_is_the_policys() -> None:
    policy = compile_policy(
        [RuleSpec("w", Severity.WARNING, "tone", BannedTerms(("meh",)))], {Severity.WARNING: Decision.BLOCK}
    )
    assert policy.check("meh").decision == Decision.BLOCK


def test_redact_replaces_only_redact_spans() -> None:
    result = _mixed_policy().check("very nice, mail a@example.com, really")
    assert result.decision == Decision.REDACT
    assert result.redacted_text == "very nice, mail [REDACTED:pii], really"


_words = st.sampled_from(
    ["bad", "word", "x", " ", "\n", "é", "-", "a@example.com", "4111 1111 1111 1111", "12"]
)


@given(st.lists(_words, max_size=40).map("".join))
@settings(max_examples=150, deadline=None)
def test_redaction_keeps_everything_outside_the_spans(text: str) -> None:
    policy = compile_policy(
        [
            RuleSpec("terms", Severity.ERROR, "terms", BannedTerms(("bad", "bad word"), whole_words=False)),
            RuleSpec("pii", Severity.ERROR, "pii", Pii(())),
            RuleSpec("info", Severity.INFO, "info", BannedTerms(("x",), whole_words=False)),
        ]
    )
    result = policy.check(text)
    spans = sorted((v.start, v.end) for v in result.violations if v.decision == Decision.REDACT)
    if result.decision != Decision.REDACT:
        assert not spans
        return
    assert result.redacted_text is not None
    rebuilt, position, redacted = [], 0, result.redacted_text
    # Walk the merged spans: the text between them must appear unchanged, in order.
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in merged:
        rebuilt.append(text[position:start])
        position = end
    rebuilt.append(text[position:])
    pieces = redacted.split("[REDACTED:")
    assert pieces[0] == rebuilt[0]
    assert [piece.split("]", 1)[1] for piece in pieces[1:]] == rebuilt[1:]


STREAM_POLICY = compile_policy(
    [
        RuleSpec("terms", Severity.CRITICAL, "toxicity", BannedTerms(("darn", "heck no", "bad"))),
        RuleSpec("regex", Severity.WARNING, "misc", Pattern(r"ab+c")),
        RuleSpec("pii", Severity.ERROR, "pii", Pii(())),
        RuleSpec("long", Severity.INFO, "length", Length(max_chars=60)),
        RuleSpec("json", Severity.INFO, "format", Json()),
        RuleSpec("required", Severity.INFO, "format", RequiredPattern("end")),
    ]
)
_stream_words = st.sampled_from(
    [
        "darn",
        "heck",
        " no",
        " ",
        "bad",
        "badge",
        "ab",
        "bbc",
        "4111 1111 1111 1111",
        " 2",
        "9",
        "@",
        "a@example.com",
        "10.0.0.1",
        ".5",
        "end",
        "x",
        "\n",
        "ü",
    ]
)


@given(st.lists(_stream_words, max_size=30).map("".join), st.lists(st.integers(min_value=0, max_value=400)))
@settings(max_examples=200, deadline=None)
def test_streaming_equals_one_shot_whatever_the_chunking(text: str, cuts: list[int]) -> None:
    points = sorted({cut % (len(text) + 1) for cut in cuts} | {0, len(text)})
    stream = StreamCheck(STREAM_POLICY)
    progress = [stream.feed(text[a:b]) for a, b in itertools.pairwise(points)]
    result = stream.finish()
    assert result == STREAM_POLICY.check(text)
    final_rules = {v.rule_id for v in result.violations}
    for step in progress:
        assert {v.rule_id for v in step.violations_so_far} <= final_rules
        if step.certain_decision is not None:
            assert result.decision == step.certain_decision == Decision.BLOCK


def test_stream_finds_a_term_split_across_chunks_and_blocks_before_the_end() -> None:
    stream = StreamCheck(STREAM_POLICY)
    assert stream.feed("well, he").certain_decision is None
    assert stream.feed("ck").certain_decision is None
    progress = stream.feed(" no, said the fox, and more text follows")
    assert progress.certain_decision == Decision.BLOCK
    assert [(v.rule_id, v.start, v.end) for v in progress.violations_so_far] == [("terms", 6, 13)]


def test_stream_waits_for_the_word_boundary() -> None:
    stream = StreamCheck(STREAM_POLICY)
    assert stream.feed("a bad").certain_decision is None
    assert stream.feed("ge of honour").certain_decision is None
    assert stream.finish().decision != Decision.BLOCK


def test_stream_of_many_small_chunks_finds_a_late_match() -> None:
    stream = StreamCheck(STREAM_POLICY)
    text = "calm words " * 500 + "darn " + "more " * 10
    certain = [stream.feed(text[i : i + 3]).certain_decision for i in range(0, len(text), 3)]
    assert certain[-1] == Decision.BLOCK
    assert stream.finish().decision == Decision.BLOCK


def test_catastrophic_backtracking_pattern_runs_in_linear_time() -> None:
    """(a+)+$ on 'a' * 100,000 + 'b': a backtracking engine (Python's re) would take longer than the age of
    the universe; RE2 finishes in milliseconds, well inside the test timeout."""
    policy = _policy(Pattern(r"(a+)+$"))
    text = "a" * 100_000 + "b"
    assert policy.check(text).violations == ()
    assert [(v.start, v.end) for v in policy.check("xaaa").violations] == [(1, 4)]


def _paths(rules: list[RuleSpec]) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        compile_policy(rules)
    return [v.field for v in caught.value.violations]


def test_compile_errors_name_their_fields() -> None:
    ok = RuleSpec("ok", Severity.INFO, "cat", BannedTerms(("fine",)))
    assert _paths(
        [
            ok,
            RuleSpec("terms", Severity.INFO, "cat", BannedTerms(("good", " ", "x" * 300))),
            RuleSpec("rx", Severity.INFO, "cat", Pattern("(unclosed")),
            RuleSpec("ok", Severity.INFO, "cat", Length(max_chars=3)),
            RuleSpec("json", Severity.INFO, "cat", Json('{"type": 3}')),
            RuleSpec("json2", Severity.INFO, "cat", Json("{not json")),
            RuleSpec("req", Severity.INFO, "cat", RequiredPattern("x*")),
            RuleSpec("len", Severity.INFO, "cat", Length(min_chars=5, max_chars=2)),
            RuleSpec("len2", Severity.INFO, "Bad Category", Length()),
            RuleSpec("big", Severity.INFO, "cat", Pattern("(?:a{1000}){1000}")),
        ]
    ) == [
        "policy.rules[1].banned_terms.terms[1]",
        "policy.rules[1].banned_terms.terms[2]",
        "policy.rules[2].regex.pattern",
        "policy.rules[3].id",
        "policy.rules[4].json.schema",
        "policy.rules[5].json.schema",
        "policy.rules[6].required_pattern.pattern",
        "policy.rules[7].length.max_chars",
        "policy.rules[8].category",
        "policy.rules[8].length",
        "policy.rules[9].regex.pattern",
    ]


def test_compile_error_path_prefix_is_the_callers() -> None:
    with pytest.raises(InvalidArgument) as caught:
        compile_policy([RuleSpec("a", Severity.INFO, "c", Pattern("["))], path="policy.rules")
    assert caught.value.violations[0].field == "policy.rules[0].regex.pattern"
    with pytest.raises(InvalidArgument) as caught:
        compile_policy([RuleSpec("a", Severity.INFO, "c", Pattern("["))], path="rules")
    assert caught.value.violations[0].field == "rules[0].regex.pattern"


def test_too_many_terms_is_refused() -> None:
    terms = tuple(f"t{i}" for i in range(MAX_TERMS + 1))
    assert _paths([RuleSpec("t", Severity.INFO, "c", BannedTerms(terms))]) == [
        "policy.rules[0].banned_terms.terms"
    ]


def test_texts_over_the_limit_are_refused_in_one_shot_and_stream() -> None:
    policy = _policy(BannedTerms(("x",)))
    with pytest.raises(InvalidArgument) as caught:
        policy.check("y" * (MAX_TEXT_CHARS + 1))
    assert caught.value.violations[0].field == "text"
    stream = StreamCheck(policy)
    stream.feed("y" * MAX_TEXT_CHARS)
    with pytest.raises(InvalidArgument):
        stream.feed("y")


def test_many_terms_in_one_automaton() -> None:
    terms = tuple(f"term{i}" for i in range(20_000))
    policy = _policy(BannedTerms(terms))
    assert [v.matched_text for v in policy.check("a term19999 and term7 but not term7x").violations] == [
        "term19999",
        "term7",
    ]


def test_non_ascii_offsets_are_characters() -> None:
    policy = _policy(Pii((PiiKind.EMAIL,)))
    text = "ünïcödé → bob@example.com ✓"
    (violation,) = policy.check(text).violations
    assert text[violation.start : violation.end] == "bob@example.com"


def test_a_json_schema_naming_an_unknown_draft_is_refused() -> None:
    unknown = Json('{"$schema": "https://example.com/unknown-draft", "type": "object"}')
    with pytest.raises(InvalidArgument) as info:
        compile_policy([RuleSpec("shape", Severity.ERROR, "format", unknown)])
    assert [v.field for v in info.value.violations] == ["policy.rules[0].json.schema"]
    known = Json('{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}')
    policy = compile_policy([RuleSpec("shape", Severity.ERROR, "format", known)])
    assert policy.check("{}").decision == Decision.ALLOW
    assert policy.check("[]").decision == Decision.REDACT


# ---- bounds: what a check lists, redacts and how long it may run


def test_a_check_lists_at_most_its_caps_and_decides_on_every_match() -> None:
    rules = [RuleSpec(f"a{i}", Severity.INFO, "noise", Pattern("a")) for i in range(11)]
    rules.append(RuleSpec("crit", Severity.CRITICAL, "bad", BannedTerms(("zzz",))))
    result = compile_policy(rules).check("a" * 200 + " zzz")
    assert len(result.violations) == MAX_LISTED
    assert all(sum(v.rule_id == f"a{i}" for v in result.violations) <= MAX_LISTED_PER_RULE for i in range(11))
    # The blocking match is past the first 1,000: not listed, counted, and it decides.
    assert "crit" not in {v.rule_id for v in result.violations}
    assert result.omitted["crit"] == 1
    assert result.decision is Decision.BLOCK
    assert len(result.violations) + sum(result.omitted.values()) == 11 * 200 + 1


def test_a_redaction_too_large_to_answer_blocks_instead() -> None:
    policy = compile_policy([RuleSpec("x", Severity.ERROR, "c" * 63, Pattern("x"))])
    assert policy.check("x" * 1_000).decision is Decision.REDACT
    result = policy.check("x " * 100_001)
    assert (result.decision, result.redaction_too_large, result.redacted_text) == (Decision.BLOCK, True, None)


def test_a_check_past_its_deadline_stops() -> None:
    policy = compile_policy([RuleSpec("a", Severity.INFO, "noise", Pattern("a"))])
    with pytest.raises(CheckTimeout):
        policy.check("a" * 10_000, time.perf_counter() - 1)
    assert len(policy.check("a" * 10_000, time.perf_counter() + 60).violations) == MAX_LISTED_PER_RULE


def test_the_engine_uses_only_the_public_re2_api() -> None:
    engine = Path(compile_policy.__code__.co_filename).parent
    for source in engine.glob("*.py"):
        assert "re2._re2" not in source.read_text(), source.name
        assert "_re2." not in source.read_text(), source.name

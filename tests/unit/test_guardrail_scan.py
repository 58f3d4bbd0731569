"""The guardrails engine's scan against plain definitions of what it finds: expression and PII spans are
those of the re2 module's finditer (plus the detector's validator), whatever shortcuts the scan takes (its
own RE2 loop, stopping past a detector's last needed byte, byte to character offsets), and a long text
case-folded and searched for terms in slices gives what one piece gives."""

from __future__ import annotations

import pytest
import re2  # type: ignore[import-untyped]  # no typing information is published
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modelplane.server.guardrails.engine import (
    BannedTerms,
    Pattern,
    Pii,
    PiiKind,
    RuleSpec,
    Severity,
    compile_policy,
)
from modelplane.server.guardrails.engine import folding as engine_folding
from modelplane.server.guardrails.engine.detectors import DETECTORS

# Pieces that make detector matches, near misses, their edges and non-ASCII neighbours.
_PIECES = st.sampled_from(
    [
        "a",
        "Z",
        "_",
        "-",
        ".",
        ":",
        "@",
        "+",
        "(",
        ")",
        " ",
        "\n",
        "0",
        "7",
        "42",
        "é",
        "ß",
        "\u03a3",
        "\u212a",
        "😀",
        "bob@example.com",
        "x@y.co",
        "+44 20 7946 0958",
        "(415) 555-0100",
        "555.123.4567",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "123-45-6789",
        "192.168.1.20",
        "1.2.3.4.5",
        "2001:db8::1",
        "fe80::",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a1" * 18,
        "sk-proj-abcdefghijklmnopqrstuvwx",
        "xoxb-1234567890",
        "AIza" + "B" * 35,
        "eyJabcdefghijk.eyJabcdefghijk.abcdefghijk",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
    ]
)
_TEXTS = st.lists(_PIECES, max_size=30).map("".join)


def _found(rules: list[RuleSpec], text: str) -> list[tuple[int, int]]:
    return sorted((v.start, v.end) for v in compile_policy(rules).check(text).violations)


def _reference_pii(kind: PiiKind, text: str) -> list[tuple[int, int]]:
    spans = []
    for detector in DETECTORS:
        if detector.kind != kind:
            continue
        for match in re2.finditer(detector.pattern, text):
            start, end = match.span()
            if detector.validator is not None:
                valid = detector.validator(text[start:end])
                if valid is None:
                    continue
                start, end = start + valid[0], start + valid[1]
            spans.append((start, end))
    return sorted(spans)


@pytest.mark.parametrize("kind", list(PiiKind))
@given(text=_TEXTS)
@settings(max_examples=80, deadline=None)
@example(text="bob@example.com")
@example(text="é+44 20 7946 0958é 4111 1111 1111 1111")
@example(text="4111 1111 1111 1111 4111 1111 1111 1111")
def test_pii_spans_are_the_validated_finditer_spans(kind: PiiKind, text: str) -> None:
    rules = [RuleSpec("pii", Severity.ERROR, "pii", Pii((kind,)))]
    assert _found(rules, text) == _reference_pii(kind, text)


# Capital alpha and sigma, small sigma, final small sigma: lower-casing a capital sigma depends on its
# neighbours.
_GREEK = ["\u0391\u03a3", "\u03a3", "\u03c3", "\u03c2"]

# Expressions that can match next to each other, at the text's edges, on word boundaries, across
# non-ASCII characters, with capturing groups, and without regard to case.
_EXPRESSIONS = [
    r"a+",
    r"ab|a",
    r"(a)(b)?",
    r"^a|a$",
    r"(?m)^\w",
    r"\ba\w*",
    r"\w\b",
    r"[éß]+",
    r"\p{Greek}+",
    r".",
    r"k",
    r"a.{0,3}b",
]


@pytest.mark.parametrize("pattern", _EXPRESSIONS)
@pytest.mark.parametrize("case_sensitive", [True, False])
@given(
    text=st.lists(
        st.sampled_from(["a", "b", "A", "B", " ", "\n", "é", "ß", *_GREEK, "\u212a", "k", "😀"])
    ).map("".join)
)
@settings(max_examples=60, deadline=None)
@example(text="aaa")
@example(text="a")
@example(text="ba\u212aab\nA")
def test_expression_spans_are_the_finditer_spans(pattern: str, case_sensitive: bool, text: str) -> None:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    expected = [match.span() for match in re2.compile(pattern, options).finditer(text)]
    rules = [RuleSpec("regex", Severity.WARNING, "misc", Pattern(pattern, case_sensitive))]
    assert _found(rules, text) == expected


@given(
    st.lists(st.sampled_from(["a", "A", *_GREEK, " ", "\n", ".", ":", "'", "\u0301", "İ", "ß", "1"])).map(
        "".join
    )
)
@settings(max_examples=300, deadline=None)
@example("\u0391\u03a3 \u0391\u03a3.\u0391\u03a3:a \u03a3\u0391")
def test_lower_casing_in_slices_is_str_lower(text: str) -> None:
    # A capital sigma lower-cases by its neighbours: a cut in the wrong place would change it.
    for slice_chars in (1, 2, 3, 7):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine_folding, "SLICE_CHARS", slice_chars)
            assert engine_folding._lower(text) == text.lower()


_TERM_POLICY = [
    RuleSpec("terms", Severity.CRITICAL, "toxicity", BannedTerms(("darn", "heck no", "heck", "no", "ab"))),
    RuleSpec("parts", Severity.WARNING, "misc", BannedTerms(("ark", "narkk", "a"), whole_words=False)),
    RuleSpec("cased", Severity.INFO, "misc", BannedTerms(("Straße", "\u0391\u03a3"), case_sensitive=True)),
]


@given(
    st.lists(
        st.sampled_from(
            [
                "darn",
                "heck",
                " no",
                "narkk",
                "ab",
                "a",
                " ",
                "\n",
                "Straße",
                "STRASSE",
                *_GREEK,
                "İ",
                "é",
                ".",
            ]
        )
    ).map("".join)
)
@settings(max_examples=200, deadline=None)
@example("heck no darn narkk Straße \u0391\u03a3")
def test_terms_found_in_slices_are_the_terms_found_in_one_piece(text: str) -> None:
    policy = compile_policy(_TERM_POLICY)
    whole = policy.check(text)
    for slice_chars in (1, 2, 5, 11):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine_folding, "SLICE_CHARS", slice_chars)
            assert policy.check(text) == whole

"""The vocabulary of the rule engine: severities, decisions, rule kinds, and the results of a check.

Everything here is a plain value (enums and frozen dataclasses); the engine never does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType

# The documented limit of one checked text, in characters. The server refuses a bigger text before it
# reaches the engine; the engine checks again so that no caller can hand it an unbounded text.
MAX_TEXT_CHARS = 1_000_000
MAX_RULES = 1_000
MAX_TERMS = 100_000
MAX_TERM_CHARS = 256
MAX_PATTERN_CHARS = 4_096
# RE2 budget of one compiled user expression; a pattern whose program does not fit is refused.
MAX_REGEX_MEMORY = 8 << 20
MAX_SCHEMA_CHARS = 65_536
# What one check lists (and the server records): the first matches of each rule, and of all rules; the
# rest are only counted. The decision accounts for every match.
MAX_LISTED_PER_RULE = 100
MAX_LISTED = 1_000
# A REDACT result with more spans than this, or a redacted text over MAX_REDACTED_BYTES in UTF-8, is not
# built: the decision becomes BLOCK, so that no answer outgrows a client's default 4 MiB message.
MAX_REDACTED_SPANS = 100_000
MAX_REDACTED_BYTES = 3_000_000
# Characters of context an excerpt may show on each side of its match, when a policy asks for any.
MAX_EXCERPT_CONTEXT = 32


class CheckTimeout(Exception):
    """A check passed its deadline; it stopped, and has no result."""


class Severity(IntEnum):
    """How bad a broken rule is; the policy's decision table turns it into a decision."""

    INFO = 1
    WARNING = 2
    ERROR = 3
    CRITICAL = 4


class Decision(IntEnum):
    """What happens to the checked text; ordered, so the strictest decision of all violations wins."""

    ALLOW = 1
    REDACT = 2
    BLOCK = 3


class PiiKind(StrEnum):
    """The personal data and secrets the built-in detectors find."""

    EMAIL = "email"
    PHONE_NUMBER = "phone_number"
    PAYMENT_CARD = "payment_card"
    IBAN = "iban"
    US_SSN = "us_ssn"
    IP_ADDRESS = "ip_address"
    SECRET = "secret"


DEFAULT_DECISIONS: Mapping[Severity, Decision] = MappingProxyType(
    {
        Severity.INFO: Decision.ALLOW,
        Severity.WARNING: Decision.ALLOW,
        Severity.ERROR: Decision.REDACT,
        Severity.CRITICAL: Decision.BLOCK,
    }
)


@dataclass(frozen=True)
class BannedTerms:
    """Terms that must not appear. `whole_words`: a term only counts between non-word characters."""

    terms: tuple[str, ...]
    case_sensitive: bool = False
    whole_words: bool = True


@dataclass(frozen=True)
class Pattern:
    """A regular expression in RE2 syntax that must not match; it runs in linear time."""

    pattern: str
    case_sensitive: bool = True


@dataclass(frozen=True)
class Pii:
    """Personal data and secrets of the given kinds must not appear; no kinds means every kind."""

    kinds: tuple[PiiKind, ...] = ()


@dataclass(frozen=True)
class Length:
    """Bounds of the text's length in characters (code points); 0 means no bound on that side."""

    min_chars: int = 0
    max_chars: int = 0


@dataclass(frozen=True)
class Json:
    """The text must be one JSON value; with `schema` (a JSON Schema document), valid against it."""

    schema: str = ""


@dataclass(frozen=True)
class RequiredPattern:
    """A regular expression in RE2 syntax that must match somewhere in the text."""

    pattern: str


RuleKind = BannedTerms | Pattern | Pii | Length | Json | RequiredPattern


@dataclass(frozen=True)
class RuleSpec:
    """One rule of a policy: its id (unique in the policy), severity, category and kind."""

    id: str
    severity: Severity
    category: str
    kind: RuleKind


@dataclass(frozen=True)
class Violation:
    """One broken rule at one place of the text.

    `start`/`end` are character offsets, end exclusive. Rules on the whole text use these spans: Length
    over its maximum: (max_chars, len(text)), the part beyond the limit; Length under its minimum and Json:
    (0, len(text)); a missing RequiredPattern: (0, 0).

    `excerpt` is the match masked with '*' of the same length (a match longer than 24 characters shows
    as 24 '*' and '...'), safe to store and show. PII keeps a few characters to help a reader: the last 4
    digits of a payment card, the last 4 characters of an IBAN, the last 2 digits of a phone number;
    everything else is fully masked. Only a policy that asks for context (excerpt_context) shows that
    many characters of the text on each side, with any other violation's span in the window masked too.
    Whole-text rules have an empty excerpt.

    `matched_text` is the raw matched text, only for computing a keyed hash: never store or send it.
    """

    rule_id: str
    severity: Severity
    category: str
    start: int
    end: int
    excerpt: str
    matched_text: str
    decision: Decision


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one text against one policy.

    `violations` lists at most MAX_LISTED_PER_RULE matches of each rule and MAX_LISTED in all, the first
    by position; `omitted` counts the rest per rule. `redacted_text` is set only when the decision is
    REDACT: every non-empty span of a violation whose decision is REDACT is replaced by
    "[REDACTED:<category>]" (overlapping spans are merged and take the category of the first violation);
    everything outside the spans is kept exactly as it was.
    """

    decision: Decision
    violations: tuple[Violation, ...]
    redacted_text: str | None
    highest_severity: Severity | None
    # Rule id -> matches of that rule found but not listed in `violations` (see MAX_LISTED_PER_RULE).
    omitted: Mapping[str, int] = field(default_factory=dict)
    # The decision was REDACT, but the redacted text would have been too large: it is BLOCK instead.
    redaction_too_large: bool = False


@dataclass(frozen=True)
class StreamProgress:
    """What a stream check knows after a chunk: the violations that later text can no longer undo, and
    BLOCK once a BLOCK violation among them is certain (None until then: the final decision may still be
    anything)."""

    violations_so_far: tuple[Violation, ...]
    certain_decision: Decision | None

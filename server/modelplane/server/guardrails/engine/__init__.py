"""The guardrails rule engine: compiles a policy's rules once and checks generated text against them.

Pure Python over RE2 and Aho-Corasick: no I/O, no gRPC, no database. A CompiledPolicy is immutable and
thread-safe, so the server caches one per policy revision and may check large texts off its event loop.
"""

from modelplane.server.guardrails.engine.compile import compile_policy
from modelplane.server.guardrails.engine.detectors import luhn_valid
from modelplane.server.guardrails.engine.rules import (
    DEFAULT_DECISIONS,
    MAX_EXCERPT_CONTEXT,
    MAX_LISTED,
    MAX_LISTED_PER_RULE,
    MAX_PATTERN_CHARS,
    MAX_REGEX_MEMORY,
    MAX_RULES,
    MAX_SCHEMA_CHARS,
    MAX_TERM_CHARS,
    MAX_TERMS,
    MAX_TEXT_CHARS,
    BannedTerms,
    CheckResult,
    CheckTimeout,
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
    StreamProgress,
    Violation,
)
from modelplane.server.guardrails.engine.scan import CompiledPolicy
from modelplane.server.guardrails.engine.stream import StreamCheck

__all__ = [
    "DEFAULT_DECISIONS",
    "MAX_EXCERPT_CONTEXT",
    "MAX_LISTED",
    "MAX_LISTED_PER_RULE",
    "MAX_PATTERN_CHARS",
    "MAX_REGEX_MEMORY",
    "MAX_RULES",
    "MAX_SCHEMA_CHARS",
    "MAX_TERMS",
    "MAX_TERM_CHARS",
    "MAX_TEXT_CHARS",
    "BannedTerms",
    "CheckResult",
    "CheckTimeout",
    "CompiledPolicy",
    "Decision",
    "Json",
    "Length",
    "Pattern",
    "Pii",
    "PiiKind",
    "RequiredPattern",
    "RuleKind",
    "RuleSpec",
    "Severity",
    "StreamCheck",
    "StreamProgress",
    "Violation",
    "compile_policy",
    "luhn_valid",
]

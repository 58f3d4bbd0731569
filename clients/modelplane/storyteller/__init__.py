"""The story teller: NarrativeGenerator writes narratives through an LLM and has each one checked by the
guardrails monitor, swapping in fallback content when a policy blocks it."""

from modelplane.storyteller.monitor import (
    Decision,
    GuardrailMonitor,
    Severity,
    Verdict,
    ViolationSummary,
    monitor_unreachable,
)
from modelplane.storyteller.narrative import (
    DEFAULT_LOCAL_FALLBACK,
    FailMode,
    Narrative,
    NarrativeGenerator,
    NarrativeStatus,
    TextGenerator,
)

__all__ = [
    "DEFAULT_LOCAL_FALLBACK",
    "Decision",
    "FailMode",
    "GuardrailMonitor",
    "Narrative",
    "NarrativeGenerator",
    "NarrativeStatus",
    "Severity",
    "TextGenerator",
    "Verdict",
    "ViolationSummary",
    "monitor_unreachable",
]

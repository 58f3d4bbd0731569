"""What a CheckStream has answered so far, read the same way by the async and the sync session."""

from __future__ import annotations

from modelplane.v1 import guardrails_pb2

__all__ = ["CheckStreamReplies"]


class CheckStreamReplies:
    """The violations, progress and verdicts a CheckStream's server has sent; a session records each
    response here and shows it through the properties below."""

    def __init__(self) -> None:
        self._violations: list[guardrails_pb2.Violation] = []
        self._received_chars = 0
        self._early: guardrails_pb2.CheckVerdict | None = None
        self._final: guardrails_pb2.CheckVerdict | None = None

    def _record(self, response: guardrails_pb2.CheckStreamResponse) -> None:
        if response.HasField("progress"):
            self._violations.extend(response.progress.violations)
            self._received_chars = response.progress.received_chars
        elif response.HasField("verdict"):
            if response.verdict.final:
                self._final = response.verdict
            else:
                self._early = response.verdict

    @property
    def blocked(self) -> bool:
        """Whether the server has said the text is blocked (early, or in the final verdict)."""
        verdict = self._early or self._final
        return verdict is not None and verdict.decision == guardrails_pb2.DECISION_BLOCK

    @property
    def early_verdict(self) -> guardrails_pb2.CheckVerdict | None:
        """The BLOCK verdict the server sent before the end of the text, if it has."""
        return self._early

    @property
    def violations(self) -> tuple[guardrails_pb2.Violation, ...]:
        """The violations reported so far (a violation is reported once it is certain)."""
        return tuple(self._violations)

    @property
    def received_chars(self) -> int:
        """How many characters the server said it had received, at its last progress message."""
        return self._received_chars

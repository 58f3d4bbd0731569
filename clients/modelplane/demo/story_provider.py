"""The demo's model: LocalProvider's deterministic answers, into a share of which the model writes a phrase
the story teller's policy blocks. The share depends on the model, so a canary can misbehave on purpose.

Which answers get the phrase is decided by a hash of the model and the prompt, so a run is repeatable:
the same prompt to the same model is always blocked, or never.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from modelplane.inference import Generation, GenerationRequest, LocalProvider
from modelplane.inference.local_provider import count_tokens

# The term the story teller's policy bans (story_setting.kids_policy), and the phrase that carries it.
BANNED_TERM = "dragonfire"
BANNED_PHRASE = f"and the {BANNED_TERM} swept across the square"


class StoryProvider:
    """Answers as LocalProvider does; a model's `mischief` (0 to 1, `default_mischief` for models not named)
    is the share of its answers that end with BANNED_PHRASE."""

    name = "local"

    def __init__(self, mischief: Mapping[str, float], *, default_mischief: float = 0.0) -> None:
        for rate in (*mischief.values(), default_mischief):
            if not 0.0 <= rate <= 1.0:
                raise ValueError("a mischief rate is a share, from 0 to 1")
        self._local = LocalProvider()
        self._mischief = dict(mischief)
        self._default = default_mischief

    async def generate(self, request: GenerationRequest) -> Generation:
        answer = await self._local.generate(request)
        rate = self._mischief.get(request.model, self._default)
        if not _draw(request, rate):
            return answer
        return Generation(
            text=f"{answer.text} {BANNED_PHRASE}",
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens + count_tokens(BANNED_PHRASE),
            finish_reason=answer.finish_reason,
        )


def _draw(request: GenerationRequest, rate: float) -> bool:
    """True for a `rate` share of (model, prompt) pairs, the same pairs every time."""
    hasher = hashlib.sha256(request.model.encode())
    for message in request.messages:
        hasher.update(b"\0" + message.content.encode())
    point = int.from_bytes(hasher.digest()[:8], "big") / 2**64
    return point < rate

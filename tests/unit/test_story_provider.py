"""The demo's model (modelplane.demo.story_provider): LocalProvider's answers, into a share of which it
writes the phrase the demo's policy blocks, the same answers for the same requests every time."""

from __future__ import annotations

import pytest

from modelplane.demo.story_provider import BANNED_PHRASE, BANNED_TERM, StoryProvider
from modelplane.inference import ChatMessage, GenerationRequest, LocalProvider


def request(model: str, prompt: str) -> GenerationRequest:
    return GenerationRequest(model=model, messages=(ChatMessage("user", prompt),))


async def test_the_share_of_banned_answers_is_the_models_mischief() -> None:
    provider = StoryProvider({"wild": 0.4, "tame": 0.02})
    prompts = [f"Tell reader {index} a story" for index in range(2_000)]
    wild = [BANNED_TERM in (await provider.generate(request("wild", p))).text for p in prompts]
    tame = [BANNED_TERM in (await provider.generate(request("tame", p))).text for p in prompts]
    assert 0.36 < sum(wild) / len(prompts) < 0.44
    assert 0.01 < sum(tame) / len(prompts) < 0.03
    # A model it does not name gets the default: none here.
    unnamed = [BANNED_TERM in (await provider.generate(request("other", p))).text for p in prompts[:200]]
    assert not any(unnamed)


async def test_answers_are_the_local_providers_with_the_phrase_and_its_tokens_added() -> None:
    provider = StoryProvider({"wild": 1.0})
    local = LocalProvider()
    asked = request("wild", "Tell me a story")
    answer, again, plain = (
        await provider.generate(asked),
        await provider.generate(asked),
        await local.generate(asked),
    )
    assert answer == again
    assert answer.text == f"{plain.text} {BANNED_PHRASE}"
    assert answer.output_tokens == plain.output_tokens + len(BANNED_PHRASE.split())
    assert answer.input_tokens == plain.input_tokens


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_a_rate_outside_zero_to_one_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="share"):
        StoryProvider({"wild": rate})

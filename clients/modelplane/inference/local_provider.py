"""A deterministic, offline Provider for tests and demos: the same request always gets the same answer.

Tokenisation: a token is a run of letters, digits and "_" or a single other non-space character,
so "Hello, world!" is four tokens. Input tokens are the tokens of every message's content; the
answer is made of whole words, one token each.

The answer's words are drawn from a small vocabulary by the SHA-256 of the request (model, roles,
contents and max_output_tokens), and it has 8 to 24 words; when max_output_tokens is smaller, the
answer is cut to that many tokens and finish_reason is "length", else "stop". Temperature is
ignored, which is what makes the answer repeatable.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator

from modelplane.inference.providers import Generation, GenerationRequest

_TOKEN = re.compile(r"\w+|[^\w\s]")

_VOCABULARY = (
    "amber", "beacon", "cedar", "delta", "ember", "fable", "garnet", "harbor",
    "island", "juniper", "kestrel", "lantern", "meadow", "nectar", "orchid", "pebble",
    "quartz", "river", "saffron", "thistle", "umber", "velvet", "willow", "yonder",
    "zephyr", "acorn", "bramble", "comet", "dune", "echo", "fern", "glade",
)  # fmt: skip

_MIN_WORDS = 8
_MAX_WORDS = 24


def count_tokens(text: str) -> int:
    """The number of tokens in `text` under this provider's tokenisation (see the module doc)."""
    return len(_TOKEN.findall(text))


def _request_digest(request: GenerationRequest) -> bytes:
    hasher = hashlib.sha256()
    hasher.update(request.model.encode())
    for message in request.messages:
        # Lengths before each part keep ("ab", "c") and ("a", "bc") apart.
        for part in (message.role, message.content):
            data = part.encode()
            hasher.update(len(data).to_bytes(8, "big"))
            hasher.update(data)
    hasher.update(str(request.max_output_tokens).encode())
    return hasher.digest()


def _stream(seed: bytes) -> Iterator[int]:
    counter = 0
    while True:
        yield from hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1


class LocalProvider:
    """Answers deterministically from a hash of the request, with no network.

    `latency` is slept before each answer (seconds). `cached_input_tokens` reports that many input
    tokens (at most all of them) as served from a prompt cache, and `reasoning_tokens` adds that many
    reasoning tokens to the output count, so pricing can be exercised. `requests` records every request
    in order, for tests that check which model was asked.
    """

    name = "local"

    def __init__(
        self,
        *,
        latency: float = 0.0,
        cached_input_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> None:
        if latency < 0 or cached_input_tokens < 0 or reasoning_tokens < 0:
            raise ValueError("latency and token counts must not be negative")
        self._latency = latency
        self._cached_input_tokens = cached_input_tokens
        self._reasoning_tokens = reasoning_tokens
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> Generation:
        """Answer `request` with words chosen by its hash (see the module doc)."""
        self.requests.append(request)
        if self._latency:
            await asyncio.sleep(self._latency)
        digest = _request_digest(request)
        stream = _stream(digest)
        natural = _MIN_WORDS + next(stream) % (_MAX_WORDS - _MIN_WORDS + 1)
        limit = request.max_output_tokens
        length = natural if limit is None else min(natural, limit)
        words = [_VOCABULARY[next(stream) % len(_VOCABULARY)] for _ in range(length)]
        input_tokens = sum(count_tokens(message.content) for message in request.messages)
        return Generation(
            text=" ".join(words),
            input_tokens=input_tokens,
            output_tokens=length + self._reasoning_tokens,
            cached_input_tokens=min(self._cached_input_tokens, input_tokens),
            reasoning_tokens=self._reasoning_tokens,
            finish_reason="length" if length < natural else "stop",
        )

"""A hand-driven clock for code that takes `clock` and `sleep`: time moves only when that code sleeps."""

from __future__ import annotations


class ManualClock:
    """Time that moves only when the code under test sleeps; `sleeps` records each wait."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

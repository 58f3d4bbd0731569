"""A pytest plugin: a test's timeout fires only inside its setup, call or teardown, where pytest reports it.

pytest-timeout's signal method arms one alarm over the whole run protocol of a test. An alarm that falls
between the phases, in a reporting hook (hypothesis's, for one), escapes pytest's per-phase error handling
and ends the whole session as INTERNALERROR, so every later test goes unrun. This plugin keeps
pytest-timeout's settings (the `timeout` ini value, `--timeout`, `@pytest.mark.timeout`) and its budget of
one timeout per test, but arms the alarm on entering each phase with the time the test has left and disarms
it on leaving. A timed-out phase is then an ordinary failure (or a setup/teardown error), and the run goes
on. pytest-timeout's thread method is left to pytest-timeout.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Generator
from types import FrameType
from typing import Any

import pytest

_DEADLINE = pytest.StashKey[float]()
_TIMEOUT = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """Takes the test's budget instead of pytest-timeout's single alarm (signal method only)."""
    if settings.func_only or settings.method != "signal":
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    item.stash[_TIMEOUT] = float(settings.timeout)
    item.stash[_DEADLINE] = time.monotonic() + float(settings.timeout)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    if _DEADLINE not in item.stash:
        return None
    del item.stash[_DEADLINE]
    return True


def _timed_phase(item: pytest.Item, phase: str, *, at_least: float = 0.0) -> Generator[None, object, object]:
    deadline = item.stash.get(_DEADLINE, None)
    if deadline is None:
        return (yield)
    timeout = item.stash[_TIMEOUT]
    message = f"Timeout (>{timeout:g}s) from pytest-timeout, in {phase}."
    left = max(deadline - time.monotonic(), at_least)
    if left <= 0:
        pytest.fail(message, pytrace=False)

    def expire(signum: int, frame: FrameType | None) -> None:
        pytest.fail(message, pytrace=True)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, left)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _timed_phase(item, "setup"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _timed_phase(item, "the test"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    # Teardown always runs, with a grace of its own: it releases what the test held (servers, databases),
    # which a test that timed out needs more than any other.
    return (yield from _timed_phase(item, "teardown", at_least=min(item.stash.get(_TIMEOUT, 0.0), 30.0)))

"""ProtoMemo: one conversion per domain value object, never a stale or foreign message, bounded."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modelplane.server.proto_memo import ProtoMemo


@dataclass(frozen=True)
class Value:
    name: str


class Builds:
    """A build function that counts its calls and returns a fresh list (a stand-in for a message)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, value: Value) -> list[str]:
        self.calls.append(value.name)
        return [value.name]


def test_the_same_object_is_converted_once_and_gets_the_same_message() -> None:
    build = Builds()
    memo = ProtoMemo(build)
    value = Value("a")
    first = memo(value)
    assert memo(value) is first
    assert build.calls == ["a"]


def test_an_equal_but_new_object_is_converted_again() -> None:
    # A read cache makes a new object on every reload: the memo must not serve the old message for it.
    build = Builds()
    memo = ProtoMemo(build)
    old, new = Value("a"), Value("a")
    assert memo(old) is not memo(new)
    assert build.calls == ["a", "a"]


def test_the_oldest_entry_goes_first_when_full() -> None:
    build = Builds()
    memo = ProtoMemo(build, max_entries=2)
    a, b, c = Value("a"), Value("b"), Value("c")
    memo(a)
    memo(b)
    memo(c)
    assert len(memo) == 2
    memo(c)
    memo(b)
    assert build.calls == ["a", "b", "c"]
    memo(a)  # dropped: converted again
    assert build.calls == ["a", "b", "c", "a"]


def test_an_entry_keeps_its_object_so_its_id_is_never_reused_for_another() -> None:
    build = Builds()
    memo = ProtoMemo(build)
    for i in range(1000):
        # Each value is dropped by the caller at once; were the memo not holding it, CPython would hand
        # the same id to the next one and the memo would answer with the previous value's message.
        assert memo(Value(str(i))) == [str(i)]
    assert len(build.calls) == 1000


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        ProtoMemo(Builds(), max_entries=0)

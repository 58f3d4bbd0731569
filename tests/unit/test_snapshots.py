"""JSON snapshots of domain values: their exact form, and a round trip back to an equal value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from modelplane.pricing import Prices
from modelplane.server.registry.domain import ModelVersion, VersionState
from modelplane.server.store.snapshots import from_json, to_json


class Color(StrEnum):
    RED = "red"


@dataclass(frozen=True)
class Leaf:
    color: Color
    ratio: float
    flag: bool
    missing: int | None


@dataclass(frozen=True)
class Tree:
    name: str
    leaves: tuple[Leaf, ...]
    labels: dict[str, str]
    at: datetime


def test_the_json_form_of_a_tree() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    tree = Tree("t", (Leaf(Color.RED, 0.5, True, None),), {"k": "v"}, at)
    # An enum that is also a str is stored by its value, not passed through as a str.
    assert to_json(tree) == {
        "name": "t",
        "leaves": [{"color": "red", "ratio": 0.5, "flag": True, "missing": None}],
        "labels": {"k": "v"},
        "at": "2026-01-02T03:04:05.000006+00:00",
    }
    assert type(to_json(tree)["leaves"][0]["color"]) is str
    assert from_json(Tree, to_json(tree)) == tree


def test_a_model_version_comes_back_equal() -> None:
    now = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    version = ModelVersion(
        model_id="chat",
        version_id=3,
        provider="openai",
        description="d",
        source_uri="s3://m/3",
        source_sha256="a" * 64,
        capabilities=("chat", "tool_use"),
        context_window=128_000,
        max_output_tokens=16_384,
        pricing=Prices(currency_code="USD", input=1, output=2, cached_input=None, reasoning=None),
        state=VersionState.DEPRECATED,
        labels={"eval": "passed"},
        parent_version="",
        source_run="",
        aliases=("prod",),
        create_time=now,
        update_time=now,
        etag="e",
    )
    assert from_json(ModelVersion, to_json(version)) == version

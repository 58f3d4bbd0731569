"""The shared routing function: sticky, monotone slot split, true to the weights; rendezvous endpoints.

The golden values pin ROUTING_VERSION 1: a change to any of them breaks agreement between clients and
servers already deployed, and must come with a new routing version instead.
"""

from __future__ import annotations

import bisect
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.client.routing import (
    ENDPOINT_BUCKETS,
    ROUTING_VERSION,
    EndpointSet,
    pick_endpoint,
    pick_slot,
    random_point,
    route_hashes,
    route_point,
)

KEY_COUNT = 100_000
KEYS = [f"key-{index}" for index in range(KEY_COUNT)]
# Worked out once for the module: the hypothesis examples below count over them with bisect.
POINTS = [route_point(key) for key in KEYS]
SORTED_POINTS = sorted(POINTS)

addresses = st.lists(
    st.from_regex(r"10\.0\.[0-9]{1,3}\.[0-9]{1,3}:[0-9]{2,5}", fullmatch=True),
    min_size=2,
    max_size=12,
    unique=True,
)
routing_keys = st.text(max_size=64)


def canary_count(weight_bp: int) -> int:
    """How many of the module's keys pick_slot sends to the canary at this weight."""
    return bisect.bisect_left(SORTED_POINTS, weight_bp / 10_000)


def test_routing_version_is_one() -> None:
    assert ROUTING_VERSION == 1


@pytest.mark.parametrize(
    ("key", "point", "bucket"),
    [
        ("", 0.3930486032652399, 24996),
        ("user-1", 0.3014808242429383, 37123),
        ("tenant/42", 0.3911405406055769, 64434),
        ("ключ", 0.0913717329907986, 7895),
    ],
)
def test_golden_points(key: str, point: float, bucket: int) -> None:
    assert route_point(key) == point
    assert route_hashes(key) == (point, bucket)
    digest = hashlib.sha256(b"modelplane-route:" + key.encode()).digest()
    assert int.from_bytes(digest[:8], "big") / 2**64 == point


def test_golden_endpoints() -> None:
    table = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    chosen = {key: table[pick_endpoint(key, table)] for key in ("user-1", "user-2", "user-3", "user-5")}
    assert chosen == {
        "user-1": "10.0.0.2:8080",
        "user-2": "10.0.0.1:8080",
        "user-3": "10.0.0.3:8080",
        "user-5": "10.0.0.2:8080",
    }


@given(routing_keys)
def test_point_is_in_unit_interval_and_agrees_with_route_hashes(key: str) -> None:
    point, bucket = route_hashes(key)
    assert 0.0 <= point < 1.0
    assert point == route_point(key)
    assert 0 <= bucket < ENDPOINT_BUCKETS


def test_slot_edges() -> None:
    assert pick_slot(0.0, 0) == "stable"
    assert pick_slot(0.0, 1) == "canary"
    assert pick_slot(0.5, 5_000) == "stable"
    assert pick_slot(0.4999, 5_000) == "canary"
    assert pick_slot(0.999999, 10_000) == "canary"
    assert canary_count(0) == 0
    assert canary_count(10_000) == KEY_COUNT


@given(routing_keys, st.integers(0, 10_000), st.integers(0, 10_000))
def test_raising_the_canary_weight_never_moves_a_canary_key_back(key: str, first: int, second: int) -> None:
    low, high = sorted((first, second))
    point = route_point(key)
    if pick_slot(point, low) == "canary":
        assert pick_slot(point, high) == "canary"
    if pick_slot(point, high) == "stable":
        assert pick_slot(point, low) == "stable"


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_canary_set_only_grows_over_100k_keys(first: int, second: int) -> None:
    low, high = sorted((first, second))
    at_low = [point for point in POINTS if pick_slot(point, low) == "canary"]
    assert all(pick_slot(point, high) == "canary" for point in at_low)
    assert len(at_low) == canary_count(low)


@settings(max_examples=500)
@given(st.integers(0, 10_000))
def test_split_is_within_one_point_of_the_weight_over_100k_keys(weight_bp: int) -> None:
    share = canary_count(weight_bp) / KEY_COUNT
    assert abs(share - weight_bp / 10_000) <= 0.01


def test_random_points_spread_evenly() -> None:
    points = [random_point() for _ in range(KEY_COUNT)]
    assert all(0.0 <= point < 1.0 for point in points)
    for weight_bp in (100, 500, 2_500, 5_000, 9_000):
        share = sum(pick_slot(point, weight_bp) == "canary" for point in points) / KEY_COUNT
        assert abs(share - weight_bp / 10_000) <= 0.01


@settings(max_examples=30, deadline=None)
@given(addresses, st.data())
def test_removing_an_endpoint_moves_only_its_keys(table: list[str], data: st.DataObject) -> None:
    removed = data.draw(st.sampled_from(table))
    remaining = [address for address in table if address != removed]
    keys = KEYS[:1_000]
    before = EndpointSet(table)
    after = EndpointSet(remaining)
    moved = 0
    for key in keys:
        _, bucket = route_hashes(key)
        was = table[before.pick(bucket)]
        now = remaining[after.pick(bucket)]
        if was == removed:
            moved += 1
        else:
            assert now == was, key
    # The removed endpoint held keys, and they all went elsewhere (checked above by construction).
    assert moved > 0


@settings(max_examples=30, deadline=None)
@given(addresses, st.data())
def test_adding_an_endpoint_moves_keys_only_onto_it(table: list[str], data: st.DataObject) -> None:
    added = table[-1]
    existing = table[:-1]
    position = data.draw(st.integers(0, len(existing)))
    grown = [*existing[:position], added, *existing[position:]]
    for key in KEYS[:1_000]:
        was = existing[pick_endpoint(key, existing)]
        now = grown[pick_endpoint(key, grown)]
        assert now in (was, added)


@settings(max_examples=50, deadline=None)
@given(addresses, routing_keys, st.randoms(use_true_random=False))
def test_endpoint_choice_ignores_order_and_agrees_with_endpoint_set(
    table: list[str], key: str, rng: random.Random
) -> None:
    shuffled = list(table)
    rng.shuffle(shuffled)
    chosen = table[pick_endpoint(key, table)]
    assert shuffled[pick_endpoint(key, shuffled)] == chosen
    _, bucket = route_hashes(key)
    assert table[EndpointSet(table).pick(bucket)] == chosen


@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_endpoints_share_keys_evenly(count: int) -> None:
    table = [f"10.1.0.{index}:9000" for index in range(count)]
    endpoints = EndpointSet(table)
    hits = [0] * count
    for key in KEYS:
        hits[endpoints.pick(route_hashes(key)[1])] += 1
    for hit in hits:
        assert abs(hit / KEY_COUNT - 1 / count) <= 0.02


def test_random_endpoint_spreads_over_all() -> None:
    endpoints = EndpointSet(["a:1", "b:1", "c:1"])
    seen = {endpoints.pick_random() for _ in range(300)}
    assert seen == {0, 1, 2}


def test_no_endpoints_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no endpoints"):
        pick_endpoint("key", [])
    with pytest.raises(ValueError, match="no endpoints"):
        EndpointSet([]).pick(0)
    with pytest.raises(ValueError, match="no endpoints"):
        EndpointSet([]).pick_random()


def test_single_endpoint_takes_every_key() -> None:
    assert {pick_endpoint(key, ["only:1"]) for key in KEYS[:500]} == {0}

"""The routing function of a deployment's traffic table, shared by the server (ResolveRoute) and clients.

One request is routed in two independent choices, both derived from its routing key:

* the slot: the key is hashed to a point in [0, 1) (`route_point`: the first 8 bytes of
  sha256(b"modelplane-route:" + key.encode()), big-endian, divided by 2**64) and goes to the canary when
  the point is below the canary's share (`pick_slot`). Raising the canary's weight therefore only ever moves
  keys from stable to canary, never back: the split is sticky and monotone.
* the endpoint within the slot: rendezvous (highest random weight) hashing over 65,536 buckets
  (`pick_endpoint`). The key's bucket is bytes 8..10 of the same digest (big-endian), so it is independent
  of the slot choice. Each address has a seed (the first 8 bytes of sha256(b"modelplane-endpoint:" +
  address.encode()), big-endian); the score of an address for a bucket is splitmix64's finalizer of
  (bucket XOR seed), and the highest score wins (ties: the smaller address). Adding or removing one endpoint
  moves only the buckets, and so the keys, that land on, or were on, that endpoint. Hashing buckets rather
  than keys lets a client work each bucket's winner out once per endpoint set, which keeps a routing
  decision to one sha256 and a list lookup.

A request without a routing key takes `random_point()` and a uniformly random endpoint.

ROUTING_VERSION names this exact scheme; any change to it (prefixes, byte ranges, mixing) is a new version,
because a client and a server that disagree would send the same key to different places.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "ENDPOINT_BUCKETS",
    "ROUTING_VERSION",
    "EndpointSet",
    "Slot",
    "endpoint_seed",
    "pick_endpoint",
    "pick_slot",
    "random_point",
    "route_hashes",
    "route_point",
]

ROUTING_VERSION = 1

Slot = Literal["stable", "canary"]

ENDPOINT_BUCKETS = 1 << 16

_ROUTE_PREFIX = b"modelplane-route:"
_ENDPOINT_PREFIX = b"modelplane-endpoint:"
_MASK64 = (1 << 64) - 1
_TWO_TO_64 = float(1 << 64)
_BASIS_POINTS = 10_000
_sha256 = hashlib.sha256

# Routing needs spread, not unpredictability; one generator avoids seeding one per call.
_random = random.Random()


def route_hashes(routing_key: str) -> tuple[float, int]:
    """The key's slot point in [0, 1) and its endpoint bucket in [0, ENDPOINT_BUCKETS), from one sha256."""
    digest = _sha256(_ROUTE_PREFIX + routing_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_TO_64, int.from_bytes(digest[8:10], "big")


def route_point(routing_key: str) -> float:
    """The key's point in [0, 1): the first 8 bytes of sha256(b"modelplane-route:" + key) / 2**64."""
    digest = _sha256(_ROUTE_PREFIX + routing_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _TWO_TO_64


def random_point() -> float:
    """A point in [0, 1) for a request without a routing key, so that such requests spread evenly."""
    return _random.random()


def pick_slot(point: float, canary_weight_bp: int) -> Slot:
    """The slot of a point: the canary when the point is below canary_weight_bp / 10,000, else stable."""
    return "canary" if point < canary_weight_bp / _BASIS_POINTS else "stable"


@functools.lru_cache(maxsize=8192)
def endpoint_seed(address: str) -> int:
    """The rendezvous seed of an endpoint address (cached: a table's addresses change rarely)."""
    digest = _sha256(_ENDPOINT_PREFIX + address.encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _score(bucket: int, seed: int) -> int:
    # splitmix64's finalizer: a bijection with full avalanche, so each (bucket, endpoint) pair gets an
    # independent-looking score from two integers without one sha256 per endpoint.
    x = bucket ^ seed
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class EndpointSet:
    """The endpoints of one slot, remembering each bucket's winner once worked out (at most 65,536 small
    ints), so routing many requests to the same endpoints costs a list lookup per request."""

    __slots__ = ("_winners", "addresses", "seeds")

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses: tuple[str, ...] = tuple(addresses)
        self.seeds: tuple[int, ...] = tuple(endpoint_seed(address) for address in self.addresses)
        self._winners: list[int] = [-1] * ENDPOINT_BUCKETS if self.addresses else []

    def __len__(self) -> int:
        return len(self.addresses)

    def __repr__(self) -> str:
        return f"EndpointSet({list(self.addresses)!r})"

    def _winner(self, bucket: int) -> int:
        seeds = self.seeds
        addresses = self.addresses
        best = 0
        best_score = _score(bucket, seeds[0])
        for index in range(1, len(seeds)):
            score = _score(bucket, seeds[index])
            if score > best_score or (score == best_score and addresses[index] < addresses[best]):
                best, best_score = index, score
        self._winners[bucket] = best
        return best

    def pick(self, bucket: int) -> int:
        """The index (in `addresses`) of the endpoint for a bucket; ValueError if there are no endpoints."""
        if not self.addresses:
            raise ValueError("no endpoints to pick from")
        winner = self._winners[bucket]
        return winner if winner >= 0 else self._winner(bucket)

    def pick_random(self) -> int:
        """A uniformly random endpoint index, for a request without a routing key."""
        if not self.addresses:
            raise ValueError("no endpoints to pick from")
        return _random.randrange(len(self.addresses))


def pick_endpoint(routing_key: str, endpoint_addresses: Sequence[str]) -> int:
    """The index in `endpoint_addresses` of the endpoint the key goes to, by rendezvous hashing: it does not
    depend on the order of the addresses, and removing one endpoint moves only that endpoint's keys.
    ValueError if there are no addresses. (Routing many keys to one set: build an EndpointSet once.)"""
    if not endpoint_addresses:
        raise ValueError("no endpoints to pick from")
    digest = _sha256(_ROUTE_PREFIX + routing_key.encode()).digest()
    bucket = int.from_bytes(digest[8:10], "big")
    seeds = [endpoint_seed(address) for address in endpoint_addresses]
    best = 0
    best_score = _score(bucket, seeds[0])
    for index in range(1, len(seeds)):
        score = _score(bucket, seeds[index])
        if score > best_score or (
            score == best_score and endpoint_addresses[index] < endpoint_addresses[best]
        ):
            best, best_score = index, score
    return best

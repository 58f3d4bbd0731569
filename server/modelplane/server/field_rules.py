"""Field rules every capability shares: collecting violations, text sizes, labels, request ids, masks,
the int64 range and currency codes.

Each broken rule is reported with its request field path, and every rule of a request is reported at
once, so the caller fixes them all in one go.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from modelplane.server.errors import FieldViolation, InvalidArgument

_LABEL_KEY = re.compile(r"[a-z0-9_-]{1,63}")
# The range of an int64 field, and of a Postgres bigint.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# An ISO 4217 currency code, in ASCII only: str.isupper() would also take "ÄÖÜ".
CURRENCY_CODE = re.compile(r"[A-Z]{3}")
MAX_LABELS = 64
MAX_REQUEST_ID = 128


class Violations:
    """Collects every broken rule of one request, so the caller fixes them all in one go."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, path: str, description: str) -> None:
        self.items.append(FieldViolation(path, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def check_text(v: Violations, path: str, value: str, limit: int) -> None:
    if len(value) > limit:
        v.add(path, f"is {len(value)} characters long; at most {limit} are allowed")


def check_labels(v: Violations, path: str, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        v.add(path, f"has {len(labels)} entries; at most {MAX_LABELS} are allowed")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            v.add(f"{path}[{key!r}]", "key must be 1 to 63 lower-case letters, digits, '_' or '-'")
        if len(value) > 63:
            v.add(f"{path}[{key!r}]", "value must be at most 63 characters")


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument.field(
            "request_id", f"must be at most {MAX_REQUEST_ID} characters; a UUID is advised"
        )


def check_mask(paths: frozenset[str], allowed: frozenset[str]) -> frozenset[str]:
    """The paths to apply: "*" means every allowed field; an empty or unknown path is refused."""
    if not paths:
        raise InvalidArgument.field(
            "update_mask", f"is required: name the fields to change among {sorted(allowed)}"
        )
    if "*" in paths:
        return allowed
    unknown = sorted(paths - allowed)
    if unknown:
        raise InvalidArgument.field(
            "update_mask.paths", f"{unknown} cannot be updated; updatable fields are {sorted(allowed)}"
        )
    return paths

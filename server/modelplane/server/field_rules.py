"""Field rules every capability shares: collecting violations, text sizes, labels, request ids, masks,
the int64 range and currency codes.

Each broken rule is reported with its request field path, and every rule of a request is reported at
once, so the caller fixes them all in one go.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from modelplane.server.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

_LABEL_KEY = re.compile(r"[a-z0-9_-]{1,63}")
# The range of an int64 field, and of a Postgres bigint.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# An ISO 4217 currency code, in ASCII only: str.isupper() would also take "ÄÖÜ".
CURRENCY_CODE = re.compile(r"[A-Z]{3}")
MAX_LABELS = 64
MAX_REQUEST_ID = 128


class Violations:
    """Collects every broken rule of one request, so the caller fixes them all in one go.

    The pattern of a request's checks: one Violations, every field checked into it (`add`, or `collect`
    around a check that raises, such as a name parser or the guardrails' rule compiler; `extend` with what
    a conversion refused), then `raise_if_any` once, before any other work.

    A field is named once, with the first rule it breaks: a whole check run after the field checks (a
    compiler, the window check of a converted default) often meets the same bad field again, in its own words.
    """

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []
        self._named: set[str] = set()
        # The reason of the first collected error that had one of its own (INVALID_PAGE_TOKEN, say): the
        # answer keeps it, so a client matching on it still sees it beside the other bad fields.
        self.reason: str | None = None

    def add(self, path: str, description: str) -> None:
        self.extend([FieldViolation(path, description)])

    def extend(self, violations: Iterable[FieldViolation]) -> None:
        for item in violations:
            if item.field not in self._named:
                self._named.add(item.field)
                self.items.append(item)

    def collect(self, check: Callable[[], T], fallback: T) -> T:
        """What `check` returns; when it raises InvalidArgument, its violations join these and `fallback`
        stands in for its result, so that the checks after it still run."""
        try:
            return check()
        except InvalidArgument as exc:
            self.extend(exc.violations)
            if self.reason is None and exc.reason != InvalidArgument.reason:
                self.reason = exc.reason
            return fallback

    def raise_if_any(self, metadata: Mapping[str, str] | None = None) -> None:
        if self.items:
            raise InvalidArgument(self.items, reason=self.reason, metadata=metadata)


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


def check_request_id(request_id: str, v: Violations | None = None, *, path: str = "request_id") -> None:
    """The request id's bound, into `v` when given (else raised at once)."""
    if len(request_id) > MAX_REQUEST_ID:
        description = f"must be at most {MAX_REQUEST_ID} characters; a UUID is advised"
        if v is None:
            raise InvalidArgument.field(path, description)
        v.add(path, description)


def parse_with_request_id(parse: Callable[[], T], request_id: str) -> T:
    """What `parse` returns (the parts of the one resource name a request gives), its violations and the
    request id's named together."""
    v = Violations()
    check_request_id(request_id, v)
    try:
        parsed = parse()
    except InvalidArgument as exc:
        raise InvalidArgument([*exc.violations, *v.items], reason=exc.reason) from None
    v.raise_if_any()
    return parsed


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

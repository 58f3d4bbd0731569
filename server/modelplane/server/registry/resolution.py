"""Constraint resolution: which READY version satisfies a request, and why each other one does not.

Constraints are checked in a fixed order, and a rejected candidate names only the first it failed, so a
caller sees at once which constraint to relax. Among matches the tie-break is the lowest output price,
then the newest version (create_time), then the highest model id and version number, so the answer is
deterministic. registry/store.py's best_match is the same rule in SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modelplane.server.errors import shown
from modelplane.server.registry.domain import Constraints, ModelVersion, PriceCap, Rejection

MAX_REJECTIONS = 100


def _price_failure(path: str, cap: PriceCap | None, currency: str, price: int, what: str) -> Rejection | None:
    if cap is None:
        return None
    if cap.currency_code != currency:
        return Rejection("", path, f"priced in {currency}, not {cap.currency_code}")
    if price > cap.micros:
        return Rejection("", path, f"{what} {price} > {cap.micros} micros per million tokens")
    return None


def first_failure(version: ModelVersion, model_labels: Mapping[str, str], c: Constraints) -> Rejection | None:
    """The first constraint the version fails, or None when it satisfies all of them."""
    failure: Rejection | None = None
    if c.model_id and version.model_id != c.model_id:
        failure = Rejection("", "constraints.model", f"belongs to models/{version.model_id}")
    elif c.provider and version.provider != c.provider:
        failure = Rejection(
            "", "constraints.provider", f"provider is {shown(version.provider)}, not {shown(c.provider)}"
        )
    elif missing := [cap for cap in c.required_capabilities if cap not in version.capabilities]:
        failure = Rejection("", "constraints.required_capabilities", f"lacks {', '.join(missing)}")
    elif c.min_context_window > 0 and version.context_window < c.min_context_window:
        failure = Rejection(
            "",
            "constraints.min_context_window",
            f"context_window {version.context_window} < {c.min_context_window}",
        )
    else:
        p = version.pricing
        failure = _price_failure(
            "constraints.max_input_price", c.max_input_price, p.currency_code, p.input, "input price"
        ) or _price_failure(
            "constraints.max_output_price", c.max_output_price, p.currency_code, p.output, "output price"
        )
        if failure is None:
            for key, want in sorted(c.labels.items()):
                have = version.labels.get(key, model_labels.get(key))
                if have != want:
                    now = "missing" if have is None else shown(have)
                    failure = Rejection(
                        "",
                        f"constraints.labels[{shown(key)}]",
                        f"label {shown(key)} is {now}, not {shown(want)}",
                    )
                    break
    if failure is None:
        return None
    return Rejection(version.name, failure.constraint, failure.reason)


def choose(
    candidates: Sequence[tuple[ModelVersion, Mapping[str, str]]], c: Constraints
) -> tuple[ModelVersion | None, list[Rejection]]:
    """The best matching version (or None) and the rejections of the others (at most MAX_REJECTIONS)."""
    matches: list[ModelVersion] = []
    rejections: list[Rejection] = []
    for version, model_labels in candidates:
        failure = first_failure(version, model_labels, c)
        if failure is None:
            matches.append(version)
        elif len(rejections) < MAX_REJECTIONS:
            rejections.append(failure)
    if not matches:
        return None, rejections
    newest_first = sorted(matches, key=lambda v: (v.create_time, v.model_id, v.version_id), reverse=True)
    best = min(newest_first, key=lambda v: v.pricing.output)
    return best, rejections

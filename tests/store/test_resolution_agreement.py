"""Constraint resolution in SQL (the fast path) agrees with the reference rules in resolution.py."""

from __future__ import annotations

import random

from modelplane.pricing import Prices
from modelplane.server.registry import store
from modelplane.server.registry.domain import (
    CAPABILITIES,
    Constraints,
    ModelFields,
    PriceCap,
    VersionFields,
    VersionState,
)
from modelplane.server.registry.resolution import choose
from modelplane.server.store.pool import Connection, Database
from tests.support.registry_rows import insert_version

PROVIDERS = ("openai", "anthropic", "local")
LABEL_VALUES = ("a", "b")


async def _seed(conn: Connection, rng: random.Random) -> None:
    await conn.execute("TRUNCATE models CASCADE")
    for m in range(rng.randint(1, 5)):
        model_id = f"m{m}"
        labels = {k: rng.choice(LABEL_VALUES) for k in ("team", "tier") if rng.random() < 0.5}
        await store.insert_model(
            conn, model_id, ModelFields(provider=rng.choice(PROVIDERS), labels=labels), "e"
        )
        for _ in range(rng.randint(0, 4)):
            window = rng.choice((4_000, 8_000, 32_000, 128_000))
            version = VersionFields(
                source_uri="x",
                context_window=window,
                max_output_tokens=window // 4,
                pricing=Prices(
                    currency_code=rng.choice(("USD", "USD", "EUR")),
                    input=rng.choice((0, 1_000, 5_000)),
                    output=rng.choice((1_000, 2_000, 9_000)),
                ),
                capabilities=tuple(c for c in CAPABILITIES if rng.random() < 0.3),
                state=rng.choice((VersionState.READY, VersionState.READY, VersionState.DEPRECATED)),
                labels={k: rng.choice(LABEL_VALUES) for k in ("tier",) if rng.random() < 0.4},
            )
            await insert_version(conn, model_id, version)


def _constraints(rng: random.Random) -> Constraints:
    def cap() -> PriceCap | None:
        return (
            PriceCap(rng.choice(("USD", "EUR")), rng.choice((0, 1_000, 5_000)))
            if rng.random() < 0.3
            else None
        )

    return Constraints(
        model_id=f"m{rng.randint(0, 5)}" if rng.random() < 0.2 else "",
        provider=rng.choice(PROVIDERS) if rng.random() < 0.3 else "",
        required_capabilities=tuple(c for c in CAPABILITIES if rng.random() < 0.1),
        min_context_window=rng.choice((0, 0, 8_000, 32_000, 200_000)),
        max_input_price=cap(),
        max_output_price=cap(),
        labels={k: rng.choice(LABEL_VALUES) for k in ("team", "tier") if rng.random() < 0.3},
    )


async def test_sql_best_match_agrees_with_the_reference_rules(database: Database) -> None:
    rng = random.Random(20261123)
    compared = matched = 0
    async with database.connection() as conn:
        for _ in range(25):
            await _seed(conn, rng)
            candidates = await store.ready_versions(conn, model_id="", limit=10_000)
            for _ in range(20):
                c = _constraints(rng)
                in_scope = [pair for pair in candidates if not c.model_id or pair[0].model_id == c.model_id]
                expected, _rejections = choose(in_scope, c)
                found = await store.best_match(conn, c)
                assert (None if found is None else found[0].name) == (
                    None if expected is None else expected.name
                ), c
                compared += 1
                matched += expected is not None
    # The random registries exercised both outcomes, so the agreement is not vacuous.
    assert compared == 500
    assert 50 < matched < 450

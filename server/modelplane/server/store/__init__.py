"""Postgres storage shared by every capability: pool, migrations, revisions, idempotency."""

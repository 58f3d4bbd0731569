"""Postgres URL helpers: the same server, another database."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def with_database(url: str, database: str) -> str:
    """The URL with its database (the path) replaced, keeping host, socket dir and options."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))

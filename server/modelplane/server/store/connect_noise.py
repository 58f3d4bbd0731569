"""A log filter for one report asyncpg causes and nobody can act on (see _ConnectRaceFilter)."""

from __future__ import annotations

import logging


class _ConnectRaceFilter(logging.Filter):
    """Keeps asyncpg's orphaned connect future out of the ERROR log.

    When a connection attempt is cancelled (a connect timeout, a pool closing) just as its TCP connection
    opens, which happens again and again while Postgres starts, asyncpg (0.32, TLSUpgradeProto) leaves a
    future holding ConnectionError("unexpected connection_lost() call") that nobody reads, and asyncio
    reports it at ERROR as "Future exception was never retrieved". The attempt itself failed and was
    handled; the report is noise, so it is logged at DEBUG, and only when DEBUG is on.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if (
            isinstance(error, ConnectionError)
            and "unexpected connection_lost() call" in str(error)
            and record.getMessage().startswith("Future exception was never retrieved")
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_CONNECT_RACE_FILTER = _ConnectRaceFilter()


def quiet_connect_races() -> None:
    """Installs _ConnectRaceFilter on asyncio's logger (once, however often called)."""
    asyncio_log = logging.getLogger("asyncio")
    if _CONNECT_RACE_FILTER not in asyncio_log.filters:
        asyncio_log.addFilter(_CONNECT_RACE_FILTER)

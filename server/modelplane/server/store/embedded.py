"""The embedded Postgres (the pgserver wheel, the `embedded` extra) that runs when no database URL is given.

Every command keeps it in the same place: `<data dir>/pgdata`. Several processes may use it at once (a
running server and a `modelplane token` command): pgserver starts it for the first, records each user
process, and stops it when the last one exits.

Postgres refuses to run as root; pgserver then creates a system user `pgserver`, gives the data
directory to it and opens read/traverse permissions on the directory's parents. The README says so.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The folder under the data dir that holds Postgres's own files.
PGDATA = "pgdata"


class EmbeddedPostgresError(RuntimeError):
    """The embedded Postgres cannot run: its package is missing, or it failed to start. The message
    says what to do."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded Postgres; it is stopped when the last process using it exits."""

    url: str
    data_dir: Path
    handle: Any

    def stop(self) -> None:
        """Stops the embedded Postgres now (unless another process still uses it)."""
        self.handle.cleanup()


def postgres_dir(data_dir: Path) -> Path:
    """Where the embedded Postgres of a data dir keeps its files."""
    return data_dir.resolve() / PGDATA


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Starts (or joins) the embedded Postgres of `data_dir` (its files in data_dir/pgdata); blocks until
    it accepts connections. Raises EmbeddedPostgresError with a one-line reason."""
    data_dir = data_dir.resolve()
    pgdata = postgres_dir(data_dir)
    if (data_dir / "PG_VERSION").exists():
        raise EmbeddedPostgresError(
            f"{data_dir} is itself a Postgres data directory (made by an older `modelplane token` or"
            f" `migrate`); every command now keeps the embedded Postgres in {pgdata}: move that directory"
            " there, or pass another --data-dir"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver import get_server
    except ModuleNotFoundError as exc:
        raise EmbeddedPostgresError(
            f"the embedded Postgres needs {exc.name}, which this install lacks:"
            " pip install 'modelplane[embedded]', or pass --database-url"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver keeps its lock file under XDG_RUNTIME_DIR and warns when it is unset. Every process that
    # shares this Postgres must take the same lock, so the place depends on the data dir alone.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir))
    # pgserver logs every initdb/pg_ctl line at INFO; the server's own first lines matter more.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    try:
        handle = get_server(pgdata, cleanup_mode="stop")
    except (subprocess.SubprocessError, OSError) as exc:
        raise EmbeddedPostgresError(
            f"the embedded Postgres in {pgdata} did not start ({exc}); its log is {pgdata / 'log'}"
        ) from exc
    url = handle.get_uri()
    log.info("embedded Postgres running with its data in %s", pgdata)
    return EmbeddedPostgres(url=url, data_dir=pgdata, handle=handle)

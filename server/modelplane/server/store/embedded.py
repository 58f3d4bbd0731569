"""The embedded Postgres (the pgserver wheel) that runs when no database URL is given.

Postgres refuses to run as root; pgserver then creates a system user `pgserver`, gives the data
directory to it and opens read/traverse permissions on the directory's parents. The README says so.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded Postgres; it is stopped when the last process using it exits."""

    url: str
    data_dir: Path
    handle: Any

    def stop(self) -> None:
        """Stops the embedded Postgres now (unless another process still uses it)."""
        self.handle.cleanup()


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Starts (or reuses) the embedded Postgres whose data lives in data_dir; blocks until it accepts."""
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # pgserver keeps its lock file under XDG_RUNTIME_DIR and warns when it is unset.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent))
    # pgserver logs every initdb/pg_ctl line at INFO; the server's own first lines matter more.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        handle = get_server(data_dir, cleanup_mode="stop")
    url = handle.get_uri()
    log.info("embedded Postgres running with its data in %s", data_dir)
    return EmbeddedPostgres(url=url, data_dir=data_dir, handle=handle)

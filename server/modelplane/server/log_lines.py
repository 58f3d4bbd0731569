"""How a server process writes its log: one line a record on stderr, made as cheaply as the logging module
allows, since the access log writes one for every call."""

from __future__ import annotations

import logging
import time

# Seconds are formatted once each: the rest of a timestamp is its milliseconds.
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class _Formatter(logging.Formatter):
    """The standard format ("2026-01-31 12:00:00,123 INFO name: message"), with the time of day formatted
    once a second instead of for every record."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._formatted = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._formatted = second, time.strftime(_DATE_FORMAT, self.converter(second))
        return f"{self._formatted},{int(record.msecs):03d}"


def configure_logging(level: str, *, tag: str = "") -> None:
    """One line per record on stderr, at `level` and above; `tag` (a worker's name) starts each message."""
    prefix = f"[{tag}] " if tag else ""
    # What the logging HOWTO advises for code that logs on a hot path: the format names no thread, process
    # or source line, so none is looked up for each record (the caller's frame walk is the dearest).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)

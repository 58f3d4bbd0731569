"""How a server process writes its log: one line a record on stderr, made as cheaply as the logging module
allows, since the access log writes one for every call."""

from __future__ import annotations

import asyncio
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


class _LoopBatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes the INFO and DEBUG lines of an event loop's thread once per turn of the loop, all at once.

    A write to stderr per line (the access log's, one for every call) is a system call per call, during
    which gRPC's polling thread takes the GIL, and the loop's thread waits to have it back; a turn of a busy
    loop ends many calls. A line of WARNING or above, or one from any other thread, is written at once,
    after what is waiting, so the order holds; so is everything when the handler is flushed (at exit).
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[str] = []
        # The loop that has a flush of the waiting lines scheduled, if any.
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            if record.levelno < logging.WARNING:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                if loop is not None:
                    if self._flush_on is not loop:
                        # (Again when a loop that was to flush ended before it did.)
                        loop.call_soon(self.flush)
                        self._flush_on = loop
                    self._waiting.append(line)
                    return
            self._waiting.append(line)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_on = None
            if self._waiting:
                lines, self._waiting = self._waiting, []
                self.stream.write("".join(lines))
            super().flush()


def configure_logging(level: str, *, tag: str = "") -> None:
    """One line per record on stderr, at `level` and above; `tag` (a worker's name) starts each message."""
    prefix = f"[{tag}] " if tag else ""
    # What the logging HOWTO advises for code that logs on a hot path: the format names no thread, process
    # or source line, so none is looked up for each record (the caller's frame walk is the dearest).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = _LoopBatchedHandler()
    handler.setFormatter(_Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)

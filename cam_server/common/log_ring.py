"""The last log records of a server process, kept in memory for ``GET /api/v1/logs`` (PSI's ``get_logs()``).

A :class:`LogRing` is a :class:`logging.Handler` on the root logger: it sees what the server logs at its configured
level (``--log_level``), as the console does. Instance processes log on their own (their records are not here);
uvicorn's loggers do not propagate to the root, so request access lines do not flood the ring either.
Records are stored already formatted (a few short strings each), never as record objects, which could keep large
log arguments alive.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

DEFAULT_CAPACITY = 1000

_install_lock = threading.Lock()


class LogRing(logging.Handler):
    """The newest ``capacity`` records as ``[time, logger, level, message]`` (oldest dropped first)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        super().__init__()
        self._records: deque[tuple[str, str, str, str]] = deque(maxlen=capacity)
        self._time_format = logging.Formatter()  # its formatTime: "2026-12-04 19:30:00,123", as the console shows

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                message = f"{message} ({type(exc).__name__}: {exc})"
            self._records.append((self._time_format.formatTime(record), record.name, record.levelname, message))
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)

    def records(self) -> list[list[str]]:
        """Every kept record, oldest first: ``[time, logger, level, message]``."""
        return [list(r) for r in list(self._records)]

    def text(self) -> str:
        """The records as text, one line each (newlines inside a message are written as ``\\n``)."""
        lines = [f"{t} {level} {name}: {message}" for t, name, level, message in list(self._records)]
        return "".join(line.replace("\n", "\\n") + "\n" for line in lines)


def install_log_ring(capacity: int = DEFAULT_CAPACITY) -> LogRing:
    """The :class:`LogRing` of the root logger, added on the first call (later calls return the same one).

    Call it after ``logging.basicConfig`` (which adds its console handler only while the root logger has none).
    """
    root = logging.getLogger()
    with _install_lock:
        for handler in root.handlers:
            if isinstance(handler, LogRing):
                return handler
        ring = LogRing(capacity)
        root.addHandler(ring)
        return ring

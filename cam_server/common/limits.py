"""Bounds on the slow work a REST server does for its clients, so that slow requests cannot starve the quick ones.

Two kinds of slow work (README "Request limits"):

* **long requests** wait for something that may never come (a frame, a message, a background, an online check);
  they run apart, in an executor of their own (:mod:`cam_server.rest.long_requests`), and are cancelled when their
  clients are gone. The work checks a ``keep_waiting()`` callable and raises :class:`Cancelled` when it turns False.
* **blocking requests** stay in the server's thread pool but hold a thread for seconds: starting an instance
  (which waits for its camera), calls from the pipeline server to the camera server. A :class:`Gate` bounds how
  many run at once; one more is refused at once with :class:`TooBusy` (429, ``Retry-After``), never queued.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from cam_server.common.errors import CamServerError

RETRY_AFTER_S = 1
DEFAULT_MAX_BLOCKING = 16  # --max_blocking_requests
DEFAULT_MAX_LONG = 32  # --max_long_requests (cam_server.rest.long_requests)


class TooBusy(CamServerError):
    """Too many slow requests at once: HTTP 429 with ``Retry-After`` (seconds)."""

    status_code = 429
    headers = {"Retry-After": str(RETRY_AFTER_S)}


class Cancelled(CamServerError):
    """Work stopped because no client waits for its result any more (HTTP 499 "client closed request": nobody
    reads the answer, only the access log shows it)."""

    status_code = 499


class Gate:
    """At most ``limit`` holders at once (``with gate:``); one more raises :class:`TooBusy` at once.

    Re-entrant per thread: a holder that enters again (a pipeline instance whose input pipeline must be started
    first) takes no second place. ``info()`` counts for the server info.
    """

    def __init__(self, limit: int = DEFAULT_MAX_BLOCKING, what: str = "blocking requests") -> None:
        if limit < 1:
            raise ValueError(f"{what}: the limit must be at least 1, not {limit}")
        self.limit = limit
        self.what = what
        self.refused = 0
        self._held = 0
        self._lock = threading.Lock()
        self._depth = threading.local()

    def __enter__(self) -> Gate:
        depth = getattr(self._depth, "value", 0)
        if depth == 0:
            with self._lock:
                if self._held >= self.limit:
                    self.refused += 1
                    raise TooBusy(f"Server busy: {self._held} {self.what} run already (at most {self.limit}); "
                                  f"try again in {RETRY_AFTER_S} s.")
                self._held += 1
        self._depth.value = depth + 1
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._depth.value -= 1
        if self._depth.value == 0:
            with self._lock:
                self._held -= 1

    def info(self) -> dict[str, Any]:
        """``running`` now, the ``limit`` and how many were ``refused`` (429) since the server started."""
        return {"running": self._held, "limit": self.limit, "refused": self.refused}

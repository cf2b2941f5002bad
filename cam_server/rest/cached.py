"""Encoded answers of the polled read-only routes (``GET .../info``), reused for a short time while still correct.

Why: PSI's tools and dashboards poll the server info, often from many clients; building it walks every instance
(liveness, shared-memory statistics, the JSON encoding) in the threadpool, which bounded the route at about 2000
requests/s on two cores. An answer is reused while all of this holds:

* it is younger than ``ttl`` seconds (:data:`INFO_TTL_S`, 0.1 s unless the environment variable
  ``CAM_SERVER_INFO_CACHE_S`` says otherwise; 0: no reuse, for comparisons): an instance's counters are at most that
  old, as a poll at that rate would see them; an instance that ended by itself leaves the answer within it, or at
  once when the reaper takes it out of the table;
* the instance table has not changed (``version()``: an instance added, stopped, ended and reaped);
* no other request has finished since it was built (:class:`CachedReads`): any request that is not one of the
  cached reads may have changed something (a config, a new instance of a ``GET`` that creates one, the counters of
  blocking requests a refused ``GET`` raised), so it forgets every cached answer. (Keeping them across ``GET``s, to
  survive metrics scrapes beside pollers, was tried and undone: a refused ``GET`` then left ``blocking_requests``
  stale, ``tests/robustness/test_starvation.py``.)

A cached answer is sent by :class:`CachedReads` (ASGI middleware) before routing, without the framework's layers and
the threadpool hop; a missing one is built by the route once, in the threadpool (concurrent requests wait for that
one build).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

log = logging.getLogger(__name__)

TTL_ENV = "CAM_SERVER_INFO_CACHE_S"  # a benchmark's switch: 0 builds every answer anew (as before the cache)


def _ttl_from_env(default: float = 0.1) -> float:
    text = os.environ.get(TTL_ENV)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 10.0:
        log.warning("%s=%r is not a number of seconds from 0 to 10; using %g", TTL_ENV, text, default)
        return default
    return value


INFO_TTL_S = _ttl_from_env()


class CachedAnswers:
    """Encoded answers by key (e.g. the route, an instance id), each reused under the rules of the module doc."""

    def __init__(self, version: Callable[[], int], ttl: float = INFO_TTL_S, max_entries: int = 256) -> None:
        self._version = version
        self.ttl = ttl
        self._max_entries = max_entries
        self.changes = 0  # bumped by CachedReads at the end of every request that is not a cached read
        self._answers: dict[Any, tuple[tuple[int, int], float, bytes]] = {}  # key → (stamp, expiry, body)
        self._locks: dict[Any, asyncio.Lock] = {}

    def _stamp(self) -> tuple[int, int]:
        return self.changes, self._version()

    def fresh(self, key: Any) -> bytes | None:
        """The answer of ``key`` if it may still be served, else None."""
        entry = self._answers.get(key)
        if entry is None or entry[0] != self._stamp() or time.monotonic() >= entry[1]:
            return None
        return entry[2]

    async def get(self, key: Any, build: Callable[[], bytes]) -> bytes:
        """The cached answer of ``key``, or ``build()`` (run in the threadpool, once for concurrent requests)."""
        if self.ttl <= 0:  # no reuse: every request builds its own, concurrently (as without this class)
            return await run_in_threadpool(build)
        body = self.fresh(key)
        if body is not None:
            return body
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) >= self._max_entries:  # ids that failed (404) leave a lock and no answer
                self._locks.clear()  # a build in progress keeps its lock; at worst one more build runs beside it
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            body = self.fresh(key)
            if body is not None:
                return body
            stamp = self._stamp()  # before building: a change made meanwhile makes the answer stale at once
            body = await run_in_threadpool(build)
            if len(self._answers) >= self._max_entries:
                self._answers.clear()
            self._answers[key] = (stamp, time.monotonic() + self.ttl, body)
            return body

    def forget(self) -> None:
        """Every cached answer is stale from now on."""
        self.changes += 1


Read = tuple[Any, Any]  # a cached read's key in CachedAnswers and its route (FastAPI's, for scope["route"])


def info_reads(routes: list[Any], info: str, instance_prefix: str | None = None,
               instance_suffix: str = "/info") -> Callable[[str], Read | None]:
    """The reads :class:`CachedReads` answers: ``GET info`` (key None) and, with ``instance_prefix``, ``GET
    <instance_prefix><id><instance_suffix>`` (key: the id; its route is declared as ``{instance_id}``)."""
    by_path = {getattr(route, "path", None): route for route in routes}
    info_route = by_path[info]
    instance_route = by_path[f"{instance_prefix}{{instance_id}}{instance_suffix}"] if instance_prefix else None

    def reads(path: str) -> Read | None:
        if path == info:
            return None, info_route
        if instance_prefix and path.startswith(instance_prefix) and path.endswith(instance_suffix):
            instance_id = path[len(instance_prefix):-len(instance_suffix)]
            if instance_id and "/" not in instance_id:
                return instance_id, instance_route
        return None

    return reads


class CachedReads:
    """ASGI middleware of :class:`CachedAnswers`: a ``GET`` of a path ``reads(path)`` names (its key and route) is
    answered from a fresh cached answer right here, without routing and the framework's layers (the route's handler
    builds a missing one); at the end of every other HTTP request the cached answers are forgotten (it may have
    changed what they show). Inside the metrics middleware: ``scope["route"]`` is set, as the router would."""

    def __init__(self, app: Any, answers: CachedAnswers, reads: Callable[[str], Read | None]) -> None:
        self.app = app
        self._answers = answers
        self._reads = reads

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        read = self._reads(scope["path"]) if scope["method"] == "GET" else None
        if read is None:
            try:
                await self.app(scope, receive, send)
            finally:
                self._answers.forget()
            return
        key, route = read
        body = self._answers.fresh(key)
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

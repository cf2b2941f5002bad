"""The bookkeeping both servers share: running instances by id, a reaper, stopping, and a bounded history.

Why one class: the camera and the pipeline manager track instance processes the same way, and the subtle parts
(never two stops of one process, no zombie left behind, parallel shutdown, a history that cannot grow without
bound) should be right in one place. The managers keep what differs: how an instance starts, what its info and its
"ended" record contain, and the error messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from cam_server.common.process import InstanceProcess

log = logging.getLogger(__name__)

ENDED_HISTORY = 100
ENDED_PER_ID = 10  # ended runs remembered per id: the latest record in full, the earlier ones in brief (HISTORY_KEYS)
HISTORY_KEYS = ("pid", "created", "ended", "exit_code", "exit_reason", "last_error", "last_error_time")
REAP_INTERVAL = 0.5
_MAX_STOP_THREADS = 32


class HasProcess(Protocol):
    """What the table needs of an instance: its process (None while it is being started)."""

    @property
    def process(self) -> InstanceProcess | None: ...


T = TypeVar("T", bound=HasProcess)


class InstanceTable(Generic[T]):
    """Running instances by id, plus the records of the ended ones: of the most recent ``history`` ids (the id
    whose run ended longest ago dropped first), up to ``per_id`` runs each.

    ``record(instance)`` makes the "ended" record (exit code, last error, ...) after the process was joined; it is
    called for instances that ended by themselves (found by the reaper thread) and, with ``remember_stopped``, for
    stopped ones too; the table adds ``ended`` (when) if the record has none. ``lock`` is public (re-entrant) for
    managers that must check and add atomically. An entry whose process is None is "starting": the reaper leaves
    it alone.

    A reused id keeps its history: a new run does not forget how the earlier ones ended (an instance killed and
    started again under its id stays visible). The records are read as {id: latest record}, the shape servers
    have always shown, with ``history``: the earlier runs of that id, oldest first, each in brief (HISTORY_KEYS).
    So an id may be running and have ended records at the same time.
    """

    def __init__(self, kind: str, record: Callable[[T], dict[str, Any]], *, remember_stopped: bool = True,
                 history: int = ENDED_HISTORY, stop_timeout: float = 3.0,
                 reap_interval: float = REAP_INTERVAL, per_id: int = ENDED_PER_ID) -> None:
        self.kind = kind  # for log messages and the reaper thread's name
        self.lock = threading.RLock()
        self._record = record
        self._remember_stopped = remember_stopped
        self._history = history
        self._per_id = max(1, per_id)
        self._stop_timeout = stop_timeout
        self._running: dict[str, T] = {}
        self.version = 0  # bumped whenever an instance is added or leaves the table (cached answers compare it)
        # id → its ended runs, oldest first: the last one in full, the earlier ones in brief
        self._ended: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._closing = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, args=(reap_interval,), name=f"{kind}-reaper",
                                        daemon=True)
        self._reaper.start()

    # --- lookup -------------------------------------------------------------------------------------------
    def get(self, key: str) -> T | None:
        with self.lock:
            return self._running.get(key)

    def ended(self, key: str) -> dict[str, Any] | None:
        """The record of ``key``'s last ended instance (a copy, with ``history``), or None."""
        with self.lock:
            runs = self._ended.get(key)
            return None if runs is None else _with_history(runs)

    def ended_runs(self, key: str) -> int:
        """How many ended runs of ``key`` are remembered (at most ``per_id``): its restarts, for ``GET /metrics``."""
        with self.lock:
            return len(self._ended.get(key, ()))

    def __contains__(self, key: str) -> bool:
        with self.lock:
            return key in self._running

    def items(self) -> list[tuple[str, T]]:
        """A snapshot, in insertion order, safe to iterate while others add and stop."""
        with self.lock:
            return list(self._running.items())

    def snapshot(self) -> tuple[dict[str, T], dict[str, dict[str, Any]]]:
        """Running instances and ended records ({id: latest record with ``history``}, the id whose last run ended
        longest ago first), taken together under the lock."""
        with self.lock:
            return dict(self._running), {k: _with_history(v) for k, v in self._ended.items()}

    # --- changes ------------------------------------------------------------------------------------------
    def add(self, key: str, instance: T) -> None:
        """Track ``instance`` as ``key`` (replacing an entry the caller has dealt with); the ended records of earlier
        runs of ``key`` stay (its history)."""
        with self.lock:
            self._running[key] = instance
            self.version += 1

    def remove(self, key: str, instance: T | None = None) -> T | None:
        """Untrack ``key`` without stopping it (only if it still is ``instance``, when given); returns it."""
        with self.lock:
            current = self._running.get(key)
            if current is None or (instance is not None and current is not instance):
                return None
            self.version += 1
            return self._running.pop(key)

    def stop(self, key: str, timeout: float | None = None) -> T | None:
        """Stop and untrack ``key``; None when it is not running. Concurrent stops of one key stop it once."""
        instance = self.remove(key)
        if instance is not None:
            self._stop(key, instance, timeout)
        return instance

    def stop_all(self, timeout: float | None = None) -> list[str]:
        """Stop every instance in parallel (all are asked first, then joined together); returns their ids.

        Sequential stops would cost the sum of every instance's shutdown (and of every kill timeout); in parallel it
        is the slowest one.
        """
        with self.lock:
            stopping = list(self._running.items())
            self._running.clear()
            self.version += 1
        for _, instance in stopping:
            if instance.process is not None:
                instance.process.control.request_stop()
        if len(stopping) == 1:
            self._stop(*stopping[0], timeout)
        elif stopping:
            workers = min(len(stopping), _MAX_STOP_THREADS)
            with ThreadPoolExecutor(workers, thread_name_prefix=f"{self.kind}-stop") as pool:
                futures = [pool.submit(self._stop, key, instance, timeout) for key, instance in stopping]
                for future in futures:
                    future.result()
        return [key for key, _ in stopping]

    def reap(self) -> list[str]:
        """Join, untrack and record the instances whose process ended by itself; returns their ids.

        All under the lock: joining a process already known dead is immediate, and so an instance moves from
        running to ended in one step (a client never sees it in neither) and no stop can race with the join.
        """
        done = []
        with self.lock:
            for key, instance in list(self._running.items()):
                if instance.process is None or instance.process.is_alive():
                    continue
                del self._running[key]
                self.version += 1
                instance.process.stop(0.1)  # joins the dead process and collects its last error
                self._remember(key, self._record(instance))
                done.append((key, instance.process))
        for key, process in done:
            code, error = process.exitcode, process.last_error
            if code:
                log.warning("%s %s ended with exit code %s (%s); last error: %s", self.kind, key, code,
                            process.exit_reason(), error)
            else:
                log.info("%s %s finished (exit code %s)", self.kind, key, code)
        return [key for key, _ in done]

    def close(self) -> None:
        """Stop the reaper and every instance (server shutdown); idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.stop_all()
        if self._reaper is not threading.current_thread():
            self._reaper.join(2)

    # --- internals ----------------------------------------------------------------------------------------
    def _stop(self, key: str, instance: T, timeout: float | None) -> None:
        process = instance.process
        if process is None:  # still starting: its creator sees it untracked and stops what it started
            return
        process.stop(self._stop_timeout if timeout is None else timeout)
        if self._remember_stopped:
            self._remember(key, self._record(instance))  # also when re-created meanwhile: history of the id

    def _remember(self, key: str, record: dict[str, Any]) -> None:
        record.setdefault("ended", time.time())
        record.pop("history", None)
        with self.lock:
            runs = self._ended.pop(key, [])
            if runs:
                runs[-1] = {k: runs[-1].get(k) for k in HISTORY_KEYS}  # the previous latest, now in brief
            runs.append(record)
            del runs[:-self._per_id]
            self._ended[key] = runs
            while len(self._ended) > self._history:
                self._ended.popitem(last=False)

    def _reap_loop(self, interval: float) -> None:
        while not self._closing.wait(interval):
            try:
                self.reap()
            except Exception:  # noqa: BLE001 - the reaper must survive anything
                log.exception("%s reaper failed", self.kind)


def _with_history(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest record (a copy) with ``history``: the earlier runs, oldest first."""
    return {**runs[-1], "history": [dict(r) for r in runs[:-1]]}

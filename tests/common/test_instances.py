"""InstanceTable with real instance processes: reaping, bounded history, parallel stop-all, thread safety."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil
import pytest

from cam_server.common.instances import HISTORY_KEYS, InstanceTable
from cam_server.common.process import InstanceProcess
from tests.common import targets
from tests.helpers.procs import wait_until


@dataclass
class Entry:
    process: InstanceProcess | None


def _record(entry: Entry) -> dict:
    assert entry.process is not None
    return {"exit_code": entry.process.exitcode, "last_error": entry.process.last_error}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start(name: str, target, *args) -> Entry:
    process = InstanceProcess(name, target, args)
    process.start()
    return Entry(process)


def _table(**kwargs) -> InstanceTable[Entry]:
    return InstanceTable("test", _record, **kwargs)


def test_instance_that_ends_by_itself_is_reaped_with_its_exit_code():
    table = _table(reap_interval=0.05)
    try:
        entry = _start("crash", targets.exit_with, 3, "disk on fire")
        table.add("crash", entry)
        wait_until(lambda: table.ended("crash"), 10, "the reaper to record the ended instance")
        record = table.ended("crash")
        assert record["ended"] == pytest.approx(time.time(), abs=10)  # stamped by the table
        assert record == {"exit_code": 3, "last_error": "disk on fire", "ended": record["ended"], "history": []}
        assert "crash" not in table and table.get("crash") is None
        assert _gone(entry.process.pid)
        table.add("crash", Entry(None))  # a new run of the same id keeps the old record (its history) ...
        assert table.ended("crash")["exit_code"] == 3
        assert table.reap() == [] and table.get("crash") is not None  # ... and a starting entry is never reaped
    finally:
        table.close()


def test_ended_history_keeps_the_most_recent():
    table = _table(history=3, reap_interval=3600)  # reaped by hand, in a known order
    try:
        for code in range(5):
            entry = _start(f"k{code}", targets.exit_with, code)
            table.add(f"k{code}", entry)
            entry.process.wait(10)
            assert table.reap() == [f"k{code}"]
        _, ended = table.snapshot()
        assert list(ended) == ["k2", "k3", "k4"]
        assert [r["exit_code"] for r in ended.values()] == [2, 3, 4]
        entry = _start("k2", targets.exit_with, 7)  # a key that ends again moves to the newest place
        table.add("k2", entry)
        entry.process.wait(10)
        table.reap()
        assert list(table.snapshot()[1]) == ["k3", "k4", "k2"] and table.ended("k2")["exit_code"] == 7
    finally:
        table.close()


def test_stop_all_asks_every_instance_first_and_leaves_no_process():
    table = _table(reap_interval=3600)
    entries = {f"slow{i}": _start(f"slow{i}", targets.slow_to_stop, 0.5) for i in range(3)}
    entries["stubborn"] = _start("stubborn", targets.stubborn_loop)  # ignores the stop request and SIGTERM
    for key, entry in entries.items():
        table.add(key, entry)
    pids = [e.process.pid for e in entries.values()]
    try:
        wait_until(lambda: all(e.process.is_alive() for e in entries.values()), 10, "instances running")
        assert sorted(table.stop_all(timeout=3.0)) == sorted(entries)
    finally:
        for entry in entries.values():
            entry.process.stop(0.5)
    assert all(_gone(pid) for pid in pids)
    assert table.items() == []
    _, ended = table.snapshot()
    assert {k: r["exit_code"] for k, r in ended.items() if k != "stubborn"} == {f"slow{i}": 0 for i in range(3)}
    assert ended["stubborn"]["exit_code"] == -9
    stats = [entries[f"slow{i}"].process.control.stats for i in range(3)]
    # In parallel: every instance saw the request before the first one finished (one by one, each would see it
    # only after the previous one had finished).
    assert max(s.get("rate") for s in stats) < min(s.get("last_frame_time") for s in stats)
    table.close()


def test_stopped_instances_are_not_recorded_when_the_table_says_so():
    table = _table(remember_stopped=False, reap_interval=3600)
    entry = _start("cam", targets.counting_loop, 0.01)
    table.add("cam", entry)
    try:
        assert table.stop("cam") is entry and table.stop("cam") is None
        assert table.snapshot() == ({}, {})
    finally:
        entry.process.stop()
        table.close()
    assert _gone(entry.process.pid)


def test_concurrent_add_and_stop_from_threads_stop_each_instance_once():
    table = _table(reap_interval=0.01)  # the reaper runs all along, too
    keys = [f"i{n}" for n in range(6)]
    entries = {key: _start(key, targets.counting_loop, 0.01) for key in keys}
    barrier = threading.Barrier(len(keys))
    stopped: list[str] = []
    errors: list[BaseException] = []

    def add(key: str) -> None:
        barrier.wait()
        table.add(key, entries[key])

    def stop(key: str) -> None:
        barrier.wait()
        try:
            if table.stop(key, timeout=5) is not None:
                stopped.append(key)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def stop_all() -> None:
        barrier.wait()
        stopped.extend(table.stop_all(timeout=5))

    try:
        threads = [threading.Thread(target=add, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(k for k, _ in table.items()) == keys
        barrier = threading.Barrier(2 * len(keys) + 1)
        threads = [threading.Thread(target=stop, args=(k,)) for k in keys * 2] + [threading.Thread(target=stop_all)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        for entry in entries.values():
            entry.process.stop(1)
        table.close()
    assert errors == []
    assert sorted(stopped) == keys  # each instance stopped exactly once, by one of the racing threads
    assert all(_gone(e.process.pid) for e in entries.values())
    assert {k: r["exit_code"] for k, r in table.snapshot()[1].items()} == dict.fromkeys(keys, 0)


def test_an_id_re_created_while_its_old_instance_stops_keeps_its_record():
    table = _table(reap_interval=3600)
    try:
        old = _start("a", targets.slow_to_stop, 0.5)
        table.add("a", old)
        stopping = threading.Thread(target=table.stop, args=("a",))
        stopping.start()
        wait_until(lambda: table.get("a") is None, 10, "the old instance to be untracked")
        new = Entry(None)  # re-created (still starting) while the old process takes its time to stop
        table.add("a", new)
        stopping.join(30)
        assert _gone(old.process.pid)
        assert table.get("a") is new and table.ended("a")["exit_code"] == 0  # running again, and its history
    finally:
        table.close()


def test_a_reused_id_keeps_a_bounded_history_of_its_runs():
    """Each id keeps its latest ended record in full and up to ``per_id`` - 1 earlier runs in brief (oldest first),
    also while the id runs again; how a killed run ended stays readable."""
    table = _table(per_id=3, reap_interval=3600)
    try:
        for code in (1, 2, 3, 4):
            entry = _start("reused", targets.exit_with, code, f"run {code}")
            table.add("reused", entry)
            entry.process.wait(10)
            assert table.reap() == ["reused"]
        table.add("reused", _start("reused", targets.counting_loop, 0.01))  # running again
        record = table.snapshot()[1]["reused"]
        assert record["exit_code"] == 4 and record["last_error"] == "run 4"
        assert [(r["exit_code"], r["last_error"]) for r in record["history"]] == [(2, "run 2"), (3, "run 3")]
        assert set(record["history"][0]) == set(HISTORY_KEYS)
    finally:
        table.close()

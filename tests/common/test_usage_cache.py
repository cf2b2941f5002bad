"""Info answered from memory (issue 13 items 3 and 4): an instance's cpu / RSS are read from the OS at most once a
second, its PSS at most every 5 s; liveness and exit codes are read without the lock process starts hold."""

import os
import signal
import threading
import time

import pytest

from cam_server.common import process as process_module
from cam_server.common.process import InstanceProcess, ProcessUsage
from cam_server.rest.envelope import ok_response
from tests.common import targets
from tests.helpers.procs import wait_until


def test_info_figures_come_from_the_cache_within_a_second_and_pss_is_below_rss():
    proc = InstanceProcess("usage", targets.counting_loop, (0.005,))
    proc.start()
    try:
        wait_until(lambda: proc.info()["statistics"]["frames_in"] > 3, 10, "the instance counting")
        usage = proc.usage
        assert usage is not None
        time.sleep(1.1)  # whatever the first reads cached is now stale
        first = proc.info()["statistics"]
        refreshes, pss_refreshes = usage.refreshes, usage.pss_refreshes
        second = proc.info()["statistics"]  # well within the second: no psutil call
        threads = [threading.Thread(target=proc.info) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert usage.refreshes == refreshes and usage.pss_refreshes == pss_refreshes
        assert (second["cpu_percent"], second["memory_rss"], second["memory_pss"]) == (
            first["cpu_percent"], first["memory_rss"], first["memory_pss"])
        assert second["frames_in"] >= first["frames_in"]  # the counters are live: shared memory, not cached

        # PSS: the instance's own memory; pages shared with the fork server count at their share only.
        assert 0 < first["memory_pss"] < first["memory_rss"]

        time.sleep(1.1)  # cpu / RSS refresh after a second, PSS not before 5 s
        proc.info()
        assert usage.refreshes == refreshes + 1 and usage.pss_refreshes == pss_refreshes
    finally:
        proc.stop()
    info = proc.info()
    assert info["is_running"] is False
    assert info["statistics"]["memory_rss"] is None and info["statistics"]["memory_pss"] is None


@pytest.mark.unit
def test_concurrent_readers_share_one_refresh():
    usage = ProcessUsage(os.getpid(), max_age=60.0)  # this test process: nothing of ours is started
    readers = [threading.Thread(target=usage.read) for _ in range(16)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert usage.refreshes == 1 and usage.pss_refreshes == 1
    figures = usage.read()
    assert figures["memory_rss"] > 0 and figures["memory_pss"] > 0 and figures["cpu_percent"] is not None




def test_info_does_not_wait_for_the_status_lock_held_by_a_start():
    """A start holds the status lock while the fork server forks (slow under load): info must not queue behind it,
    and an instance killed meanwhile must still read as ended once the lock is free."""
    proc = InstanceProcess("lock", targets.counting_loop, (0.005,))
    proc.start()
    try:
        with process_module._STATUS_LOCK:  # what Process.start() of another instance holds
            done = threading.Event()
            answers: list[dict] = []

            def read() -> None:
                answers.append(proc.info())
                done.set()

            threading.Thread(target=read, daemon=True).start()
            assert done.wait(2.0), "info waited for the status lock"
            assert answers[0]["is_running"] is True and answers[0]["exit_code"] is None
        os.kill(proc.pid, signal.SIGKILL)
        wait_until(lambda: not proc.is_alive(), 10, "the killed instance read as ended")
        info = proc.info()
        assert info["is_running"] is False and info["exit_code"] == -signal.SIGKILL
        assert "SIGKILL" in info["exit_reason"]
    finally:
        proc.stop()


@pytest.mark.unit
def test_info_answer_is_encoded_once_and_non_finite_floats_read_as_null():
    response = ok_response("info", info={"rate": float("nan"), "shape": (2, 3), "name": "é"})
    assert response.media_type == "application/json"
    assert response.body == '{"state":"ok","status":"info","info":{"rate":null,"shape":[2,3],"name":"é"}}'.encode()

import multiprocessing.connection
import threading
import time

import psutil
import pytest

from cam_server.common.config_store import JsonConfigStore
from cam_server.common.errors import InvalidConfig, InvalidName, NotFound
from cam_server.common.names import validate_name
from cam_server.common.process import InstanceControl, InstanceProcess, process_context
from tests.common import targets
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until


def test_instance_counts_takes_config_and_stops():
    proc = InstanceProcess("counter", targets.counting_loop, (0.005,))
    proc.start()
    try:
        wait_until(lambda: proc.info()["statistics"]["frames_in"] > 5, 10, "frames counted in shared memory")
        proc.update_config({"clients": 3})
        wait_until(lambda: proc.info()["statistics"]["clients"] == 3, 5, "config applied in the child")
        info = proc.info()
        assert info["is_running"] is True and info["pid"] == proc.pid
        assert info["statistics"]["memory_rss"] > 0
    finally:
        proc.stop()
    assert not proc.is_alive()
    assert proc.exitcode == 0
    assert proc.info()["last_error"] == "stopped cleanly"
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE


def test_failing_instance_reports_error_and_exit_code():
    proc = InstanceProcess("failing", targets.failing_loop)
    proc.start()
    proc.wait(10)
    info = proc.info()
    assert info["is_running"] is False
    assert info["exit_code"] == 2
    assert info["last_error"] == "boom: the source is gone"
    proc.stop()


def test_stubborn_instance_is_killed():
    proc = InstanceProcess("stubborn", targets.stubborn_loop)
    proc.start()
    time.sleep(0.3)
    proc.stop(timeout=0.5)
    assert not proc.is_alive()


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "a/b", ".hidden", "-x", "a..b", None, 5, "x" * 201, "a b"])
def test_bad_names_rejected(bad):
    with pytest.raises(InvalidName, match="Invalid"):
        validate_name(bad)


@pytest.mark.parametrize("good", ["simulation", "SAROP21-PPRM102", "cam_1.v2", "X:Y+Z"])
def test_good_names_accepted(good):
    assert validate_name(good) == good


def test_config_store_roundtrip_and_errors(tmp_path):
    store = JsonConfigStore(tmp_path, "camera")
    store.save("cam1", {"a": 1})
    assert store.load("cam1") == {"a": 1}
    assert store.names() == ["cam1"]
    assert [p.name for p in tmp_path.iterdir()] == ["cam1.json"]  # no temporary files left
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InvalidConfig, match="Camera 'broken' is not valid JSON"):
        store.load("broken")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InvalidConfig, match="must be a JSON object"):
        store.load("list")
    with pytest.raises(NotFound, match="Camera 'nope' does not exist"):
        store.load("nope")
    with pytest.raises(InvalidName):
        store.save("../escape", {})
    store.delete("cam1")
    assert not store.exists("cam1")
    with pytest.raises(NotFound):
        store.delete("cam1")


def test_config_files_get_ordinary_permissions(tmp_path):
    JsonConfigStore(tmp_path, "camera").save("cam1", {"a": 1})
    assert (tmp_path / "cam1.json").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_stop_request_wakes_a_receive_that_would_block_forever():
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing ever sends there
    proc = InstanceProcess("blocked", targets.blocking_receive_loop, (address,))
    proc.start()
    try:
        wait_until(lambda: proc.info()["statistics"]["clients"] == 1, 10, "the child to start its receive")
    finally:
        proc.stop(timeout=30)  # without the wakeup the child would block until terminated (exit code -15)
    assert proc.exitcode == 0
    assert proc.info()["last_error"] == "receive returned None, interrupted=True, timed_out=False"


def test_exit_code_read_by_many_threads_at_once_is_the_real_one():
    # Without one reader at a time, a second thread reading the forkserver status pipe gets end-of-file and
    # records exit code 255.
    for _ in range(3):
        proc = InstanceProcess("racing", targets.exit_with, (3,))
        proc.start()
        seen: list[int | None] = []

        def poll(proc: InstanceProcess = proc, seen: list = seen) -> None:
            while proc.is_alive():
                pass
            seen.append(proc.exitcode)

        threads = [threading.Thread(target=poll) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        proc.stop()
        assert seen == [3] * 6 and proc.exitcode == 3


def test_exit_code_not_lost_to_another_instance_starting(monkeypatch):
    # Process.start() polls every child multiprocessing started (its _cleanup); if that poll read a dead instance's
    # status while a status read of that instance was in progress, one of the two got end-of-file: exit code 255.
    if process_context().get_start_method() != "forkserver":
        pytest.skip("the exit status is read from a pipe only with the forkserver start method")
    from multiprocessing import forkserver

    reading = threading.Event()
    read_signed = forkserver.read_signed

    def slow_read_signed(fd: int) -> int:  # widens the window between "status readable" and "status read"
        reading.set()
        time.sleep(0.3)
        return read_signed(fd)

    proc = InstanceProcess("ended", targets.exit_with, (3,))
    proc.start()
    multiprocessing.connection.wait([proc._process.sentinel], 30)  # ended; its status not read yet
    monkeypatch.setattr(forkserver, "read_signed", slow_read_signed)
    reader = threading.Thread(target=proc.is_alive)
    reader.start()
    assert reading.wait(30)
    other = InstanceProcess("other", targets.exit_with, (0,))
    other.start()  # polls the ended instance too, unless status reads and starts are serialised
    reader.join(30)
    monkeypatch.setattr(forkserver, "read_signed", read_signed)
    other.stop()
    proc.stop()
    assert proc.exitcode == 3 and other.exitcode == 0



@pytest.mark.unit
def test_a_counted_report_is_read_even_while_still_on_its_way() -> None:
    """A report is counted before the queue's feeder thread writes it: a reader asking at once gets it (it waits for
    a counted one), so what the instance showed after reporting (e.g. its state) never comes without the report."""
    control = InstanceControl(process_context())
    try:
        for i in range(50):
            control.report_error(f"report {i}")
            assert [message for _, message in control.drain_errors()] == [f"report {i}"]
        assert control.drain_errors() == []  # nothing counted: nothing waited for
    finally:
        control.close()

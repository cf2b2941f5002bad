"""h5.receive and the cam-record CLI write real files from real streams."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from cam_server.bsread import PULL, Sender, h5
from tests.helpers.procs import start_python, stop_pid, wait_until


def _messages() -> list[dict]:
    out = []
    for i in range(5):
        image = np.full((3, 4), i, np.uint16) if i != 3 else np.zeros((2, 2), np.uint16)  # size change at 3
        data = {"x": float(i), "image": image, "name": f"m{i}", "maybe": None if i % 2 else i}
        if i >= 2:
            data["late"] = np.arange(3, dtype=np.int32) + i
        out.append(data)
    return out


def _send_in_thread(sender: Sender, messages: list[dict]) -> threading.Thread:
    def run() -> None:
        for i, data in enumerate(messages):
            sender.send(data, timestamp=(1700000000 + i, 7), pulse_id=100 + i)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _cli() -> list[str]:
    """The installed console script when present (it is a Python script), else the module."""
    script = Path(sys.executable).parent / "cam-record"
    return [str(script)] if script.exists() else ["-m", "cam_server.bsread.record_cli"]


def _check_file(path) -> None:
    with h5py.File(path, "r") as f:
        assert f.attrs["n_messages"] == 5
        x = f["data/x"]
        assert x["data"].shape == (5, 1) and x["data"].dtype == np.float64
        np.testing.assert_array_equal(x["data"][:, 0], [0, 1, 2, 3, 4])
        np.testing.assert_array_equal(x["pulse_id"][:], [100, 101, 102, 103, 104])
        np.testing.assert_array_equal(x["timestamp"][:], 1700000000 + np.arange(5))
        np.testing.assert_array_equal(x["timestamp_offset"][:], [7] * 5)
        img = f["data/image"]
        assert img["data"].shape == (5, 3, 4) and img["data"].dtype == np.uint16
        assert list(img.attrs["shape"]) == [4, 3]
        np.testing.assert_array_equal(img["is_valid"][:], [True, True, True, False, True])
        np.testing.assert_array_equal(img["data"][4], np.full((3, 4), 4))
        assert [s.decode() for s in f["data/name/data"][:, 0]] == [f"m{i}" for i in range(5)]
        maybe = f["data/maybe"]
        np.testing.assert_array_equal(maybe["is_valid"][:], [True, False, True, False, True])
        assert maybe["data"][4, 0] == 4
        late = f["data/late"]
        np.testing.assert_array_equal(late["pulse_id"][:], [102, 103, 104])
        np.testing.assert_array_equal(late["data"][:], [[2, 3, 4], [3, 4, 5], [4, 5, 6]])


@pytest.mark.unit
def test_h5_receive_writes_datasets(tmp_path):
    with Sender(port=0, address="tcp://127.0.0.1") as sender:
        thread = _send_in_thread(sender, _messages())
        n = h5.receive(source=f"tcp://127.0.0.1:{sender.bound_port}", file_name=str(tmp_path / "out.h5"),
                       mode=PULL, n_messages=5, receive_timeout=10000)
        thread.join(10)
    assert n == 5
    _check_file(tmp_path / "out.h5")


def test_cam_record_cli_subprocess(tmp_path):
    out = tmp_path / "cli.h5"
    log = tmp_path / "cli.log"
    with Sender(port=0, address="tcp://127.0.0.1") as sender:
        proc = start_python([*_cli(), f"tcp://127.0.0.1:{sender.bound_port}", str(out),
                             "-n", "5", "--mode", "pull", "--timeout", "30"], log_path=log)
        try:
            thread = _send_in_thread(sender, _messages())
            wait_until(lambda: proc.poll() is not None, 60, "cam-record to finish")
            thread.join(10)
        finally:
            stop_pid(proc)
    assert proc.returncode == 0, log.read_text()
    assert "wrote 5 messages" in log.read_text()
    _check_file(out)

"""Wakeup: a stop from another thread ends a receive or a wait that would otherwise block (no timeouts involved)."""

import os
import threading

import numpy as np
import pytest

from cam_server.bsread import PULL, PUSH, Sender, Source, Wakeup
from tests.helpers.net import free_port

pytestmark = pytest.mark.unit


def set_from_thread(wakeup: Wakeup) -> threading.Thread:
    thread = threading.Thread(target=wakeup.set)
    thread.start()
    return thread


def test_wait_returns_when_set_from_another_thread():
    wakeup = Wakeup()
    assert not wakeup.is_set()
    assert wakeup.wait(0) is False
    thread = set_from_thread(wakeup)
    assert wakeup.wait(None) is True  # no timeout: only set() can end it
    thread.join()
    wakeup.set()  # twice is harmless
    assert wakeup.wait(None) is True  # stays set
    wakeup.close()
    assert wakeup.wait(None) is True


def test_blocking_receive_interrupted_and_stays_interrupted():
    wakeup = Wakeup()
    with Source(address=f"tcp://127.0.0.1:{free_port()}", mode=PULL, receive_timeout=None, wakeup=wakeup) as source:
        thread = set_from_thread(wakeup)
        assert source.receive() is None
        thread.join()
        assert source.interrupted and not source.timed_out
        assert source.receive() is None  # every later receive returns at once


def test_receive_with_wakeup_still_gets_messages_and_times_out():
    port = free_port()
    wakeup = Wakeup()
    with Source(host="127.0.0.1", port=port, mode=PULL, receive_timeout=50, wakeup=wakeup) as source, \
            Sender(port=port, mode=PUSH, block=True) as sender:
        for pulse_id in range(3):
            sender.send(pulse_id=pulse_id, data={"image": np.full((2, 3), pulse_id, dtype=np.uint16)})
        received = [source.receive() for _ in range(3)]
        assert [m.data.pulse_id for m in received] == [0, 1, 2]
        assert received[2].data.data["image"].value.tolist() == [[2, 2, 2], [2, 2, 2]]
        assert source.receive() is None
        assert source.timed_out and not source.interrupted


def test_wait_works_with_a_file_descriptor_above_1024():
    # select() refuses descriptors >= FD_SETSIZE (1024): the wait returned at once, unset, and a loop sleeping on
    # it would spin. An instance with many sockets or files open gets such descriptors.
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1030)]
    try:
        wakeup = Wakeup()
    finally:
        for fd in fillers:
            os.close(fd)
    assert wakeup.fileno() >= 1024
    timer = threading.Timer(0.2, wakeup.set)
    timer.start()
    assert wakeup.wait(None) is True  # no timeout: only set() can end it
    timer.join()
    wakeup.close()

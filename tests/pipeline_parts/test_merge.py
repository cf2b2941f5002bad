"""PulseMatcher (missing pulses on either side, buffer limits, threads) and BsreadDataReceiver on a real stream."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cam_server.bsread import PUSH, Sender
from cam_server.pipeline.types.merge import BsreadDataReceiver, PulseMatcher, default_bsread_mode
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.unit


def test_matches_in_either_arrival_order():
    m = PulseMatcher(10, 10)
    assert m.add_image(1, "img1") == []
    assert m.add_data(1, {"a": 1}) == [("img1", {"a": 1})]
    assert m.add_data(2, {"a": 2}) == []
    assert m.add_image(2, "img2") == [("img2", {"a": 2})]
    assert m.matched == 2 and m.last_matched == 2
    assert (m.pending_images, m.pending_data, m.dropped_images, m.dropped_data) == (0, 0, 0, 0)


def test_missing_data_drops_older_images_when_newer_pulse_matches():
    m = PulseMatcher(100, 100)
    for pid in range(10, 20):
        m.add_image(pid, f"img{pid}")
    # data for 11, 12 and 15 only (10, 13, 14 lost on the bsread side)
    assert m.add_data(11, "d11") == [("img11", "d11")]
    assert m.dropped_images == 1  # image 10 can never be matched in order any more
    assert m.add_data(12, "d12") == [("img12", "d12")]
    assert m.add_data(15, "d15") == [("img15", "d15")]
    assert m.dropped_images == 3  # 10, 13, 14
    assert m.pending_images == 4  # 16..19 still waiting
    assert m.add_data(13, "late") == []  # older than the newest match
    assert m.dropped_data == 1


def test_missing_images_drop_older_data():
    m = PulseMatcher(100, 100)
    for pid in range(0, 10):
        m.add_data(pid, {"v": pid})
    assert m.add_image(4, "img4") == [("img4", {"v": 4})]
    assert m.dropped_data == 4 and m.pending_data == 5
    assert m.add_image(3, "old") == []
    assert m.dropped_images == 1


def test_full_buffers_drop_oldest_and_duplicates_are_dropped():
    m = PulseMatcher(image_buf=3, data_buf=2)
    for pid in range(5):
        m.add_image(pid, pid)
    assert m.pending_images == 3 and m.dropped_images == 2  # 0 and 1 pushed out
    assert m.add_data(0, "d0") == []  # image 0 is gone; data waits
    assert m.add_image(4, "dup") == []
    assert m.dropped_images == 3
    for pid in (100, 101):
        m.add_data(pid, pid)
    assert m.dropped_data == 1 and m.pending_data == 2  # d0 pushed out
    assert m.add_image(101, "i101") == [("i101", 101)]
    # everything older than 101 was dropped from both sides
    assert m.pending_images == 0 and m.pending_data == 0


def test_two_threads_feeding_with_gaps():
    m = PulseMatcher(1000, 1000)
    pairs: list[tuple] = []
    lock = threading.Lock()
    images = [p for p in range(3000) if p % 7 != 3]
    data = [p for p in range(3000) if p % 11 != 5]

    def feed(pids, add):
        for p in pids:
            got = add(p, p)
            with lock:
                pairs.extend(got)

    t1 = threading.Thread(target=feed, args=(images, m.add_image))
    t2 = threading.Thread(target=feed, args=(data, m.add_data))
    t1.start(), t2.start()
    t1.join(), t2.join()
    matched = [img for img, d in pairs]
    assert all(img == d for img, d in pairs)
    assert matched == sorted(matched)
    both = sorted(set(images) & set(data))
    assert set(matched) <= set(both)
    assert m.matched == len(matched)
    # every item is matched, dropped or still pending
    assert len(matched) + m.dropped_images + m.pending_images == len(images)
    assert len(matched) + m.dropped_data + m.pending_data == len(data)


def test_validation_and_default_mode():
    with pytest.raises(ValueError, match="bsread_image_buf must be a positive integer"):
        PulseMatcher(0, 10)
    with pytest.raises(ValueError, match="bsread_mode must be 'PULL' or 'SUB'"):
        BsreadDataReceiver("tcp://127.0.0.1:1", "PUSH", None, PulseMatcher(10, 10))
    with pytest.raises(ValueError, match="bsread_channels must be a list"):
        BsreadDataReceiver("tcp://127.0.0.1:1", "PULL", "abc", PulseMatcher(10, 10))
    assert default_bsread_mode("tcp://x:1") == "PULL" and default_bsread_mode(None) == "SUB"


@pytest.mark.parametrize("channels", [None, ["energy", "missing"]])
def test_receiver_feeds_matcher_from_real_bsread_stream(channels):
    port = free_port()
    sender = Sender(port=port, address="tcp://127.0.0.1", mode=PUSH, queue_size=100)
    sender.open()
    matcher = PulseMatcher(100, 100)
    receiver = BsreadDataReceiver(f"tcp://127.0.0.1:{port}", "PULL", channels, matcher, receive_timeout=50)
    receiver.start()
    try:
        assert receiver.connected.wait(5)
        for pid in range(100, 120):
            if pid % 4 == 1:
                continue  # no bsread data for these pulses
            sender.send(data={"energy": float(pid) * 0.5, "arr": np.arange(3, dtype=np.int32) + pid},
                        pulse_id=pid, timestamp=(1700000000, pid))
        wait_until(lambda: receiver.received == 15, 10, "15 bsread messages received")
        pairs = [p for pid in range(100, 120) for p in matcher.add_image(pid, f"img{pid}")]
    finally:
        receiver.stop()
        sender.close()
    assert not receiver.is_alive()
    assert [img for img, _ in pairs] == [f"img{p}" for p in range(100, 120) if p % 4 != 1]
    img, data = pairs[0]
    if channels is None:
        assert list(data) == ["energy", "arr"]
        assert data["arr"].dtype == np.int32 and data["arr"].tolist() == [100, 101, 102]
    else:
        assert data == {"energy": 50.0, "missing": None}
    # images 101, 105, ..., 117 had no data: each is dropped when the next pulse id matches
    assert matcher.dropped_images == 5 and matcher.pending_images == 0 and matcher.dropped_data == 0

"""The camera instance's shared-memory path: each image written once into a frame ring, announced on a local socket.

Why: a pipeline on the same host then reads the image in place (``common/frame_ring.py``) instead of receiving
11 MB per frame through the kernel. The announcement is a small bsread message on an ``ipc://`` PUB socket: the
camera stream's channels with the image sent as a missing value (its type and shape stay declared in the data
header) plus :data:`SLOT`, :data:`SEQ`, :data:`GENERATION` and :data:`WRITER` (this process), which say where the
pixels are. So the reader
reuses the bsread receiver (timeouts, reconnection) and gets every other channel as usual. The bsread stream stays
the public interface; the servers negotiate this path (``GET /api/v1/cam/<name>/shared_memory``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from cam_server.bsread import PUB, Sender
from cam_server.camera.instance import ANNOUNCE_PREFIX, IPC_FOLDER, announce_address
from cam_server.common.frame_ring import RingWriter, pid_alive, remove_stale_rings, ring_base

log = logging.getLogger(__name__)

SLOT, SEQ, GENERATION, WRITER = "__shm_slot", "__shm_seq", "__shm_generation", "__shm_writer"
ANNOUNCE_QUEUE = 100  # announcements are small: a slow reader finds its frames overwritten rather than queued
_SHM_CHANNELS = [{"name": name, "type": "int64", "encoding": "little"} for name in (SLOT, SEQ, GENERATION, WRITER)]


class SharedFrames:
    """The ring and the announcing socket of one camera instance (``server_pid``: the camera server's pid, which
    with the camera name and this process's pid names the ring)."""

    def __init__(self, server_pid: int, camera: str, slots: int) -> None:
        self.ring = RingWriter(ring_base(server_pid, camera, os.getpid()), slots)
        os.makedirs(IPC_FOLDER, exist_ok=True)
        self.sender = Sender(queue_size=ANNOUNCE_QUEUE, port=None, address=announce_address(os.getpid()),
                             mode=PUB, block=False)
        self._values: dict[str, Any] = {}
        self._pid = os.getpid()
        self._image_bytes = 0  # written into the ring

    def open(self, no_client_action: Callable[[], object] | None, no_client_timeout: float | None) -> None:
        self.sender.open(no_client_action=no_client_action, no_client_timeout=no_client_timeout)
        log.info("shared-memory frames: ring %s, announced on %s", self.ring.base, self.sender.endpoint)

    def declare(self, channels: Sequence[dict[str, Any]]) -> None:
        """The camera stream's channels (as declared to its bsread sender), plus the slot channels."""
        self.sender.encoder.set_channels([*channels, *_SHM_CHANNELS])

    def publish(self, values: dict[str, Any], timestamp: tuple[int, int], pulse_id: int) -> bool:
        """Write the image into the ring and announce it with the other values; False when the announcement was
        dropped (a full queue: no reader keeps up)."""
        image = values["image"]
        try:
            slot, seq = self.ring.write(image)
        except OSError as exc:  # /dev/shm full, say: an error of this frame (counted and reported), not the end
            raise ValueError(f"cannot write the frame to shared memory: {exc}") from exc
        self._image_bytes += image.nbytes
        announced = self._values
        announced.clear()
        announced.update(values)
        del announced["image"]  # sent as a missing value: the pixels are in the slot
        announced[SLOT], announced[SEQ], announced[GENERATION], announced[WRITER] = slot, seq, self.ring.generation, \
            self._pid
        return self.sender.send(announced, timestamp=timestamp, pulse_id=pulse_id, check_data=False)

    @property
    def bytes_sent(self) -> int:
        """Bytes handed to local readers: images written into the ring and the announcements (the statistics'
        ``bytes_out`` counts them with the stream's)."""
        return self._image_bytes + self.sender.bytes_sent

    @property
    def client_count(self) -> int:
        return self.sender.client_count

    @property
    def client_backlog(self) -> int:
        """Bytes of announcements the kernel holds for the slowest local reader (sampled once a second)."""
        return self.sender.client_backlog

    @property
    def connections(self) -> int:
        return self.sender.connections

    def close(self) -> None:
        self.sender.close()
        self.ring.close()


def remove_stale_shared_memory() -> list[str]:
    """Rings (``/dev/shm``) and announcement socket files of camera instances that are gone (killed before they
    could remove them); returns the ring names removed. The camera server calls it at start and whenever one of its
    instances ends."""
    try:
        sockets = [name for name in os.listdir(IPC_FOLDER) if name.startswith(ANNOUNCE_PREFIX)]
    except OSError:
        sockets = []
    for name in sockets:
        pid = name[len(ANNOUNCE_PREFIX):]
        if pid.isdigit() and not pid_alive(int(pid)):
            try:
                os.unlink(os.path.join(IPC_FOLDER, name))
            except OSError:
                pass
    return remove_stale_rings()

""""Record N frames to HDF5" from a view: a second, full-rate subscription for just those frames.

Why separate from the feed: the feed keeps only the newest frame, a recording wants every consecutive one. The
recording is an ordinary SUB client of the stream (layout of ``cam_server.bsread.h5``) written to a temporary file
that the browser then downloads; it is deleted when its view closes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cam_server.bsread import SUB, Source, Wakeup
from cam_server.bsread.h5 import H5Writer

log = logging.getLogger(__name__)

MAX_FRAMES = 10000
NO_DATA_TIMEOUT = 10.0  # seconds without a message before a recording gives up
RECEIVE_MS = 200


class Recording:
    """Records ``n`` messages of ``address`` in a thread; :meth:`progress` tells how far it is."""

    def __init__(self, name: str, address: str, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= MAX_FRAMES:
            raise ValueError(f"record: the number of frames must be an integer from 1 to {MAX_FRAMES}, not {n!r}")
        self.name = name
        self.n = n
        self.token = uuid.uuid4().hex
        handle, path = tempfile.mkstemp(prefix=f"cam_server_view_{name}_", suffix=".h5")
        os.close(handle)
        self.path = Path(path)
        self.file_name = f"{name}_{time.strftime('%Y%m%d_%H%M%S')}.h5"
        self.done = 0
        self.state = "running"
        self.error: str | None = None
        self._address = address
        self._wakeup = Wakeup()
        self._thread = threading.Thread(target=self._run, name=f"view-record-{name}", daemon=True)
        self._thread.start()

    def progress(self) -> dict[str, Any]:
        """The ``{"type": "record", ...}`` message of the current state."""
        return {"type": "record", "state": self.state, "done": self.done, "n": self.n, "error": self.error,
                "token": self.token if self.state == "done" else None, "file_name": self.file_name}

    def cancel(self) -> None:
        self._wakeup.set()

    def discard(self) -> None:
        """Stop and delete the file (the view closed)."""
        self.cancel()
        self._thread.join(5)
        self._wakeup.close()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        try:
            with Source(address=self._address, mode=SUB, receive_timeout=RECEIVE_MS, wakeup=self._wakeup) as stream, \
                    H5Writer(str(self.path), {"source": self._address, "mode": "SUB"}) as writer:
                last = time.monotonic()
                while self.done < self.n:
                    message = stream.receive()
                    if message is None:
                        if stream.interrupted:
                            self.state = "cancelled"
                            return
                        if time.monotonic() - last > NO_DATA_TIMEOUT:
                            raise TimeoutError(f"no message from the stream in {NO_DATA_TIMEOUT:g} s")
                        continue
                    last = time.monotonic()
                    writer.write(message)
                    self.done = writer.n_messages
            self.state = "done"
        except Exception as exc:  # noqa: BLE001 - shown in the view
            log.warning("view recording of %s failed: %s", self.name, exc)
            self.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TimeoutError) else str(exc)
            self.state = "error"

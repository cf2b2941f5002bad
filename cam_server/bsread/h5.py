"""Record a bsread stream into an HDF5 file (``h5.receive``, as ``bsread.h5.receive`` in the cam_server README).

File layout (one group per channel, one row per received message that carried the channel)::

    /data/<channel>/data              (n,) + reversed(bsread shape); e.g. an image [w, h] -> (n, h, w),
                                       a scalar [1] -> (n, 1) (spec section 7); strings are variable-length
                                       UTF-8; dtype = the channel type in its byte order
    /data/<channel>/pulse_id          (n,) int64
    /data/<channel>/timestamp         (n,) int64  channel timestamp, seconds (0 when the channel had none)
    /data/<channel>/timestamp_offset  (n,) int64  nanoseconds
    /data/<channel>/is_valid          (n,) bool   False: no value (None) or a value that did not fit the row
    /data/<channel>.attrs             channel (original name), type, shape, encoding
    /.attrs                           source, mode, created (ISO time), n_messages

A "/" in a channel name becomes "_" in the group name (``attrs["channel"]`` keeps the real name). A channel
that appears only after a data header change gets rows only from then on (its own ``pulse_id`` dataset says
which messages). A channel without ``shape`` in the header takes its row shape from its first value (no ``data``
dataset if it never had one). A value
whose element count no longer fits the row (e.g. the image size changed) or whose type cannot be cast safely is
skipped: its row is written with ``is_valid = False`` and a warning is logged once per channel; recording a
stream whose image size changes therefore needs a new file.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from cam_server.bsread.channels import ChannelSpec
from cam_server.bsread.endpoints import SUB, mode_name
from cam_server.bsread.message import Message
from cam_server.bsread.receiver import Source

log = logging.getLogger(__name__)

GROW_ROWS = 64
_STR = h5py.string_dtype("utf-8")


class _ChannelWriter:
    """Appends the rows of one channel, growing its datasets in steps of GROW_ROWS."""

    def __init__(self, group: h5py.Group, spec: ChannelSpec):
        self.group = group
        self.name = spec.name
        self.rows = 0
        self.capacity = 0
        self.warned = False
        self.is_string = spec.type == "string"
        self.dtype = _STR if self.is_string else (spec.dtype if spec.known_type else None)
        if spec.shape is None:
            self.row_shape = None
        elif self.is_string:
            self.row_shape = (1,)
        else:
            self.row_shape = spec.numpy_shape
        group.attrs.update(channel=spec.name, type=spec.type, encoding=spec.encoding,
                           shape=list(spec.shape) if spec.shape is not None else [])
        self.meta = {
            "pulse_id": group.create_dataset("pulse_id", (0,), np.int64, maxshape=(None,), chunks=(GROW_ROWS,)),
            "timestamp": group.create_dataset("timestamp", (0,), np.int64, maxshape=(None,), chunks=(GROW_ROWS,)),
            "timestamp_offset": group.create_dataset("timestamp_offset", (0,), np.int64, maxshape=(None,),
                                                     chunks=(GROW_ROWS,)),
            "is_valid": group.create_dataset("is_valid", (0,), bool, maxshape=(None,), chunks=(GROW_ROWS,)),
        }
        self.data: h5py.Dataset | None = None
        if self.dtype is not None and self.row_shape is not None:
            self._create_data()

    def _create_data(self) -> None:
        chunk_rows = 1 if math.prod(self.row_shape) * self.dtype.itemsize > 65536 else GROW_ROWS
        self.data = self.group.create_dataset("data", (self.capacity, *self.row_shape), self.dtype,
                                              maxshape=(None, *self.row_shape),
                                              chunks=(chunk_rows, *self.row_shape))

    def _grow(self) -> None:
        self.capacity += GROW_ROWS
        for ds in self.meta.values():
            ds.resize((self.capacity,))
        if self.data is not None:
            self.data.resize((self.capacity, *self.row_shape))

    def _row(self, value: Any) -> Any:
        """The value shaped for one row, or None if it cannot be stored."""
        if value is None or self.dtype is None:
            return None
        if self.is_string:
            return [value] if isinstance(value, str) else None
        arr = np.asarray(value)
        if self.row_shape is None:  # header without shape: the first value decides
            self.row_shape = arr.shape if arr.ndim else (1,)
            self._create_data()
        if arr.size != math.prod(self.row_shape):
            return self._skip(f"{arr.size} elements do not fit the row shape {self.row_shape}")
        if arr.dtype != self.dtype:
            if not np.can_cast(arr.dtype, self.dtype, "same_kind"):
                return self._skip(f"type {arr.dtype} cannot be stored as {self.dtype}")
            arr = arr.astype(self.dtype)
        return arr.reshape(self.row_shape)

    def _skip(self, reason: str) -> None:
        if not self.warned:
            self.warned = True
            log.warning("h5: channel %r value skipped (row marked invalid): %s", self.name, reason)
        return None

    def append(self, pulse_id: int, value: Any, sec: int | None, ns: int | None) -> None:
        if self.rows == self.capacity:
            self._grow()
        row = self._row(value)
        i = self.rows
        self.meta["pulse_id"][i] = pulse_id
        self.meta["timestamp"][i] = sec or 0
        self.meta["timestamp_offset"][i] = ns or 0
        self.meta["is_valid"][i] = row is not None
        if row is not None:
            self.data[i] = row
        self.rows += 1

    def finish(self) -> None:
        for ds in self.meta.values():
            ds.resize((self.rows,))
        if self.data is None and self.row_shape is not None and self.dtype is not None:
            self._create_data()
        if self.data is not None:
            self.data.resize((self.rows, *self.row_shape))


class H5Writer:
    """Writes received messages into one HDF5 file with the layout of this module's docstring."""

    def __init__(self, file_name: str, attrs: dict[str, Any] | None = None):
        self.file = h5py.File(file_name, "w")
        self.file.attrs.update(attrs or {})
        self.file.attrs["created"] = datetime.datetime.now(datetime.UTC).isoformat()
        self.data = self.file.create_group("data")
        self.channels: dict[str, _ChannelWriter] = {}
        self.n_messages = 0

    def write(self, message: Message) -> None:
        specs = {spec.name: spec for spec in message.data.channels}
        pulse_id = message.data.pulse_id
        for name, value in message.data.data.items():
            writer = self.channels.get(name)
            if writer is None:
                spec = specs.get(name) or ChannelSpec(name=name)
                writer = self.channels[name] = _ChannelWriter(self.data.create_group(name.replace("/", "_")),
                                                              spec)
            writer.append(pulse_id, value.value, value.timestamp, value.timestamp_offset)
        self.n_messages += 1

    def close(self) -> None:
        for writer in self.channels.values():
            writer.finish()
        self.file.attrs["n_messages"] = self.n_messages
        self.file.close()

    def __enter__(self) -> H5Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def receive(source: str | None = None, file_name: str = "output.h5", mode: int = SUB,
            n_messages: int | None = None, receive_timeout: int | None = None, host: str | None = None,
            port: int = 9999, progress: Callable[[int], None] | None = None) -> int:
    """Receive ``n_messages`` messages from ``source`` (``tcp://host:port``) into ``file_name``.

    Stops early when a receive times out (``receive_timeout`` ms; None waits forever) or on KeyboardInterrupt;
    what was received is always written. ``n_messages`` None: until timeout/interrupt. ``progress(n)`` is
    called after each stored message. Returns the number of messages written. Dropped (malformed) messages are
    not counted.
    """
    if n_messages is not None and n_messages <= 0:
        raise ValueError(f"n_messages must be > 0, got {n_messages}")
    stream = Source(host=host, port=port, address=source, mode=mode, receive_timeout=receive_timeout)
    attrs = {"source": stream.endpoint, "mode": mode_name(mode)}
    with stream, H5Writer(file_name, attrs) as writer:
        try:
            while n_messages is None or writer.n_messages < n_messages:
                message = stream.receive()
                if message is None:
                    if stream.timed_out:
                        log.warning("h5: no message within %s ms, stopping after %d messages", receive_timeout,
                                    writer.n_messages)
                        break
                    continue
                writer.write(message)
                if progress is not None:
                    progress(writer.n_messages)
        except KeyboardInterrupt:
            log.warning("h5: interrupted after %d messages", writer.n_messages)
        return writer.n_messages

"""Received bsread message objects, shaped like the Python lib's compact handler (spec section 16).

cam_server code reads ``m.data.pulse_id``, ``m.data.global_timestamp`` (sec), ``m.data.global_timestamp_offset``
(ns), ``m.data.hash``, ``m.data.format_changed``, ``m.data.data[name].value/.timestamp/.timestamp_offset`` and
``m.statistics``. ``m.data.channels`` adds the declared channel definitions of the current data header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cam_server.bsread.channels import ChannelSpec


class Value:
    """One channel's value in a message: ``value`` (numpy scalar/array view, str or None), ``timestamp`` (s),
    ``timestamp_offset`` (ns); both timestamps are None when the channel had no timestamp."""

    __slots__ = ("value", "timestamp", "timestamp_offset")

    def __init__(self, value: Any = None, timestamp: int | None = None, timestamp_offset: int | None = None):
        self.value = value
        self.timestamp = timestamp
        self.timestamp_offset = timestamp_offset

    def __repr__(self) -> str:
        return f"Value(value={self.value!r}, timestamp={self.timestamp}, timestamp_offset={self.timestamp_offset})"


@dataclass
class Statistics:
    """Counters of one receiving connection (``bytes_received`` is the size of the last message)."""

    messages_received: int = 0
    total_bytes_received: int = 0
    bytes_received: int = 0


@dataclass
class MessageData:
    """Header fields and decoded channel values of one message (``data`` keeps data-header order)."""

    pulse_id: int
    global_timestamp: int | None = None
    global_timestamp_offset: int | None = None
    hash: str = ""
    format_changed: bool = False
    data: dict[str, Value] = field(default_factory=dict)
    channels: tuple[ChannelSpec, ...] = ()
    data_header: dict[str, Any] | None = None
    htype: str | None = None

    def channel(self, name: str) -> ChannelSpec | None:
        """Declared definition (type, shape, encoding, compression) of a channel of this message."""
        for spec in self.channels:
            if spec.name == name:
                return spec
        return None

    def array(self, name: str) -> Any:
        """The value of channel ``name`` in its declared shape (None when the message lacks it).

        The Python receiver unwraps a first axis of length 1 (spec section 11): an image one pixel high comes back
        as a 1-D row, a one-element axis as a scalar. Consumers that need the array as declared (a 2-D image) get
        it back here, as a view (no copy).
        """
        entry = self.data.get(name)
        value = None if entry is None else entry.value
        spec = self.channel(name)
        if value is None or spec is None or spec.shape is None or spec.type == "string":
            return value
        shape = spec.numpy_shape
        if hasattr(value, "reshape") and getattr(value, "shape", None) != shape and math.prod(shape) == value.size:
            return value.reshape(shape)
        return value


@dataclass
class Message:
    """A received bsread message: ``data`` (:class:`MessageData`) and ``statistics`` of the connection."""

    data: MessageData
    statistics: Statistics = field(default_factory=Statistics)

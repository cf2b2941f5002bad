"""Received bsread message objects, shaped like the Python lib's compact handler (spec section 16).

cam_server code reads ``m.data.pulse_id``, ``m.data.global_timestamp`` (sec), ``m.data.global_timestamp_offset``
(ns), ``m.data.hash``, ``m.data.format_changed``, ``m.data.data[name].value/.timestamp/.timestamp_offset`` and
``m.statistics``. ``m.data.channels`` adds the declared channel definitions of the current data header.
"""

from __future__ import annotations

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


@dataclass
class Message:
    """A received bsread message: ``data`` (:class:`MessageData`) and ``statistics`` of the connection."""

    data: MessageData
    statistics: Statistics = field(default_factory=Statistics)

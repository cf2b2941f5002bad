"""Wire-compatible implementation of PSI's bsread protocol over ZeroMQ (spec: shared/spec/bsread.md).

Same API shape as the Python lib: ``source``/``Source`` (receiver), ``Sender``, ``PUB/SUB/PUSH/PULL``,
``BIND/CONNECT`` and ``h5.receive``; plus the sans-I/O codec (``Encoder``, ``Decoder``, ``encode_message``).
``h5`` is imported lazily (h5py is heavy and most users never record).
"""

from __future__ import annotations

import importlib
from typing import Any

from cam_server.bsread.channels import (
    ChannelError,
    ChannelSpec,
    derive_type_shape,
    make_reader,
    make_serializer,
)
from cam_server.bsread.codec import Decoder, Encoder, encode_message, split_timestamp
from cam_server.bsread.compression import CompressionError
from cam_server.bsread.endpoints import BIND, CONNECT, PUB, PULL, PUSH, SUB
from cam_server.bsread.message import Message, MessageData, Statistics, Value
from cam_server.bsread.receiver import Source, source
from cam_server.bsread.sender import Sender
from cam_server.bsread.wakeup import Wakeup

__all__ = [
    "BIND", "CONNECT", "PUB", "PULL", "PUSH", "SUB", "ChannelError", "ChannelSpec", "CompressionError", "Decoder",
    "Encoder", "Message", "MessageData", "Sender", "Source", "Statistics", "Value", "Wakeup", "derive_type_shape",
    "encode_message", "h5", "make_reader", "make_serializer", "source", "split_timestamp",
]


def __getattr__(name: str) -> Any:
    if name == "h5":
        return importlib.import_module("cam_server.bsread.h5")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Wire-compatible implementation of PSI's bsread protocol over ZeroMQ (spec: shared/spec/bsread.md).

Same API shape as the Python lib: ``source``/``Source`` (receiver), ``Sender``, ``PUB/SUB/PUSH/PULL``,
``BIND/CONNECT`` and ``h5.receive``; plus the sans-I/O codec (``Encoder``, ``Decoder``, ``encode_message``).
The codec is imported eagerly; the ZeroMQ half (``Source``, ``Sender``, ``Wakeup``, ...) and ``h5`` lazily, so
that code using only the codec never imports zmq (checked by the import contracts in pyproject.toml).
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
from cam_server.bsread.message import Message, MessageData, Statistics, Value

__all__ = [
    "BIND", "CONNECT", "PUB", "PULL", "PUSH", "SUB", "ChannelError", "ChannelSpec", "CompressionError", "Decoder",
    "Encoder", "Message", "MessageData", "Sender", "Source", "Statistics", "Value", "Wakeup", "derive_type_shape",
    "encode_message", "h5", "make_reader", "make_serializer", "source", "split_timestamp",
]

# name -> module that defines it (imported on first use)
_LAZY = {
    "BIND": "endpoints", "CONNECT": "endpoints", "PUB": "endpoints", "PULL": "endpoints", "PUSH": "endpoints",
    "SUB": "endpoints", "Source": "receiver", "source": "receiver", "Sender": "sender", "Wakeup": "wakeup",
}


def __getattr__(name: str) -> Any:
    if name == "h5":
        return importlib.import_module("cam_server.bsread.h5")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cam_server.bsread.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value

"""Helpers on received and outgoing messages that several pipeline types share (a type never imports another
type for them): the message timestamp, include/exclude filtering and checking a user function's result."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from cam_server.bsread import Message
from cam_server.pipeline.instance.outcomes import ProcessingError
from cam_server.pipeline.instance.user_code import describe_exception


def message_timestamp(message: Message) -> tuple[int, int]:
    """(sec, ns) of the message's global timestamp (local time if the header has none)."""
    sec, ns = message.data.global_timestamp, message.data.global_timestamp_offset
    if sec is None:
        now = time.time()
        return int(now), int((now - int(now)) * 1e9)
    return int(sec), int(ns or 0)


def filter_output(values: dict[str, Any], include: list[str] | None, exclude: frozenset[str]) -> dict[str, Any]:
    """``include`` keeps only the listed names, in that order (missing ones as None, as the reference);
    then ``exclude`` removes names."""
    if include is not None:
        values = {name: values.get(name) for name in include}
    if exclude:
        values = {name: v for name, v in values.items() if name not in exclude}
    return values


def call_user_function(function: Callable[..., Any], args: tuple, what: str, pulse_id: int,
                       include: list[str] | None, exclude: frozenset[str]) -> dict[str, Any] | None:
    """Call a stream/custom function and check its result; every failure is a :class:`ProcessingError` naming
    the pulse id, the exception and the script line."""
    try:
        result = function(*args)
    except Exception as exc:  # noqa: BLE001 - user functions can raise anything
        raise ProcessingError(f"{what} failed at pulse id {pulse_id}: {describe_exception(exc)}") from exc
    if result is None:  # the function chose to send nothing this time
        return None
    if not isinstance(result, Mapping):
        raise ProcessingError(f"{what} returned {type(result).__name__} at pulse id {pulse_id}, expected a dict "
                              "(channel name -> value) or None")
    bad = [key for key in result if not isinstance(key, str)]
    if bad:
        raise ProcessingError(f"{what} returned a non-string channel name {bad[0]!r} at pulse id {pulse_id}")
    return filter_output(dict(result), include, exclude)

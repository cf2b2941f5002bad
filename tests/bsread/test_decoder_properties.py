"""Property tests (hypothesis) of the bsread Decoder fed mutated golden messages (issue 10, "Prove it").

Every golden fixture message (``/work/shared/fixtures/bsread``, see ``fixture_data``) is mutated the ways a broken
or hostile sender, a truncated network read or a bug upstream would: bytes flipped, frames truncated, frames
dropped, duplicated or added, size fields of compressed values made huge, and the JSON of the main or data
header changed (keys removed or added, values replaced by any JSON value or by values that are nearly right: other
types, shapes, encodings, compressions, huge numbers). Properties:

* the decoder never raises, and every message it drops is dropped for a reason of its own (its ``DropMessage``
  path), never through its catch-all for unexpected errors (``unexpected decoder error``: a bug);
* each decode takes a bounded time (CPU time: no hang, no blow-up on a mutated size);
* a message it accepts holds only what consumers expect (int pulse id, numbers or None for times, values that are
  None, str, numpy scalars or arrays);
* one bad message never poisons the connection: the pristine message decoded right after it gives exactly what a
  fresh decoder gives.

Derandomized, bounded (``max_examples``), no example database: the same examples on every run and in CI.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cam_server.bsread import Decoder
from tests.bsread.fixture_data import message_frames, streams

pytestmark = pytest.mark.unit

MESSAGES: list[tuple[str, tuple[bytes, ...]]] = [
    (f"{s['id']}/m{i}", tuple(message_frames(m))) for s in streams() for i, m in enumerate(s["messages"])]
# One message of at most 47 kB (the largest fixture) decodes in well under a millisecond of CPU. CPU time, not wall
# time, is bounded tightly: on a loaded machine a decode can wait seconds for a core; the wall bound catches a hang.
DECODE_CPU_BOUND_S = 1.0
DECODE_WALL_BOUND_S = 30.0
UNEXPECTED = "unexpected decoder error"

SETTINGS = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- values for JSON mutations -------------------------------------------------------------------------------

HUGE = st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, 2**100, -1, -(2**63), 0])
NEAR_VALUES = st.sampled_from([
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
    "string", "float16", "complex128", "object", "", "big", "little", "native", "bitshuffle_lz4", "lz4", "none",
    "bsr_m-1.1", "bsr_d-1.1", [1], [0], [], [2**31, 2**31], [-1, 4], [1.5], ["2"], [1, 1, 1, 1, 1], {"sec": 1},
    {"sec": 1, "ns": 2}, {"epoch": 1, "ns": 0}, {"sec": "1", "ns": 0}, float("nan"), float("inf"), 1e308, True,
])
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
           | st.text(max_size=12) | HUGE)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
VALUES = NEAR_VALUES | JSON_VALUES
KEYS = st.sampled_from(["htype", "hash", "pulse_id", "global_timestamp", "dh_compression", "channels", "name",
                        "type", "shape", "encoding", "compression", "sec", "ns", "epoch"]) | st.text(max_size=8)


def _mutate_doc(draw: Any, doc: Any, depth: int = 0) -> Any:
    """``doc`` with one change somewhere inside: descend into a random child, or change this node."""
    if isinstance(doc, dict) and doc and depth < 6 and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(doc)))
        return {**doc, key: _mutate_doc(draw, doc[key], depth + 1)}
    if isinstance(doc, list) and doc and depth < 6 and draw(st.booleans()):
        i = draw(st.integers(0, len(doc) - 1))
        return [*doc[:i], _mutate_doc(draw, doc[i], depth + 1), *doc[i + 1:]]
    op = draw(st.sampled_from(["replace", "delete", "add"]))
    if op == "replace" or not isinstance(doc, dict | list):
        return draw(VALUES)
    if isinstance(doc, dict):
        if op == "delete" and doc:
            key = draw(st.sampled_from(sorted(doc)))
            return {k: v for k, v in doc.items() if k != key}
        return {**doc, draw(KEYS): draw(VALUES)}
    if op == "delete" and doc:
        i = draw(st.integers(0, len(doc) - 1))
        return doc[:i] + doc[i + 1:]
    i = draw(st.integers(0, len(doc)))
    return [*doc[:i], draw(VALUES), *doc[i:]]


# --- frame mutations -----------------------------------------------------------------------------------------

def _flip(draw: Any, frames: list[bytes]) -> list[bytes]:
    i = draw(st.integers(0, len(frames) - 1))
    if not frames[i]:
        return frames
    data = bytearray(frames[i])
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] ^= draw(st.integers(1, 255))
    return [*frames[:i], bytes(data), *frames[i + 1:]]


def _truncate(draw: Any, frames: list[bytes]) -> list[bytes]:
    i = draw(st.integers(0, len(frames) - 1))
    cut = draw(st.integers(0, max(0, len(frames[i]) - 1)))
    return [*frames[:i], frames[i][:cut], *frames[i + 1:]]


def _drop_frame(draw: Any, frames: list[bytes]) -> list[bytes]:
    i = draw(st.integers(0, len(frames) - 1))
    return frames[:i] + frames[i + 1:]


def _add_frame(draw: Any, frames: list[bytes]) -> list[bytes]:
    i = draw(st.integers(0, len(frames)))
    extra = draw(st.binary(max_size=64) | st.sampled_from(frames or [b""]))
    return [*frames[:i], extra, *frames[i:]]


def _size_field(draw: Any, frames: list[bytes]) -> list[bytes]:
    """A value frame whose leading size fields (bitshuffle_lz4: 8-byte length + 4-byte block size, both big-endian;
    lz4: a 4-byte size) claim something huge, zero or negative: no allocation or loop may follow them blindly."""
    if len(frames) < 3:
        return frames
    i = draw(st.integers(2, len(frames) - 1))
    size = draw(st.sampled_from([0, 1, 7, 8, 2**30, 2**31 - 1, 2**31, 2**32 - 8, 2**40, 2**63, 2**64 - 1]))
    block = draw(st.sampled_from([0, 8, 4096, 2**30, 2**32 - 8]))
    head = draw(st.sampled_from([size.to_bytes(8, "big") + block.to_bytes(4, "big"),
                                 (size % 2**32).to_bytes(4, "big"), (size % 2**32).to_bytes(4, "little")]))
    return [*frames[:i], head + frames[i][len(head):], *frames[i + 1:]]


def _json_header(draw: Any, frames: list[bytes]) -> list[bytes]:
    i = draw(st.sampled_from([0, 1] if len(frames) > 1 else [0])) if frames else 0
    if not frames:
        return frames
    try:
        doc = json.loads(frames[i])
    except (ValueError, UnicodeDecodeError):  # a compressed data header: mutate the bytes instead
        return _flip(draw, frames)
    return [*frames[:i], json.dumps(_mutate_doc(draw, doc)).encode(), *frames[i + 1:]]


MUTATIONS = {"flip": _flip, "truncate": _truncate, "drop frame": _drop_frame, "add frame": _add_frame,
             "json header": _json_header, "size field": _size_field}


@st.composite
def mutated_messages(draw: Any) -> tuple[str, tuple[bytes, ...], list[bytes], list[str]]:
    """(fixture id, pristine frames, mutated frames, the mutations applied)."""
    where, pristine = draw(st.sampled_from(MESSAGES))
    frames = list(pristine)
    applied = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(MUTATIONS)))
        applied.append(name)
        frames = MUTATIONS[name](draw, frames)
    return where, pristine, frames, applied


# --- checks --------------------------------------------------------------------------------------------------

def _decode(decoder: Decoder, frames: Any) -> Any:
    start, start_cpu = time.monotonic(), time.thread_time()
    message = decoder.decode(frames)
    cpu, elapsed = time.thread_time() - start_cpu, time.monotonic() - start
    assert cpu < DECODE_CPU_BOUND_S, f"decoding took {cpu:.2f} s of CPU"
    assert elapsed < DECODE_WALL_BOUND_S, f"decoding took {elapsed:.2f} s"
    if message is None:
        reason = decoder.last_drop_reason
        assert reason, "a dropped message has a reason"
        assert not reason.startswith(UNEXPECTED), f"the decoder's catch-all was reached: {reason}"
    return message


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _summary(message: Any) -> Any:
    """What a consumer sees of a message, comparable with ``==`` (arrays as dtype, shape and bytes)."""
    if message is None:
        return None
    data = message.data
    values = []
    for name, value in data.data.items():
        v = value.value
        if isinstance(v, np.ndarray | np.generic):
            v = (v.dtype.str, np.shape(v), np.asarray(v).tobytes())
        values.append((name, v, value.timestamp, value.timestamp_offset))
    return (data.pulse_id, data.hash, data.global_timestamp, data.global_timestamp_offset, values)


def _check_accepted(message: Any) -> None:
    data = message.data
    assert isinstance(data.pulse_id, int) and not isinstance(data.pulse_id, bool)
    assert data.global_timestamp is None or _is_number(data.global_timestamp)
    assert data.global_timestamp_offset is None or _is_number(data.global_timestamp_offset)
    for name, value in data.data.items():
        assert isinstance(name, str)
        assert value.value is None or isinstance(value.value, str | np.ndarray | np.generic), \
            f"channel {name!r}: {type(value.value).__name__}"
        assert value.timestamp is None or isinstance(value.timestamp, int)


def _hash(frames: Any) -> str | None:
    try:
        return str(json.loads(frames[0])["hash"])
    except Exception:  # noqa: BLE001 - no readable hash
        return None


def _property(where: str, pristine: tuple[bytes, ...], frames: list[bytes], allow_lz4: bool) -> None:
    expected = _summary(Decoder(allow_lz4=allow_lz4).decode(list(pristine)))
    # A connection that already decoded the pristine message (the mutated one reuses its readers when the hash
    # is unchanged): the pristine message decodes exactly as before right after the mutated one.
    warm = Decoder(allow_lz4=allow_lz4)
    _decode(warm, list(pristine))
    message = _decode(warm, frames)
    if message is not None:
        _check_accepted(message)
    assert _summary(_decode(warm, list(pristine))) == expected, f"{where}: the connection did not recover"
    # A fresh connection whose first message is the mutated one: the same, unless that message carried the
    # pristine hash (spec 5.2: the header it brought, or none if it failed to parse, stays in use for that hash).
    fresh = Decoder(allow_lz4=allow_lz4)
    message = _decode(fresh, frames)
    if message is not None:
        _check_accepted(message)
    stale = fresh.last_hash is not None and fresh.last_hash == _hash(pristine)
    recovered = _summary(_decode(fresh, list(pristine)))
    if not stale:
        assert recovered == expected, f"{where}: the connection did not recover"


@SETTINGS
@given(mutated_messages())
def test_mutated_golden_messages(case: tuple[str, tuple[bytes, ...], list[bytes], list[str]]) -> None:
    where, pristine, frames, _ = case
    _property(where, pristine, frames, allow_lz4=True)


@settings(SETTINGS, max_examples=300)
@given(mutated_messages())
def test_mutated_golden_messages_python_receiver_mode(case: tuple[str, tuple[bytes, ...], list[bytes], list[str]],
                                                      ) -> None:
    where, pristine, frames, _ = case
    _property(where, pristine, frames, allow_lz4=False)


@settings(SETTINGS, max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_arbitrary_frames(frames: list[bytes]) -> None:
    """Not a bsread message at all (a port scanner, another protocol): dropped with a reason."""
    message = _decode(Decoder(), frames)
    if message is not None:
        _check_accepted(message)


@settings(SETTINGS, max_examples=300)
@given(st.sampled_from(MESSAGES), st.lists(st.sampled_from(MESSAGES), min_size=1, max_size=6))
def test_interleaved_streams(first: tuple[str, tuple[bytes, ...]], others: list[tuple[str, tuple[bytes, ...]]],
                             ) -> None:
    """Messages of different streams on one connection (a sender restarted with other channels, two senders on
    one PULL socket): each message whose hash differs from the previous one decodes as it would alone."""
    decoder = Decoder()
    for where, frames in (first, *others):
        same_hash = decoder.last_hash is not None and decoder.last_hash == _hash(frames)
        message = _decode(decoder, list(frames))
        alone = _summary(Decoder().decode(list(frames)))
        if message is not None and not same_hash:  # same hash: the header in use stays (spec 5.2)
            assert _summary(message) == alone, f"{where} decoded differently after other streams"

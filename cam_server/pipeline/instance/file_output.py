"""FILE output mode: write pipeline messages to an HDF5 file (config keys ``file``, ``layout``, ``localtime``,
``change``, ``records``).

Row ``i`` of every dataset belongs to the ``i``-th written message, in both layouts, so channels can be
lined up without searching pulse ids; a channel missing from a message (or with value None) gets the fill
value in that row and ``is_valid`` False. The layouts are documented in docs/pipeline_types.md.

Small rows (scalars, short arrays, strings) are collected in memory and written one HDF5 chunk at a time,
because per-element h5py writes cost tens of microseconds each; images are written row by row. ``flush()``
and ``close()`` write everything out, so nothing is lost on a clean stop.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from cam_server.bsread.codec import Timestamp, split_timestamp
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.file_path import FileOutputError, resolve_output_file

log = logging.getLogger(__name__)

LAYOUTS = ("DEFAULT", "FLAT")
FLAT_RESERVED = frozenset({"pulse_id", "global_timestamp", "global_timestamp_offset", "general", "channel_info"})
CHUNK_BYTES = 1 << 20  # target chunk (and in-memory row buffer) size
MAX_CHUNK_ROWS = 1024
STR_DTYPE = h5py.string_dtype()


def to_hdf5_array(value: Any) -> np.ndarray | None:
    """The value as a numpy array (0-d for scalars; strings as object arrays), None for a missing value.

    Raises ValueError/TypeError naming what is wrong (unsupported type, ragged list, huge int).
    """
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (str, np.str_)):
        return np.array(str(value), dtype=object)
    elif isinstance(value, (bool, np.bool_)):
        return np.asarray(value, dtype=np.bool_)
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"integer {value} does not fit in int64")
        return np.asarray(value, dtype=np.int64)
    elif isinstance(value, float):
        return np.asarray(value, dtype=np.float64)
    elif isinstance(value, np.generic):
        arr = np.asarray(value)
    elif isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value)
        except ValueError as ex:
            raise ValueError(f"list cannot be stored as an array ({ex})") from None
    else:
        raise TypeError(f"unsupported value type {type(value).__name__} (use numpy arrays, numbers, str, bool, "
                        "lists or None)")
    kind = arr.dtype.kind
    if kind == "U":
        return arr.astype(object)
    if kind == "O":
        if all(isinstance(x, str) for x in arr.flat):
            return arr
        raise ValueError("array of mixed or ragged objects cannot be stored (only numbers, bool or str)")
    if kind not in "biufc":
        raise TypeError(f"unsupported array dtype {arr.dtype}")
    return arr


def _fill_for(dtype: np.dtype) -> Any:
    """Fill value of the dataset's own dtype (h5py cannot convert a float NaN into a complex fill)."""
    if dtype.kind == "O":
        return None
    return np.array(np.nan if dtype.kind in "fc" else 0, dtype=dtype)[()]


class _Column:
    """One dataset whose row i is message i; rows of at most CHUNK_BYTES are buffered a chunk at a time."""

    def __init__(self, group: h5py.Group, name: str, row_shape: tuple[int, ...], dtype: np.dtype,
                 fill: Any, fixed_rows: int | None):
        self.row_shape = row_shape
        self.is_str = dtype.kind == "O"
        self.dtype = dtype
        row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * (16 if self.is_str else dtype.itemsize))
        chunk_rows = max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // row_bytes))
        if fixed_rows is not None:
            chunk_rows = max(1, min(chunk_rows, fixed_rows))
        h5_dtype = STR_DTYPE if self.is_str else dtype
        kwargs: dict[str, Any] = {"chunks": (chunk_rows,) + row_shape}
        if fill is not None:
            kwargs["fillvalue"] = fill
        if fixed_rows is not None:
            kwargs.update(shape=(fixed_rows,) + row_shape, maxshape=(fixed_rows,) + row_shape)
        else:
            kwargs.update(shape=(0,) + row_shape, maxshape=(None,) + row_shape)
        self.dset = group.create_dataset(name, dtype=h5_dtype, **kwargs)
        self.fixed = fixed_rows is not None
        self.fill = fill
        self.chunk_rows = chunk_rows
        self.buffered = chunk_rows > 1
        self.buffer: np.ndarray | None = None
        self.base = 0  # first row held in the buffer
        self.top = 0  # one past the last row set in the buffer
        if self.buffered:
            self.buffer = np.empty((chunk_rows,) + row_shape, dtype=dtype)
            self._reset_buffer(0)

    def _reset_buffer(self, base: int) -> None:
        self.buffer[...] = "" if self.is_str else self.fill  # h5py reads missing vlen strings as ""
        self.base = base
        self.top = base

    def set(self, row: int, value: Any) -> None:
        if not self.buffered:
            self._ensure_rows(row + 1)
            self.dset[row] = value
            return
        if row >= self.base + self.chunk_rows:
            self.flush()
            self._reset_buffer(row - row % self.chunk_rows)
        self.buffer[row - self.base] = value
        self.top = row + 1

    def flush(self) -> None:
        if self.buffered and self.top > self.base:
            self._ensure_rows(self.top)
            self.dset[self.base:self.top] = self.buffer[:self.top - self.base]

    def finish(self, n_rows: int) -> None:
        """Write out the buffer and give a growing dataset exactly ``n_rows`` rows."""
        self.flush()
        if not self.fixed and self.dset.shape[0] != n_rows:
            self.dset.resize(n_rows, axis=0)

    def _ensure_rows(self, n: int) -> None:
        if not self.fixed and self.dset.shape[0] < n:
            self.dset.resize(n, axis=0)


class _Channel:
    """The datasets of one channel: bookkeeping columns plus one data segment per format (see ``change``)."""

    def __init__(self, name: str, meta_group: h5py.Group, data_group: h5py.Group, data_base: str):
        self.name = name
        self.meta_group = meta_group
        self.data_group = data_group
        self.data_base = data_base  # "data" (DEFAULT) or the channel name (FLAT)
        self.columns: dict[str, _Column] = {}
        self.segments: list[tuple[tuple[np.dtype, tuple[int, ...]], _Column]] = []

    def segment_name(self, index: int) -> str:
        return self.data_base if index == 0 else f"{self.data_base}{'_' if self.data_base == 'data' else '__'}{index}"


class FileWriter:
    """Write messages to an HDF5 file; use as a context manager or call :meth:`close`.

    ``write(pulse_id, timestamp, data)`` appends one row. ``timestamp`` is ``(sec, ns)`` or float seconds.
    ``channel_timestamps`` (optional, name -> ``(sec, ns)``) gives channels their own time for
    ``localtime``; channels without one get the message time. With ``records`` the datasets are created
    with exactly that many rows and the file is flushed and closed when the last one is written
    (:attr:`done`). A channel whose shape/dtype changes is written to a new dataset with ``change=True``;
    with ``change=False`` that channel is marked invalid in the row, the rest of the row is written, and
    :class:`FileOutputError` is raised naming the channel and both formats. The file is refused if it
    exists, unless ``overwrite``. Not thread-safe: one thread writes.
    """

    def __init__(self, file: str | os.PathLike, layout: str = "DEFAULT", localtime: bool = True,
                 change: bool = False, records: int | None = None, instance: str = "",
                 overwrite: bool = False):
        if not file or not isinstance(file, (str, os.PathLike)):
            raise FileOutputError(f"FILE output needs a 'file' name, got {file!r}")
        layout_key = str(layout).upper() if layout is not None else "DEFAULT"
        if layout_key not in LAYOUTS:
            raise FileOutputError(f"layout must be 'DEFAULT' or 'FLAT', got {layout!r}")
        if records is not None and (not isinstance(records, int) or isinstance(records, bool) or records < 1):
            raise FileOutputError(f"records must be a positive integer or None, got {records!r}")
        self.path = os.fspath(file)
        self.layout = layout_key
        self.localtime = bool(localtime)
        self.change = bool(change)
        self.records = records
        self.rows = 0
        self._closed = False
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, exist_ok=True)
            self._file = h5py.File(self.path, "w" if overwrite else "w-")
        except (OSError, ValueError) as ex:
            self._closed = True
            if os.path.exists(self.path) and not overwrite:
                raise FileOutputError(f"FILE output: {self.path} already exists (refusing to overwrite)") from None
            raise FileOutputError(f"FILE output: cannot create {self.path}: {ex}") from None
        self._channels: dict[str, _Channel] = {}
        self._globals: dict[str, _Column] = {}
        general = self._file.create_group("general")
        general["created"] = datetime.datetime.now().astimezone().isoformat()
        general["instance"] = instance or ""
        general["layout"] = self.layout
        general["localtime"] = self.localtime
        general["change"] = self.change
        general["records_requested"] = records if records is not None else -1
        self._records_ds = general.create_dataset("records", data=np.int64(0))
        if self.layout == "DEFAULT":
            self._data_root = self._file.create_group("data")
        else:
            self._data_root = self._file
            self._info_root = self._file.create_group("channel_info")
            for name, dtype, fill in (("pulse_id", np.int64, -1), ("global_timestamp", np.int64, 0),
                                      ("global_timestamp_offset", np.int64, 0)):
                self._globals[name] = _Column(self._file, name, (), np.dtype(dtype), fill, records)

    @property
    def done(self) -> bool:
        """True once ``records`` rows were written (the file is then closed)."""
        return self.records is not None and self.rows >= self.records

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, pulse_id: int, timestamp: Timestamp, data: Mapping[str, Any],
              channel_timestamps: Mapping[str, Any] | None = None) -> None:
        """Append one message as the next row (see the class docstring for errors)."""
        if self._closed:
            if self.done:
                raise FileOutputError(f"FILE output {self.path}: all {self.records} records already written")
            raise FileOutputError(f"FILE output {self.path} is closed")
        if not isinstance(data, Mapping):
            raise FileOutputError(f"FILE output: message data must be a dict, got {type(data).__name__}")
        try:
            sec, ns = split_timestamp(timestamp)
        except (TypeError, ValueError) as exc:
            raise FileOutputError(str(exc)) from None
        pulse_id = int(pulse_id)
        row = self.rows
        errors: list[str] = []
        try:
            if self._globals:
                self._globals["pulse_id"].set(row, pulse_id)
                self._globals["global_timestamp"].set(row, sec)
                self._globals["global_timestamp_offset"].set(row, ns)
            for name, value in data.items():
                try:
                    local = channel_timestamps.get(name) if channel_timestamps else None
                    self._write_channel(row, name, value, pulse_id, sec, ns, local)
                except (ValueError, TypeError, FileOutputError) as ex:
                    errors.append(f"channel {name!r}: {ex}")
        except OSError as ex:  # disk full, file removed, ...
            raise FileOutputError(f"FILE output {self.path}: write failed: {ex}") from None
        self.rows = row + 1
        if self.done:
            self.close()
        if errors:
            raise FileOutputError(f"FILE output {self.path}, pulse id {pulse_id}: " + "; ".join(errors))

    def flush(self) -> None:
        """Write buffered rows and flush the HDF5 file (readers see all rows written so far)."""
        if self._closed:
            return
        for column in self._all_columns():
            column.flush()
        self._records_ds[()] = self.rows
        self._file.flush()

    def close(self) -> None:
        """Write everything out, trim growing datasets to the rows written, and close the file."""
        if self._closed:
            return
        self._closed = True
        try:
            for column in self._all_columns():
                column.finish(self.rows)
            self._records_ds[()] = self.rows
        finally:
            self._file.close()
        log.info("FILE output %s closed with %d records", self.path, self.rows)

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    def _all_columns(self):
        yield from self._globals.values()
        for channel in self._channels.values():
            yield from channel.columns.values()
            for _, column in channel.segments:
                yield column

    def _new_channel(self, name: str) -> _Channel:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise FileOutputError(f"invalid channel name {name!r} for HDF5 (empty, '/' or '.')")
        if self.layout == "FLAT" and name in FLAT_RESERVED:
            raise FileOutputError(f"channel name {name!r} is reserved in the FLAT layout")
        if self.layout == "DEFAULT":
            group = self._data_root.create_group(name)
            channel = _Channel(name, group, group, "data")
            bookkeeping = [("pulse_id", np.int64, -1), ("is_valid", np.bool_, False),
                           ("global_timestamp", np.int64, 0), ("global_timestamp_offset", np.int64, 0)]
        else:
            if name in self._file:
                raise FileOutputError(f"channel name {name!r} clashes with an existing FLAT dataset")
            group = self._info_root.create_group(name)
            channel = _Channel(name, group, self._file, name)
            bookkeeping = [("is_valid", np.bool_, False)]
        if self.localtime:
            bookkeeping += [("timestamp", np.int64, 0), ("timestamp_offset", np.int64, 0)]
        if self.change:
            bookkeeping.append(("data_index", np.int16, -1))
        for col_name, dtype, fill in bookkeeping:
            channel.columns[col_name] = _Column(group, col_name, (), np.dtype(dtype), fill, self.records)
        self._channels[name] = channel
        return channel

    def _write_channel(self, row: int, name: str, value: Any, pulse_id: int, sec: int, ns: int,
                       local: Any) -> None:
        channel = self._channels.get(name) or self._new_channel(name)
        cols = channel.columns
        if "pulse_id" in cols:
            cols["pulse_id"].set(row, pulse_id)
            cols["global_timestamp"].set(row, sec)
            cols["global_timestamp_offset"].set(row, ns)
        if self.localtime:
            lsec, lns = split_timestamp(local) if local is not None else (sec, ns)
            cols["timestamp"].set(row, lsec)
            cols["timestamp_offset"].set(row, lns)
        arr = to_hdf5_array(value)
        if arr is None:
            return
        index, column = self._segment_for(channel, arr)
        column.set(row, arr[()] if arr.ndim == 0 else arr)
        cols["is_valid"].set(row, True)
        if self.change:
            cols["data_index"].set(row, index)

    def _segment_for(self, channel: _Channel, arr: np.ndarray) -> tuple[int, _Column]:
        shape = arr.shape
        for index, ((dtype, seg_shape), column) in enumerate(channel.segments):
            if seg_shape == shape and (dtype == arr.dtype or (
                    dtype.kind != "O" and arr.dtype.kind != "O" and np.can_cast(arr.dtype, dtype, "safe"))):
                return index, column
        if channel.segments and not self.change:
            (dtype, seg_shape), _ = channel.segments[0]
            raise FileOutputError(
                f"format changed from {_describe(dtype, seg_shape)} to {_describe(arr.dtype, shape)} "
                "(set change=True to store changing formats in new datasets)")
        index = len(channel.segments)
        name = channel.segment_name(index)
        if name in channel.data_group:
            raise FileOutputError(f"dataset name {name!r} for the new format is already used")
        dtype = np.dtype(object) if arr.dtype.kind == "O" else arr.dtype
        column = _Column(channel.data_group, name, shape, dtype, _fill_for(dtype), self.records)
        channel.segments.append(((dtype, shape), column))
        return index, column


def _describe(dtype: np.dtype, shape: tuple[int, ...]) -> str:
    kind = "str" if dtype.kind == "O" else str(dtype)
    return f"{kind}{list(shape)}"


class FileSendError(ValueError):
    """A message the FILE output could not write completely (the loop reports it like a send error)."""


class FileOutput:
    """``mode: "FILE"``: the instance's output writing each message as one row of an HDF5 file.

    Same interface as :class:`~cam_server.pipeline.instance.stream_output.OutputStream` as far as the loop uses it
    (``send``, ``finished``, ``no_clients``, ``client_count``, ``dropped``, ``records``, ``update_config``,
    ``close``). Rows are written synchronously by the thread that sends, so every message ``send`` accepted is
    in the file when :meth:`close` returns (nothing is lost on a stop). ``records`` is fixed at start (the
    datasets are created with that many rows); the file is complete and closed when the last record is written.
    """

    def __init__(self, config: PipelineConfig, instance: str = "", folder: str | None = None,
                 protected: Mapping[str, str] | None = None) -> None:
        records = config.records or None  # 0: no limit
        self.path = resolve_output_file(config.file, folder, protected)
        self._writer = FileWriter(self.path, layout=config.layout, localtime=config.localtime, change=config.change,
                                  records=records, instance=instance)
        self.records = records
        self.sent = 0
        self.dropped = 0
        self.last_pulse_id: int | None = None
        self.enforce_pid = False
        self.update_config(config)

    def open(self) -> FileOutput:
        return self

    def update_config(self, config: PipelineConfig) -> None:
        """Live changes: ``enforce_pid`` only (``records`` fixes the dataset size, ``file``/``layout`` the file)."""
        self.enforce_pid = config.enforce_pid
        if (config.records or None) != self.records:
            log.warning("FILE output: records cannot change while writing (keeping %s)", self.records)

    @property
    def client_count(self) -> int:
        return 0

    @property
    def bytes_sent(self) -> int:
        """Nothing goes over the network (statistics ``total_bytes`` stays 0)."""
        return 0

    @property
    def no_clients(self) -> bool:
        return False  # a file needs no client: no_client_timeout does not apply

    @property
    def finished(self) -> bool:
        return self._writer.done

    @property
    def rows(self) -> int:
        return self._writer.rows

    def send(self, values: Mapping[str, Any], pulse_id: int, timestamp: Timestamp) -> bool:
        """Write one message; False when dropped by ``enforce_pid``. Raises :class:`FileSendError` (ValueError)
        naming the channels that could not be stored (the other channels of the row are written)."""
        if self.enforce_pid and self.last_pulse_id is not None and pulse_id <= self.last_pulse_id:
            self.dropped += 1
            return False
        data = {name: json.dumps(v, default=str) if isinstance(v, dict) else v for name, v in values.items()}
        try:
            self._writer.write(pulse_id, timestamp, data)
        except FileOutputError as exc:
            raise FileSendError(str(exc)) from None
        self.last_pulse_id = pulse_id
        self.sent += 1
        return True

    def close(self) -> None:
        self._writer.close()

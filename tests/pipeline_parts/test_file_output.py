"""FileWriter: both layouts, localtime, change, fixed records, None values, errors — read back with h5py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cam_server.pipeline.instance.file_output import FileOutputError, FileWriter

pytestmark = pytest.mark.unit

T0 = 1700000000


def _messages(n: int):
    """n messages of a processing-like output: image, axes, scalars, str, bool, list, occasional None."""
    for i in range(n):
        yield 1000 + 10 * i, (T0 + i, 1000 * i), {
            "image": (np.arange(12, dtype=np.uint16).reshape(3, 4) + i),
            "x_axis": np.linspace(0, 1, 4),
            "intensity": np.float64(i * 1.5),
            "count": i,
            "flag": i % 2 == 0,
            "name": f"frame {i}",
            "list": [i, i + 1],
            "maybe": None if i % 3 == 1 else float(i),
        }


def _write(path, n, **kw):
    with FileWriter(path, **kw) as w:
        for pid, ts, data in _messages(n):
            w.write(pid, ts, data)
    return w


def test_default_layout_values_shapes_dtypes(tmp_path):
    path = tmp_path / "out.h5"
    w = _write(path, 7, instance="inst1")
    assert w.closed and w.rows == 7
    with h5py.File(path, "r") as f:
        assert set(f) == {"data", "general"}
        assert set(f["data"]) == {"image", "x_axis", "intensity", "count", "flag", "name", "list", "maybe"}
        img = f["data/image/data"]
        assert img.shape == (7, 3, 4) and img.dtype == np.uint16
        assert img[5].tolist() == (np.arange(12).reshape(3, 4) + 5).tolist()
        assert f["data/x_axis/data"].shape == (7, 4) and f["data/x_axis/data"].dtype == np.float64
        assert f["data/intensity/data"][:].tolist() == [i * 1.5 for i in range(7)]
        assert f["data/count/data"].dtype == np.int64 and f["data/count/data"][:].tolist() == list(range(7))
        assert f["data/flag/data"].dtype == np.bool_ and f["data/flag/data"][:].tolist() == [i % 2 == 0
                                                                                              for i in range(7)]
        assert [s.decode() for s in f["data/name/data"][:]] == [f"frame {i}" for i in range(7)]
        assert f["data/list/data"][:].tolist() == [[i, i + 1] for i in range(7)]
        maybe = f["data/maybe/data"][:]
        valid = f["data/maybe/is_valid"][:]
        assert valid.tolist() == [i % 3 != 1 for i in range(7)]
        assert np.isnan(maybe[1]) and np.isnan(maybe[4]) and maybe[3] == 3.0
        for ch in f["data"]:
            assert f[f"data/{ch}/pulse_id"][:].tolist() == [1000 + 10 * i for i in range(7)]
            assert f[f"data/{ch}/global_timestamp"][:].tolist() == [T0 + i for i in range(7)]
            assert f[f"data/{ch}/global_timestamp_offset"][:].tolist() == [1000 * i for i in range(7)]
            assert f[f"data/{ch}/timestamp"][:].tolist() == [T0 + i for i in range(7)]
            assert "data_index" not in f[f"data/{ch}"]
        assert f["general/records"][()] == 7
        assert f["general/instance"][()].decode() == "inst1"
        assert f["general/layout"][()].decode() == "DEFAULT"
        assert f["general/created"][()].decode().startswith("20")
        assert f["data/image/data"].maxshape == (None, 3, 4)  # growing mode


def test_default_localtime_off_and_channel_timestamps(tmp_path):
    path = tmp_path / "lt.h5"
    with FileWriter(path, localtime=False) as w:
        w.write(1, (T0, 5), {"a": 1.0})
    with h5py.File(path, "r") as f:
        assert set(f["data/a"]) == {"data", "pulse_id", "is_valid", "global_timestamp", "global_timestamp_offset"}
    path2 = tmp_path / "lt2.h5"
    with FileWriter(path2, localtime=True) as w:
        w.write(1, T0 + 0.25, {"a": 1.0, "b": 2.0}, channel_timestamps={"a": (T0 - 1, 7)})
    with h5py.File(path2, "r") as f:
        assert f["data/a/timestamp"][0] == T0 - 1 and f["data/a/timestamp_offset"][0] == 7
        assert f["data/b/timestamp"][0] == T0 and f["data/b/timestamp_offset"][0] == 250_000_000
        assert f["data/a/global_timestamp"][0] == T0


def test_flat_layout(tmp_path):
    path = tmp_path / "flat.h5"
    _write(path, 5, layout="flat", localtime=False)
    with h5py.File(path, "r") as f:
        assert f["pulse_id"][:].tolist() == [1000 + 10 * i for i in range(5)]
        assert f["global_timestamp"][:].tolist() == [T0 + i for i in range(5)]
        assert f["global_timestamp_offset"][:].tolist() == [1000 * i for i in range(5)]
        assert f["image"].shape == (5, 3, 4) and f["image"].dtype == np.uint16
        assert f["intensity"][:].tolist() == [i * 1.5 for i in range(5)]
        assert f["channel_info/maybe/is_valid"][:].tolist() == [True, False, True, True, False]
        assert set(f["channel_info/image"]) == {"is_valid"}
        assert f["general/layout"][()].decode() == "FLAT"
    path2 = tmp_path / "flat_lt.h5"
    _write(path2, 2, layout="FLAT", localtime=True)
    with h5py.File(path2, "r") as f:
        assert f["channel_info/image/timestamp"][:].tolist() == [T0, T0 + 1]


def test_fixed_records_creates_full_size_and_closes_when_reached(tmp_path):
    path = tmp_path / "rec.h5"
    w = FileWriter(path, records=4)
    msgs = list(_messages(6))
    for pid, ts, data in msgs[:4]:
        assert not w.done
        w.write(pid, ts, data)
    assert w.done and w.closed  # closed and valid as soon as the last record is written
    with pytest.raises(FileOutputError, match="all 4 records already written"):
        w.write(*msgs[4])
    with h5py.File(path, "r") as f:
        assert f["data/image/data"].shape == (4, 3, 4)
        assert f["data/image/data"].maxshape == (4, 3, 4)
        assert f["data/image/data"][3].tolist() == (np.arange(12).reshape(3, 4) + 3).tolist()
        assert f["general/records"][()] == 4 and f["general/records_requested"][()] == 4


def test_fixed_records_closed_early_keeps_size_and_marks_rest_invalid(tmp_path):
    path = tmp_path / "early.h5"
    with FileWriter(path, records=10, layout="FLAT") as w:
        for pid, ts, data in list(_messages(3)):
            w.write(pid, ts, data)
    with h5py.File(path, "r") as f:
        assert f["count"].shape == (10,)
        assert f["pulse_id"][:].tolist() == [1000, 1010, 1020] + [-1] * 7
        assert f["channel_info/count/is_valid"][:].tolist() == [True] * 3 + [False] * 7
        assert f["general/records"][()] == 3


def test_shape_change_with_change_false_is_error_for_that_channel(tmp_path):
    path = tmp_path / "nochange.h5"
    with FileWriter(path) as w:
        w.write(1, (T0, 0), {"img": np.zeros((2, 2), np.uint8), "v": 1.0})
        with pytest.raises(FileOutputError, match=r"channel 'img': format changed from uint8\[2, 2\] to "
                                                  r"uint8\[3, 2\].*change=True"):
            w.write(2, (T0, 0), {"img": np.zeros((3, 2), np.uint8), "v": 2.0})
        w.write(3, (T0, 0), {"img": np.ones((2, 2), np.uint8), "v": 3.0})
        # int into a float channel is a safe cast, not a change
        w.write(4, (T0, 0), {"img": np.ones((2, 2), np.uint8), "v": 4})
    with h5py.File(path, "r") as f:
        assert f["data/img/is_valid"][:].tolist() == [True, False, True, True]
        assert f["data/img/pulse_id"][:].tolist() == [1, 2, 3, 4]
        assert f["data/v/data"][:].tolist() == [1.0, 2.0, 3.0, 4.0]  # the rest of the bad row was written
        assert list(f["data/img"]).count("data") == 1 and "data_1" not in f["data/img"]


@pytest.mark.parametrize("layout", ["DEFAULT", "FLAT"])
def test_shape_and_dtype_change_with_change_true_makes_new_datasets(tmp_path, layout):
    path = tmp_path / f"change_{layout}.h5"
    values = [np.zeros((2, 2), np.uint8), np.ones((3, 2), np.uint8), np.full((2, 2), 2, np.uint8),
              np.full((2, 2), 3.5), None]
    with FileWriter(path, change=True, layout=layout) as w:
        for i, v in enumerate(values):
            w.write(i, (T0, 0), {"img": v})
    with h5py.File(path, "r") as f:
        if layout == "DEFAULT":
            g = f["data/img"]
            d0, d1, d2, index, valid = g["data"], g["data_1"], g["data_2"], g["data_index"], g["is_valid"]
        else:
            d0, d1, d2 = f["img"], f["img__1"], f["img__2"]
            index, valid = f["channel_info/img/data_index"], f["channel_info/img/is_valid"]
        assert index[:].tolist() == [0, 1, 0, 2, -1]
        assert valid[:].tolist() == [True, True, True, True, False]
        assert d0.shape == (5, 2, 2) and d0.dtype == np.uint8
        assert d1.shape == (5, 3, 2) and d1.dtype == np.uint8
        assert d2.shape == (5, 2, 2) and d2.dtype == np.float64
        assert d0[0].tolist() == [[0, 0], [0, 0]] and d0[2].tolist() == [[2, 2], [2, 2]]
        assert d1[1].tolist() == [[1, 1]] * 3
        assert d2[3].tolist() == [[3.5, 3.5]] * 2


def test_channel_appearing_late_and_first_value_none(tmp_path):
    path = tmp_path / "late.h5"
    with FileWriter(path) as w:
        w.write(1, (T0, 0), {"a": 1})
        w.write(2, (T0, 0), {"a": 2, "b": None})
        w.write(3, (T0, 0), {"a": 3, "b": np.array([1.5, 2.5], np.float32)})
    with h5py.File(path, "r") as f:
        b = f["data/b"]
        assert b["data"].shape == (3, 2) and b["data"].dtype == np.float32
        assert b["is_valid"][:].tolist() == [False, False, True]
        assert b["pulse_id"][:].tolist() == [-1, 2, 3]  # -1: channel absent from that message
        assert np.isnan(b["data"][0]).all() and b["data"][2].tolist() == [1.5, 2.5]


def test_many_rows_cross_chunk_boundaries(tmp_path):
    path = tmp_path / "many.h5"
    n = 2500  # > 2 buffered chunks of 1024 rows
    with FileWriter(path, layout="FLAT") as w:
        for i in range(n):
            w.write(i, (T0 + i, 0), {"v": float(i), "s": str(i)})
            if i == 1500:
                w.flush()
    with h5py.File(path, "r") as f:
        assert f["v"][:].tolist() == [float(i) for i in range(n)]
        assert f["pulse_id"][:].tolist() == list(range(n))
        assert f["s"][2499].decode() == "2499"


def test_bad_values_names_and_settings(tmp_path):
    path = tmp_path / "bad.h5"
    with FileWriter(path, layout="FLAT") as w:
        with pytest.raises(FileOutputError, match=r"channel 'd': unsupported value type dict"):
            w.write(1, (T0, 0), {"ok": 1.0, "d": {"x": 1}})
        with pytest.raises(FileOutputError, match=r"channel 'r': list cannot be stored as an array"):
            w.write(2, (T0, 0), {"ok": 2.0, "r": [[1, 2], [3]]})
        with pytest.raises(FileOutputError, match=r"channel 'pulse_id': .*reserved in the FLAT layout"):
            w.write(3, (T0, 0), {"ok": 3.0, "pulse_id": 5})
        with pytest.raises(FileOutputError, match=r"channel 'a/b': invalid channel name"):
            w.write(4, (T0, 0), {"ok": 4.0, "a/b": 5})
        with pytest.raises(FileOutputError, match="message data must be a dict, got list"):
            w.write(5, (T0, 0), [1, 2])
    with h5py.File(path, "r") as f:
        assert f["ok"][:].tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(FileOutputError, match="already exists"):
        FileWriter(path)
    FileWriter(path, overwrite=True).close()
    with pytest.raises(FileOutputError, match="layout must be 'DEFAULT' or 'FLAT'"):
        FileWriter(tmp_path / "x.h5", layout="TREE")
    with pytest.raises(FileOutputError, match="records must be a positive integer"):
        FileWriter(tmp_path / "x.h5", records=0)
    with pytest.raises(FileOutputError, match="needs a 'file' name"):
        FileWriter("")
    w = FileWriter(tmp_path / "sub" / "dir" / "y.h5")  # parent folders are created
    w.close()
    with pytest.raises(FileOutputError, match="is closed"):
        w.write(1, (T0, 0), {"a": 1})


def test_complex_string_arrays_and_numpy_scalars(tmp_path):
    path = tmp_path / "types.h5"
    with FileWriter(path) as w:
        w.write(1, (T0, 0), {"c": np.complex64(1 + 2j), "s": np.array(["a", "bb"]), "i8": np.int8(-3)})
        w.write(2, (T0, 0), {"c": None, "s": ["c", "d"], "i8": np.int8(4)})
    with h5py.File(path, "r") as f:
        assert f["data/c/data"].dtype == np.complex64 and f["data/c/data"][0] == 1 + 2j
        assert np.isnan(f["data/c/data"][1].real)
        assert [[x.decode() for x in row] for row in f["data/s/data"][:]] == [["a", "bb"], ["c", "d"]]
        assert f["data/i8/data"].dtype == np.int8 and f["data/i8/data"][:].tolist() == [-3, 4]

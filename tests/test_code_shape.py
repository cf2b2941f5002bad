"""The code's shape is checked by the test command: ruff, the import contracts of pyproject.toml (the layers of
ARCHITECTURE.md, a ZeroMQ-free codec), and that importing the codec really does not load zmq."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.unit


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean():
    result = _run([str(BIN / "ruff"), "check", "cam_server", "tests", "benchmarks", "dev.py"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_are_kept():
    result = _run([str(BIN / "lint-imports"), "--no-cache"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_bsread_codec_loads_without_zmq():
    code = ("import sys; import cam_server.bsread as b; from cam_server.bsread import Decoder, Encoder; "
            "assert 'zmq' not in sys.modules, 'codec import pulled in zmq'; b.SUB; "
            "assert 'zmq' in sys.modules")
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr

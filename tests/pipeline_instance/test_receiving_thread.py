"""The instance's receiving thread gets the GIL quickly (issue 13): a loop busy in Python code must not hold up the
thread that drains the input socket, else frames wait in ZeroMQ's and the camera's queues instead of the door. The
effect is measured by ``benchmarks/bench_pipeline.py --servers`` (no timed assertions here)."""

from __future__ import annotations

import sys

import pytest

from cam_server.pipeline.instance import main


@pytest.mark.unit
def test_the_instance_runs_with_a_short_gil_switch_interval():
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)  # CPython's default
        main._configure_threads()  # noqa: SLF001 - what run_instance does first
        assert sys.getswitchinterval() == pytest.approx(main.SWITCH_INTERVAL_S)
        assert main.SWITCH_INTERVAL_S <= 0.001
    finally:
        sys.setswitchinterval(before)

"""Fixtures for EPICS tests: a loopback-only namespace, the EPICS client environment, simulated camera IOCs.

Reuse from another test module in this folder: request ``start_ioc`` (a factory) or ``camera_ioc`` (a default
1280x1024 uint16 IOC at 20 Hz); both include ``epics_client_env``. ``connected`` connects an EpicsCameraSource for a
config and closes it at teardown. A test that uses Channel Access without an IOC
requests ``epics_client_env`` itself. Every IOC started through them is stopped by PID at the end of the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from cam_server.camera.sources.epics import EpicsCameraSource
from tests.helpers.net import EPICS_ENV, require_loopback_netns
from tests.ioc.process import CameraIoc, unique_prefix


@pytest.fixture
def epics_client_env() -> None:
    """Skip/fail outside a loopback-only namespace; give this (client) process the EPICS environment.

    Every test that talks Channel Access requests it (directly or through ``start_ioc``), so it runs before the
    first CA context of the process exists.
    """
    require_loopback_netns()
    os.environ.update(EPICS_ENV)


@pytest.fixture
def start_ioc(epics_client_env: None, tmp_path: Path) -> Iterator[Callable[..., CameraIoc]]:
    """Factory: ``start_ioc(width=1280, height=1024, rate=20.0, dtype="uint16", ftvl=None, max_pixels=None,
    prefix=None) -> CameraIoc`` (already serving). All of them are stopped by PID at teardown."""
    started: list[CameraIoc] = []

    def start(prefix: str | None = None, **options) -> CameraIoc:
        ioc = CameraIoc(prefix=prefix or unique_prefix(), log_dir=tmp_path, **options)
        started.append(ioc)
        ioc.start()
        return ioc

    yield start
    for ioc in started:
        ioc.stop()


@pytest.fixture
def camera_ioc(start_ioc: Callable[..., CameraIoc]) -> CameraIoc:
    """A running 1280x1024 uint16 camera IOC at 20 Hz (USHORT waveform, which CA delivers as int16)."""
    return start_ioc()


@pytest.fixture
def connected() -> Iterator[Callable[[dict], EpicsCameraSource]]:
    """Connect an EpicsCameraSource for a config (its ``with`` block connects); closed at teardown."""
    with ExitStack() as sources:
        yield lambda config: sources.enter_context(EpicsCameraSource(config))

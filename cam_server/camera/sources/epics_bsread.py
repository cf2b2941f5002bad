"""bsread camera given by its EPICS PV prefix: a camera IOC that publishes its own bsread stream (processing spec 5).

A ``bsread`` camera whose ``source`` is not a stream address is the PV prefix ``P`` of such a camera. Connecting
checks it over Channel Access exactly as an ``epics`` camera (``P:INIT`` must read "INIT"; ``P:WIDTH`` /
``P:HEIGHT``), reads the camera's stream address once from the string PV ``P:BSREADCONFIG``, then relays that
stream (``bsread_mode``, PULL by default; ``connections`` / ``buffer_size`` as for any bsread camera). The image is
the channel ``<camera config name>:FPICTURE``: a 2-D image is used as it is, a 1-D one is reshaped to the monitored
(HEIGHT, WIDTH) (shorter ones dropped, longer ones truncated).

The two halves are the existing sources: :class:`~cam_server.camera.sources.epics.EpicsCameraSource` with the
``bsread`` PV names (no image PV) and :class:`~cam_server.camera.sources.bsread_source.BsreadCameraSource`. The
stream address is read at connect only: a camera that moves its stream is picked up on the next connect (a new
instance, or a change of a source key).
"""

from __future__ import annotations

import logging

from cam_server.bsread.address import is_stream_address
from cam_server.camera.config import CameraConfig
from cam_server.camera.sources.base import CameraOffline, RawFrame
from cam_server.camera.sources.bsread_source import BsreadCameraSource
from cam_server.camera.sources.epics import PV_NAMES, EpicsCameraSource
from cam_server.common.errors import InvalidConfig

log = logging.getLogger(__name__)

IMAGE_CHANNEL_SUFFIX = ":FPICTURE"


class EpicsBsreadCameraSource:
    """A :class:`~cam_server.camera.sources.base.FrameSource` for a ``bsread`` camera named by its PV prefix."""

    def __init__(self, config: CameraConfig) -> None:
        if not config.name:
            raise InvalidConfig("A bsread camera with a PV prefix as 'source' needs its 'name': the image is the "
                                f"stream channel <name>{IMAGE_CHANNEL_SUFFIX}")
        self.config = config
        self.control = EpicsCameraSource(config.to_dict())  # source_type bsread: INIT, WIDTH, HEIGHT, BSREADCONFIG
        self.prefix = self.control.prefix
        self.image_channel = f"{config.name}{IMAGE_CHANNEL_SUFFIX}"
        self.stream: BsreadCameraSource | None = None
        self._interrupted = False

    @property
    def address_pv(self) -> str:
        return f"{self.prefix}:{PV_NAMES['bsread'].stream_address}"

    @property
    def dropped(self) -> int:
        """Stream messages without a usable image (see BsreadCameraSource.dropped), for the camera's statistics."""
        return self.stream.dropped if self.stream is not None else 0

    @property
    def restarts(self) -> int:
        """Restarts of the stream's pulse ids (see BsreadCameraSource.restarts)."""
        return self.stream.restarts if self.stream is not None else 0

    def health(self) -> tuple[bool, int]:
        """(connected, reconnects): Channel Access and the stream both up; reconnections of either."""
        ca_connected, ca_reconnects = self.control.health()
        stream_connected, stream_reconnects = self.stream.health() if self.stream is not None else (False, 0)
        return ca_connected and stream_connected, ca_reconnects + stream_reconnects

    @property
    def status(self) -> str:
        """The Channel Access side's status, and the stream relayed."""
        stream = f"; stream {self.stream.address}, channel {self.image_channel}" if self.stream is not None else ""
        return self.control.status + stream

    def connect(self) -> None:
        """Check the camera over Channel Access, read its stream address and connect to the stream.

        Raises :class:`CameraOffline` (offline, not initialised, no stream address in ``P:BSREADCONFIG``).
        """
        self.close()
        self.control.connect()
        try:
            address = self._stream_address()
            stream = BsreadCameraSource(self.config, address=address, image_channel=self.image_channel,
                                        flat_geometry=self.control.geometry)
            stream.connect()
        except Exception:
            self.control.close()
            raise
        self.stream = stream
        if self._interrupted:
            stream.interrupt()
        log.info("Camera with prefix %s: relaying channel %s of its bsread stream %s", self.prefix,
                 self.image_channel, address)

    def check_online(self) -> None:
        """The Channel Access half of :meth:`connect` (online PV, geometry, a valid stream address), then release.

        The stream itself is not connected: a PULL connection would take messages from the camera's real clients.
        Raises :class:`CameraOffline` saying why.
        """
        self.control.check_online()
        self._stream_address()

    def geometry(self) -> tuple[int, int]:
        """Raw (width, height) as ``P:WIDTH`` / ``P:HEIGHT`` report it (monitored)."""
        return self.control.geometry()

    def read(self, timeout: float) -> RawFrame | None:
        stream = self.stream
        return stream.read(timeout) if stream is not None else None

    def interrupt(self) -> None:
        """From any thread: a waiting :meth:`read` returns None now, and every later one too."""
        self._interrupted = True
        self.control.interrupt()
        if self.stream is not None:
            self.stream.interrupt()

    def close(self) -> None:
        """Disconnect from the stream and release the channels; safe to call twice."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self.control.close()

    def __enter__(self) -> EpicsBsreadCameraSource:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _stream_address(self) -> str:
        value = (self.control.stream_address or "").strip()
        if not value:
            error = f"Camera with prefix {self.prefix} has no bsread stream address: {self.address_pv} is empty"
        elif not is_stream_address(value):
            error = (f"Camera with prefix {self.prefix} has no bsread stream address: {self.address_pv} reads "
                     f"{value!r}, not an address like tcp://host:port")
        else:
            return value
        self.control.last_error = error
        raise CameraOffline(error)

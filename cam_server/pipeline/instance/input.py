"""The instance's input: a bsread connection to the camera (or any) stream, read by a thread of its own.

**Receiving thread.** A live pipeline must work on recent frames, not on a backlog: were frames left in ZeroMQ's and
the kernel's buffers while a slow function works (the camera's send queue, the socket buffers, our receive queue),
the output would fall further behind with every frame, silently. So a thread keeps the socket drained and hands the
frames to the loop through :class:`InputQueue`, which holds at most ``input_queue_size`` of them: a SUB input (a live
stream) drops the oldest when it is full and counts it (``dropped_input``); a PULL input (a PUSH sender that shares
work out, e.g. a fanout, or a writer's feed) holds the sender back instead, nothing is dropped here. The loop's thread
decodes a frame when it takes it, so a dropped frame costs no decoding.

**Catching up.** A full queue alone would keep a pipeline slower than its camera ``input_queue_size`` frames behind
for ever (8 frames of a 50 ms function: 400 ms). A SUB input that has had frames waiting at every take for
``input_catch_up_after`` seconds (0: never) without its backlog shrinking over that time is behind for good, not
riding out a burst: from then on each take jumps to the newest frame, the skipped ones counted in ``dropped_input``,
until a take finds nothing more waiting. A burst the pipeline works off (its backlog shrinks: a stall, a slow frame)
is processed in order, frame by frame, however long that takes.

**Timeouts.** ``camera_timeout`` (camera input; None or <= 0 disables it): when no message arrived for that long,
the stream address is asked again from the camera server (a restarted camera gets a new port) and the socket
reconnected. ``stream_timeout`` (plain ``input_stream`` input) does the same for a stream that is not a camera's:
the socket is reconnected to the same address. With ``abort_on_timeout`` either timeout ends the instance instead.

**Camera server outage.** When the camera server cannot give the stream (unreachable, restarting, or it cannot
stream the camera), the input asks again with a backoff (:data:`RETRY_FIRST_S` doubling up to :data:`RETRY_MAX_S`)
for as long as it takes; the statistics say ``state: "waiting for camera server"`` and ``waiting_since``. The instance
ends (:class:`SourceUnavailable`, exit code 1) only when ``camera_server_timeout`` is set and has passed.

**State** (statistic ``state``, names in :data:`~cam_server.common.process.INSTANCE_STATES`): ``starting`` until the
first frame, ``streaming`` while frames arrive, ``waiting for source`` after a receive timeout (about 1 s without a
frame), ``reconnecting`` from a timeout's reconnection until the next frame, ``waiting for camera server`` (above);
``reconnects`` counts the connections made again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import zmq

from cam_server.bsread import Decoder, Message, Source, Wakeup
from cam_server.bsread.endpoints import SUB, mode_name, receive_mode
from cam_server.common.errors import SourceUnavailable
from cam_server.common.process import INPUT_PATHS, INSTANCE_STATES, STATE_CODES, RateMeter, SharedStats
from cam_server.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)

RECEIVE_TIMEOUT_MS = 1000
INPUT_QUEUE_SIZE = 20  # messages: the receive queue (RCVHWM) of bound inputs (fanin)
# A SUB input's socket queue (RCVHWM), in messages: slack only, the receiving thread drains it at once. A few frames:
# were it deep, a stalled thread would let frames (11 MB each at 2560x2160) pile up there, old and uncounted, instead
# of being dropped at the door (the input queue, counted). Small messages are not lost by it: beyond it they wait in
# the kernel's socket buffers (MBs), and TCP holds the sender back.
SUB_SOCKET_QUEUE = 4
REQUEST_TIMEOUT_S = 10.0
INPUT_KEYS = ("camera_name", "input_stream", "input_mode")
RETRY_FIRST_S = 0.5  # first retry of an unreachable camera server; doubled per failure up to RETRY_MAX_S
RETRY_MAX_S = 5.0
JOIN_TIMEOUT_S = 1.0  # a thread in a camera server request (up to REQUEST_TIMEOUT_S) is left to the exit
RATE_STALE_S = 2.0  # the received rate reads 0 after this long without a frame

STARTING, STREAMING, WAITING_FOR_SOURCE, RECONNECTING, WAITING_FOR_CAMERA_SERVER = (
    STATE_CODES[name] for name in ("starting", "streaming", "waiting for source", "reconnecting",
                                   "waiting for camera server"))

_WAKE = object()  # put into the queue to end the loop's wait at once (a stop, an error of the thread)


def request_camera_stream(cam_server_url: str, camera_name: str) -> tuple[str, str | None]:
    """Ask the camera server to start (or keep) the camera stream; returns its address and the reservation that
    holds the camera until :func:`release_camera_stream` (None from a server without reservations)."""
    url = f"{cam_server_url.rstrip('/')}/api/v1/cam/{camera_name}"
    try:
        response = requests.get(url, params={"reserve": "true"}, timeout=REQUEST_TIMEOUT_S)
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SourceUnavailable(f"Cannot reach camera server at {cam_server_url} for camera {camera_name!r}: "
                                f"{exc}") from exc
    if body.get("state") != "ok" or not body.get("stream"):
        raise SourceUnavailable(f"Camera server cannot stream camera {camera_name!r}: "
                                f"{body.get('status', response.status_code)}")
    reservation = body.get("reservation")
    return str(body["stream"]), None if reservation is None else str(reservation)


def release_camera_stream(cam_server_url: str, camera_name: str, reservation: str) -> None:
    """Release a reservation of :func:`request_camera_stream` (we are a client now), in the background: a failure
    only means the camera server lets it expire (30 s)."""
    url = f"{cam_server_url.rstrip('/')}/api/v1/cam/{camera_name}/reservation/{reservation}"

    def release() -> None:
        try:
            requests.delete(url, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            log.info("could not release reservation %s of camera %s: %s", reservation, camera_name, exc)

    threading.Thread(target=release, name="release-reservation", daemon=True).start()


class InputQueue:
    """Received messages (raw frames) between the receiving thread (:meth:`put`) and the loop (:meth:`get`).

    At most ``size`` messages: with ``drop_oldest`` (SUB) a put into a full queue drops the oldest (``dropped``),
    else (PULL) it waits for room, which holds the sender back. With ``drop_oldest`` and ``catch_up_after`` > 0, a
    take after frames were left waiting at every take for that long, their number not shrinking, returns the newest
    frame (``skipped``, see the module docstring). One producer, one consumer; ``size``, ``drop_oldest`` and
    ``catch_up_after`` may change between puts (a live config change).
    """

    def __init__(self, size: int, drop_oldest: bool, catch_up_after: float = 0.0) -> None:
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._room = threading.Condition()  # waited on only by a PULL producer
        self.size = size
        self.drop_oldest = drop_oldest
        self.catch_up_after = catch_up_after
        self.dropped = 0  # written by the producer only
        self.skipped = 0  # written by the consumer only
        self._behind_since: float | None = None  # monotonic time of the first take of a run that left frames waiting
        self._behind_backlog = 0  # frames left waiting at that take (0 once jumping: behind for good)

    def __len__(self) -> int:
        return self._items.qsize()

    def put(self, item: Any, stopped: Callable[[], bool]) -> bool:
        """Queue ``item``; False when ``stopped()`` became true while waiting for room (PULL)."""
        items = self._items
        if not self.drop_oldest:
            with self._room:
                while items.qsize() >= self.size:
                    if stopped():
                        return False
                    self._room.wait(0.1)
            items.put(item)
            return True
        items.put(item)
        while items.qsize() > self.size:
            try:
                oldest = items.get_nowait()
            except queue.Empty:  # the loop took one meanwhile
                break
            if oldest is _WAKE:  # never drop a wake-up: the loop must see it
                items.put(oldest)
                break
            self.dropped += 1
        return True

    def get(self, timeout: float) -> Any:
        """The oldest item (the newest when behind for good, see the class), or None when none came within
        ``timeout`` seconds."""
        items = self._items
        try:
            item = items.get(timeout=timeout)
        except queue.Empty:
            self._behind_since = None  # nothing came: not behind
            return None
        if not self.drop_oldest:
            with self._room:
                self._room.notify()
            return item
        if item is _WAKE:
            return item
        waiting = items.qsize()
        if not waiting:  # caught up
            self._behind_since = None
            return item
        now = time.monotonic()
        if self._behind_since is None or self.catch_up_after <= 0:
            self._behind_since, self._behind_backlog = now, waiting
        elif now - self._behind_since >= self.catch_up_after:
            if waiting < self._behind_backlog:  # working its backlog off: another interval, in order
                self._behind_since, self._behind_backlog = now, waiting
                return item
            self._behind_backlog = 0  # behind for good: the newest at every take until one finds nothing more
            while True:
                try:
                    newer = items.get_nowait()
                except queue.Empty:
                    break
                if newer is _WAKE:  # never skip a wake-up: the loop sees it at its next take
                    items.put(newer)
                    break
                self.skipped += 1
                item = newer
        return item

    @property
    def dropped_total(self) -> int:
        """Frames the queue dropped: the oldest of a full queue and those skipped to catch up (consumer's thread)."""
        return self.dropped + self.skipped

    def wake(self) -> None:
        """End the consumer's current (or next) wait at once."""
        self._items.put(_WAKE)


class StreamInput:
    """Receives messages from one bsread stream (see the module docstring); :meth:`receive` returns the next one,
    or None after about a receive timeout without one."""

    def __init__(self, address: str | None, config: PipelineConfig, cam_server_url: str | None = None,
                 receive_timeout_ms: int = RECEIVE_TIMEOUT_MS, context: zmq.Context | None = None) -> None:
        self._config = config
        self._context = context
        self._cam_server_url = cam_server_url
        self._receive_timeout_ms = receive_timeout_ms
        self.address = address
        self.reconnects = 0
        self._source: Source | None = None  # owned by the receiving thread
        self._wakeup = Wakeup()
        self._queue = InputQueue(config.input_queue_size, drop_oldest=self._mode(config) == SUB,
                                 catch_up_after=config.input_catch_up_after)
        self._decoder = Decoder()  # used by the loop's thread only
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None  # raised by the thread, re-raised in the loop's receive()
        self._input_changed = False  # set by update_config, taken by the thread
        self._connected_once = False
        self._last_message = time.monotonic()
        self._stats: SharedStats | None = None
        self._rate_in: RateMeter | None = None
        self._report: Callable[[str], None] | None = None
        self._state = STARTING
        self._wait_started: float | None = None  # monotonic start of a camera server outage
        self._retry_at = 0.0
        self._retry_delay = RETRY_FIRST_S
        self._reservation: tuple[str, str] | None = None  # (camera, id) of our stream request, until a frame came
        self._last_pulse_id = -1  # of the last message decoded, and the input queue's drops then (input_gaps)
        self._dropped_then = 0

    def attach(self, stats: SharedStats, report: Callable[[str], None]) -> None:
        """Count received frames (``frames_in``, ``rate_in``: every frame received, also those dropped later), show
        the input's state in ``stats`` and report why it waits through ``report`` (the instance's errors). Call
        before :meth:`connect`."""
        self._rate_in = RateMeter(stats, "rate_in", throughput_field=None)
        self._report = report
        self._stats = stats  # last: the receiving thread counts once this is set
        stats.set("state", self._state)
        stats.set("reconnects", self.reconnects)
        stats.set("input_path", INPUT_PATHS.index("bsread"))  # shm_input.SharedMemoryInput: shared memory

    def interrupt(self) -> None:
        """From any thread: make a blocked :meth:`receive` (and every later one) return None at once, and end the
        receiving thread."""
        self._wakeup.set()
        self._queue.wake()

    # -- config ---------------------------------------------------------------------------------------

    @staticmethod
    def _mode(config: PipelineConfig) -> int:
        return receive_mode(config.input_mode, "input_mode")

    def update_config(self, config: PipelineConfig) -> None:
        """Take a new config; a changed input (camera_name, input_stream, input_mode) reconnects, asking the camera
        server for the new camera's stream; ``input_queue_size`` and ``input_catch_up_after`` apply at once."""
        changed = any(getattr(config, key) != getattr(self._config, key) for key in INPUT_KEYS)
        self._config = config
        self._queue.size = config.input_queue_size
        self._queue.catch_up_after = config.input_catch_up_after
        if changed:
            log.info("input changed; reconnecting")
            self._input_changed = True

    @property
    def camera_name(self) -> str | None:
        """The camera to re-request on timeout (None when reading a plain stream via input_stream)."""
        if self._config.input_stream:
            return None
        return self._config.camera_name

    @property
    def timeout(self) -> float | None:
        """``camera_timeout`` for a camera input, ``stream_timeout`` for a plain stream; None when disabled."""
        timeout = self._config.camera_timeout if self.camera_name else self._config.stream_timeout
        return timeout if timeout is not None and timeout > 0 else None

    @property
    def dropped_backlog(self) -> int:
        """Frames the input queue dropped: the oldest of a full queue, those skipped to catch up (SUB input only)."""
        return self._queue.dropped_total

    @property
    def queued(self) -> int:
        """Frames received and waiting for the loop."""
        return len(self._queue)

    @property
    def state(self) -> str:
        """The input's state by name (see the module docstring)."""
        return INSTANCE_STATES[self._state]

    # -- lifecycle (loop's thread) --------------------------------------------------------------------

    def connect(self) -> None:
        """Start the receiving thread (it connects, and reconnects when it must)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="input", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the receiving thread (it closes the socket)."""
        self._wakeup.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("input thread did not end; leaving its socket to process exit")

    # -- receiving (loop's thread) --------------------------------------------------------------------

    def receive(self) -> Message | None:
        """Next message, or None after about a receive timeout (or at once after :meth:`interrupt`).

        Raises what ended the receiving thread: :class:`SourceUnavailable` (``abort_on_timeout``, the
        ``camera_server_timeout`` passed, no input), or an unexpected error.
        """
        if self._error is not None:
            raise self._error
        if self._wakeup.is_set():
            return None
        if self._thread is None:
            self.connect()
        frames = self._queue.get(self._receive_timeout_ms / 1000)
        if frames is None or frames is _WAKE:
            if self._error is not None:
                raise self._error
            return None
        message = self._decoder.decode(frames)
        if message is not None:
            self._count_gap(message.data.pulse_id)
        return message

    def _count_gap(self, pulse_id: int) -> None:
        """``input_gaps``: pulse ids skipped since the last message beyond those our input queue dropped (a
        sender's full queue drops silently in ZeroMQ: the receiver is where it shows). A jump back starts afresh."""
        dropped = self._queue.dropped_total
        last, self._last_pulse_id = self._last_pulse_id, pulse_id
        missed = pulse_id - last - 1 - (dropped - self._dropped_then)
        self._dropped_then = dropped
        if last >= 0 and missed > 0 and self._stats is not None:
            self._stats.add("input_gaps", missed)

    # -- the receiving thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._receive_loop()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which ends the instance with it
            self._error = exc
            self._queue.wake()
        finally:
            self._disconnect()

    def _receive_loop(self) -> None:
        stopped = self._wakeup.is_set
        while not stopped():
            if self._input_changed:
                self._input_changed = False
                self._disconnect()
                self.address = None
            if self._source is None and not self._open():
                if self._rate_in is not None:
                    self._rate_in.expire(RATE_STALE_S)
                continue  # waiting for the camera server (the wait is done)
            source = self._source
            assert source is not None
            frames = source.receive_frames()
            if frames is not None:
                self._last_message = time.monotonic()
                if self._reservation is not None:  # a client of the camera now: its hold is ours no more to keep
                    release_camera_stream(self._cam_server_url or "", *self._reservation)
                    self._reservation = None
                if self._state != STREAMING:
                    self._set_state(STREAMING)
                if self._stats is not None:
                    self._stats.add("frames_in")
                    self._rate_in.tick()  # type: ignore[union-attr]
                self._queue.put(frames, stopped)
            elif not source.interrupted:
                if self._rate_in is not None:
                    self._rate_in.expire(RATE_STALE_S)  # the rate only updates on frames
                self._timed_out()

    def _timed_out(self) -> None:
        """A receive timed out: show it, and after the camera / stream timeout reconnect (or abort)."""
        now = time.monotonic()
        if self._state not in (WAITING_FOR_SOURCE, RECONNECTING):
            self._set_state(WAITING_FOR_SOURCE)
        timeout = self.timeout
        if timeout is None or now - self._last_message <= timeout:
            return
        if self._config.abort_on_timeout:
            raise SourceUnavailable(f"No message from {self.address} for {now - self._last_message:.1f} s "
                                    "(abort_on_timeout)")
        log.warning("no message from %s for %.1f s; reconnecting", self.address, now - self._last_message)
        self._disconnect()
        if self.camera_name and self._cam_server_url:
            self.address = None  # a restarted camera may stream elsewhere: ask the camera server again
        self._set_state(RECONNECTING)
        self._last_message = now

    def _open(self) -> bool:
        """Connect (asking the camera server for the address when needed); False while it cannot give it."""
        if self.address is None:
            address = self._resolve_address()
            if address is None:
                return False
            self.address = address
        config = self._config
        mode = self._mode(config)
        self._queue.drop_oldest = mode == SUB
        self._queue.size = config.input_queue_size
        # A SUB socket keeps a little slack (the thread drains it at once, drops are counted in the queue); a PULL
        # socket's queue adds to the hold-back, so it stays as small as the input queue.
        hwm = SUB_SOCKET_QUEUE if mode == SUB else config.input_queue_size
        self._source = Source(address=self.address, mode=mode, receive_timeout=self._receive_timeout_ms,
                              queue_size=hwm, context=self._context, wakeup=self._wakeup).connect()
        self._last_message = time.monotonic()
        if self._connected_once:
            self.reconnects += 1
            if self._stats is not None:
                self._stats.set("reconnects", self.reconnects)
            self._set_state(RECONNECTING)
        self._connected_once = True
        log.info("connected to %s (%s)", self.address, mode_name(mode))
        return True

    def _resolve_address(self) -> str | None:
        """The stream to read: ``input_stream``, or the camera's stream from the camera server (None while the camera
        server cannot give it: then this waited until the next try is due, or a receive timeout)."""
        stream = self._config.input_stream
        if stream:
            return stream
        name = self.camera_name
        if not name or not self._cam_server_url:
            raise SourceUnavailable("Pipeline has no input: set camera_name or input_stream")
        now = time.monotonic()
        if now < self._retry_at:
            self._wakeup.wait(min(self._retry_at - now, self._receive_timeout_ms / 1000))
            return None
        try:
            address, reservation = self._request_stream(self._cam_server_url, name)
        except SourceUnavailable as exc:
            self._camera_server_failed(exc)
            return None
        self._reservation = None if reservation is None else (name, reservation)
        if self._wait_started is not None:
            log.info("camera server gave the stream of %s again after %.1f s", name,
                     time.monotonic() - self._wait_started)
            self._wait_started = None
            self._retry_at, self._retry_delay = 0.0, RETRY_FIRST_S
            if self._stats is not None:
                self._stats.set("waiting_since", 0.0)
        return address

    def _request_stream(self, cam_server_url: str, camera_name: str) -> tuple[str, str | None]:
        """The address to connect to for the camera (a subclass may negotiate another path than the stream) and
        the reservation that holds the camera until our first frame (see :func:`request_camera_stream`)."""
        return request_camera_stream(cam_server_url, camera_name)

    def _camera_server_failed(self, error: SourceUnavailable) -> None:
        """Wait for the camera server (backoff), or give up once ``camera_server_timeout`` has passed."""
        now = time.monotonic()
        limit = self._config.camera_server_timeout
        if self._wait_started is None:
            self._wait_started = now
            self._retry_delay = RETRY_FIRST_S
            if limit is None or limit > 0:  # reported before the state shows: info never has one without the other
                message = (f"{error}; waiting for the camera server (retrying, "
                           + ("no time limit" if limit is None else f"camera_server_timeout {limit:g} s") + ")")
                log.warning("%s", message)
                if self._report is not None:
                    self._report(message)
            self._set_state(WAITING_FOR_CAMERA_SERVER)
            if self._stats is not None:
                self._stats.set("waiting_since", time.time())
        else:
            self._retry_delay = min(2 * self._retry_delay, RETRY_MAX_S)
        waited = now - self._wait_started
        if limit is not None and waited >= limit:
            raise SourceUnavailable(f"{error} (gave up after {waited:.1f} s: camera_server_timeout {limit:g} s)")
        self._retry_at = now + self._retry_delay
        if limit is not None:
            self._retry_at = min(self._retry_at, self._wait_started + limit)  # the last try at the limit

    def _set_state(self, state: int) -> None:
        if self._wakeup.is_set():  # stopping: the loop shows that
            return
        self._state = state
        if self._stats is not None:
            self._stats.set("state", state)

    def _disconnect(self) -> None:
        if self._source is not None:
            self._source.disconnect()
            self._source = None

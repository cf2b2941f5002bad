"""A simulated EPICS camera IOC (pythonSoftIOC) serving the PVs the camera server reads.

Run as ``python tests/ioc/camera_ioc.py --prefix P --width 1280 --height 1024 --rate 20 --dtype uint16``.

Records (``P`` = prefix) with ``--pv-names epics`` (the default):

* ``P:INIT``      stringin, "INIT" while the camera is online (the ``offline`` / ``status`` commands change it)
* ``P:WIDTH``, ``P:HEIGHT``  longin, current raw geometry
* ``P:FPICTURE``  waveform, NELM = ``--max-pixels`` (default width*height), FTVL = ``--ftvl`` (default: the natural
  type of ``--dtype``; SHORT or LONG for a uint16 camera exercise the client's conversions)
* ``P:FRAME``     longin, counter of the last published frame
* ``P:SIM_CMD``   stringout control, write one of:
  ``resize W H`` | ``offline`` | ``online`` | ``status TEXT`` | ``extra N`` (publish N more/fewer elements than
  W*H, for the truncate / drop rules) | ``pause`` | ``resume``

With ``--pv-names area_detector`` the same camera serves the names of a standard areaDetector IOC instead (see
:data:`PV_NAMES`): ``P:cam1:Acquire`` (bi Done/Acquire: 1 while online, ``offline`` / ``status`` set 0),
``P:image1:ArraySize0_RBV`` / ``P:image1:ArraySize1_RBV`` (width / height), ``P:image1:ArrayData`` (the waveform),
``P:cam1:ArrayCounter_RBV`` (the frame counter, posted just before the image), ``P:cam1:ColorMode`` (0, Mono) and
``P:cam1:DataType`` (the areaDetector code of ``--dtype``), left out with ``--no-unused-pvs``; ``P:SIM_CMD`` as above.

With ``--pv-names bsread`` it is a camera that publishes its own bsread stream: ``P:INIT``, ``P:WIDTH``,
``P:HEIGHT``, ``P:FRAME`` and ``P:SIM_CMD`` as for ``epics``, no ``P:FPICTURE``; the frames go out as the channel
``--bsread-channel`` of a bsread PUSH stream bound on ``tcp://127.0.0.1:--bsread-port`` (pulse id = frame counter;
2-D, or 1-D with ``--bsread-flat``), and ``P:BSREADCONFIG`` (a char waveform, long string) holds that address.
The extra command ``bsreadconfig [TEXT]`` sets ``P:BSREADCONFIG`` (empty without TEXT).

Image pattern (see :func:`frame_pattern`): pixel [r, c] = fold(r*16 + c*32), pixel [0, 0] = fold(frame counter),
so a client can check orientation, values above 32767 for uint16, and frame continuity. While INIT is not "INIT"
or the IOC is paused, no frames are published. The IOC logs "camera IOC ready" once it serves its PVs and stops
cleanly on SIGTERM/SIGINT. This module imports softioc only in :func:`main`, so tests can import the pattern
helpers without it.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time

import numpy as np

log = logging.getLogger("camera_ioc")

FTVL_DTYPES: dict[str, np.dtype] = {
    "CHAR": np.dtype("int8"), "UCHAR": np.dtype("uint8"), "SHORT": np.dtype("int16"),
    "USHORT": np.dtype("uint16"), "LONG": np.dtype("int32"), "ULONG": np.dtype("uint32"),
    "FLOAT": np.dtype("float32"), "DOUBLE": np.dtype("float64"),
}
NATURAL_FTVL = {dt.name: ftvl for ftvl, dt in FTVL_DTYPES.items()}
READY_LINE = "camera IOC ready"
PASSIVE = "Passive"  # records the camera writes are processed by SimulatedCamera.post, not queued (see there)
# Record suffix (after "P:") of each role, per --pv-names (written from processing spec 5, not from cam_server).
PV_NAMES: dict[str, dict[str, str]] = {
    "epics": {"online": "INIT", "width": "WIDTH", "height": "HEIGHT", "image": "FPICTURE", "counter": "FRAME"},
    "area_detector": {"online": "cam1:Acquire", "width": "image1:ArraySize0_RBV",
                      "height": "image1:ArraySize1_RBV", "image": "image1:ArrayData",
                      "counter": "cam1:ArrayCounter_RBV"},
    "bsread": {"online": "INIT", "width": "WIDTH", "height": "HEIGHT", "counter": "FRAME",
               "stream_address": "BSREADCONFIG"},
}
AD_DATA_TYPES = {"int8": 0, "uint8": 1, "int16": 2, "uint16": 3, "int32": 4, "uint32": 5, "float32": 6,
                 "float64": 7}


def fold(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Fold non-negative int64 values into ``dtype``'s range without overflow (floats: modulo 65536)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (values % 65536).astype(dtype)
    bits = dtype.itemsize * 8
    folded = values % (1 << bits)
    if dtype.kind == "i":
        folded = folded - (1 << (bits - 1))
    return folded.astype(dtype)


def base_pattern(width: int, height: int, dtype: np.dtype | str) -> np.ndarray:
    """The (height, width) gradient every frame shows: fold(r*16 + c*32)."""
    rows = np.arange(height, dtype=np.int64)[:, None] * 16
    cols = np.arange(width, dtype=np.int64)[None, :] * 32
    return fold(rows + cols, np.dtype(dtype))


def frame_pattern(width: int, height: int, dtype: np.dtype | str, counter: int,
                  base: np.ndarray | None = None) -> np.ndarray:
    """Frame number ``counter``: the gradient with fold(counter) in pixel [0, 0]. Always a fresh array."""
    image = (base if base is not None else base_pattern(width, height, dtype)).copy()
    image[0, 0] = fold(np.array([counter], dtype=np.int64), image.dtype)[0]
    return image


def counter_pixel(counter: int, dtype: np.dtype | str):
    """The value pixel [0, 0] holds in frame ``counter``."""
    return fold(np.array([counter], dtype=np.int64), np.dtype(dtype))[0]


def encode_for_waveform(image: np.ndarray, ftvl: str) -> np.ndarray:
    """1-D waveform payload: same-size integers of other signedness carry the bits (view), else a lossless cast."""
    target = FTVL_DTYPES[ftvl]
    flat = image.reshape(-1)
    if flat.dtype == target:
        return flat
    if flat.dtype.kind in "iu" and target.kind in "iu" and flat.dtype.itemsize == target.itemsize:
        return flat.view(target)
    return flat.astype(target)


def check_lossless(dtype: np.dtype, ftvl: str) -> None:
    target = FTVL_DTYPES[ftvl]
    same_size_int = dtype.kind in "iu" and target.kind in "iu" and dtype.itemsize == target.itemsize
    if not (same_size_int or np.can_cast(dtype, target, casting="safe")):
        raise SystemExit(f"--ftvl {ftvl} cannot carry --dtype {dtype.name} pixels without loss")


class SimulatedCamera:
    """Publishes frames at a fixed rate and applies SIM_CMD commands; all state guarded by one lock."""

    def __init__(self, records: dict, args: argparse.Namespace, sender=None) -> None:
        self.records = records
        self.sender = sender  # bsread: a cam_server.bsread.Sender, open
        self.bsread_channel = args.bsread_channel
        self.bsread_flat = args.bsread_flat
        self.dtype = np.dtype(args.dtype)
        self.ftvl = args.ftvl
        self.pv_names = args.pv_names
        self.max_pixels = args.max_pixels
        self.period = 1.0 / args.rate
        self.width, self.height = args.width, args.height
        self.base = base_pattern(self.width, self.height, self.dtype)
        self.extra = 0
        self.online = True
        self.paused = False
        self.counter = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def post(self, role: str, value) -> None:
        """Set a record and process it here and now: it posts this value once, in the order of the calls.

        The records are Passive for this. pythonSoftIOC's default for In records (I/O Intr) stores the value and
        queues a processing; two sets before the scan thread runs (a loaded machine) processed the record twice with
        the newest value, posting one frame twice with two timestamps and losing the one before (measured: 7 of 40
        pairs). A camera posts each frame once.
        """
        record = self.records[role]
        record.set(value)
        record.set_field("PROC", 1)

    def command(self, text: str) -> None:
        """Apply one SIM_CMD line; a bad command is logged and ignored, never fatal."""
        words = text.split()
        try:
            with self.lock:
                self._apply(words)
            log.info("command %r applied", text)
        except (ValueError, IndexError) as exc:
            log.error("bad command %r: %s", text, exc)

    def _apply(self, words: list[str]) -> None:
        verb = words[0] if words else ""
        if verb == "resize":
            width, height = int(words[1]), int(words[2])
            if width < 1 or height < 1 or width * height + max(self.extra, 0) > self.max_pixels:
                raise ValueError(f"{width}x{height} does not fit NELM {self.max_pixels}")
            self.width, self.height = width, height
            self.base = base_pattern(width, height, self.dtype)
            self.post("width", width)
            self.post("height", height)
        elif verb in ("offline", "online", "status"):
            status = {"offline": "OFFLINE", "online": "INIT"}.get(verb, " ".join(words[1:]))
            self.online = status == "INIT"
            self.post("online", int(self.online) if self.pv_names == "area_detector" else status)
        elif verb == "bsreadconfig" and self.pv_names == "bsread":
            self.post("stream_address", " ".join(words[1:]))
        elif verb == "extra":
            extra = int(words[1])
            if self.width * self.height + extra > self.max_pixels or self.width * self.height + extra < 1:
                raise ValueError(f"extra {extra} does not fit NELM {self.max_pixels}")
            self.extra = extra
        elif verb == "pause":
            self.paused = True
        elif verb == "resume":
            self.paused = False
        else:
            raise ValueError(f"unknown command {verb!r}")

    def publish_one(self) -> None:
        with self.lock:
            if not self.online or self.paused:
                return
            image = frame_pattern(self.width, self.height, self.dtype, self.counter, self.base)
            if self.sender is not None and not self.bsread_flat:
                self.sender.send({self.bsread_channel: image}, pulse_id=self.counter)  # dropped while no client
                self.post("counter", self.counter)
                self.counter += 1
                return
            payload = encode_for_waveform(image, self.ftvl)
            if self.extra > 0:
                payload = np.concatenate([payload, np.arange(self.extra, dtype=payload.dtype)])
            elif self.extra < 0:
                payload = payload[: payload.size + self.extra].copy()
            if self.pv_names == "area_detector":  # an areaDetector driver counts the array before plugins see it
                self.post("counter", self.counter)
            if self.sender is not None:
                self.sender.send({self.bsread_channel: payload}, pulse_id=self.counter)
            else:
                self.post("image", payload)
            if self.pv_names != "area_detector":
                self.post("counter", self.counter)
            self.counter += 1

    def run(self) -> None:
        next_time = time.monotonic()
        while not self.stop.is_set():
            self.publish_one()
            next_time += self.period
            delay = next_time - time.monotonic()
            if delay < 0:  # fell behind: do not try to catch up with a burst
                next_time = time.monotonic()
                delay = 0
            self.stop.wait(delay)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--dtype", default="uint16", choices=sorted(NATURAL_FTVL))
    parser.add_argument("--ftvl", choices=sorted(FTVL_DTYPES), help="waveform element type (default: natural)")
    parser.add_argument("--max-pixels", type=int, help="waveform NELM (default width*height)")
    parser.add_argument("--pv-names", choices=sorted(PV_NAMES), default="epics", help="which IOC flavour to serve")
    parser.add_argument("--no-unused-pvs", action="store_true",
                        help="area_detector: leave out cam1:ColorMode and cam1:DataType")
    parser.add_argument("--bsread-port", type=int, help="bsread: the TCP port the stream is bound on (127.0.0.1)")
    parser.add_argument("--bsread-channel", help="bsread: the image channel name, e.g. NAME:FPICTURE")
    parser.add_argument("--bsread-flat", action="store_true", help="bsread: send the image 1-D (as a waveform)")
    args = parser.parse_args(argv)
    if args.pv_names == "bsread" and not (args.bsread_port and args.bsread_channel):
        parser.error("--pv-names bsread needs --bsread-port and --bsread-channel")
    args.ftvl = args.ftvl or NATURAL_FTVL[args.dtype]
    args.max_pixels = args.max_pixels or args.width * args.height
    if args.rate <= 0 or args.width < 1 or args.height < 1 or args.width * args.height > args.max_pixels:
        parser.error("need rate > 0, width, height >= 1 and width*height <= --max-pixels")
    check_lossless(np.dtype(args.dtype), args.ftvl)
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    from softioc import asyncio_dispatcher, builder, softioc

    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    builder.SetDeviceName(args.prefix)
    camera_holder: list[SimulatedCamera] = []
    names = PV_NAMES[args.pv_names]
    records = {
        "width": builder.longIn(names["width"], initial_value=args.width, SCAN=PASSIVE),
        "height": builder.longIn(names["height"], initial_value=args.height, SCAN=PASSIVE),
        "counter": builder.longIn(names["counter"], initial_value=0, SCAN=PASSIVE),
    }
    sender = None
    if args.pv_names == "bsread":
        from cam_server.bsread import PUSH, Sender

        sender = Sender(port=args.bsread_port, address="tcp://127.0.0.1", mode=PUSH, block=False, queue_size=4)
        records["stream_address"] = builder.longStringIn(names["stream_address"], length=256, SCAN=PASSIVE,
                                                         initial_value=f"tcp://127.0.0.1:{args.bsread_port}")
    else:
        records["image"] = builder.WaveformIn(names["image"], length=args.max_pixels, datatype=FTVL_DTYPES[args.ftvl],
                                              SCAN=PASSIVE)
    if args.pv_names != "area_detector":
        records["online"] = builder.stringIn(names["online"], initial_value="INIT", SCAN=PASSIVE)
    else:
        records["online"] = builder.boolIn(names["online"], "Done", "Acquire", initial_value=1, SCAN=PASSIVE)
        if not args.no_unused_pvs:
            builder.mbbIn("cam1:ColorMode", "Mono", "Bayer", "RGB1", initial_value=0)
            builder.longIn("cam1:DataType", initial_value=AD_DATA_TYPES[args.dtype])
    builder.stringOut("SIM_CMD", initial_value="", always_update=True, blocking=True,
                      on_update=lambda text: camera_holder[0].command(text))
    builder.LoadDatabase()
    softioc.iocInit(dispatcher, enable_pva=False)

    camera = SimulatedCamera(records, args, sender.open() if sender is not None else None)
    camera_holder.append(camera)
    worker = threading.Thread(target=camera.run, name="frames", daemon=True)
    worker.start()
    log.info("%s: prefix %s (%s PV names), %dx%d %s as FTVL %s, NELM %d, %.1f Hz", READY_LINE, args.prefix,
             args.pv_names, args.width, args.height, args.dtype, args.ftvl, args.max_pixels, args.rate)
    try:
        softioc.non_interactive_ioc()  # waits for SIGTERM / SIGINT, then exits the process
    finally:
        camera.stop.set()
        if sender is not None:
            worker.join(2)
            sender.close()


if __name__ == "__main__":
    main()

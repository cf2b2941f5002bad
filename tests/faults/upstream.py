"""An external bsread upstream for fault tests, run as its own process (so a test can kill -9 it for real).

``python -m tests.faults.upstream --port P --pulse-id N [--rate HZ] [--mode push|pub] [--ready FILE]`` sends a
small camera-like image (channel ``image``, 32 x 24 uint16) with consecutive pulse ids from ``N`` until killed.
``--ready FILE``: once the first message was handed to ZeroMQ, ``FILE`` gets the wall-clock time of that moment
(the recovery of a reader is measured from it, not from the process start, which is slow on a loaded machine).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cam_server.bsread import PUB, PUSH, Sender

WIDTH, HEIGHT = 32, 24


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pulse-id", type=int, default=0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--mode", choices=("push", "pub"), default="push")
    parser.add_argument("--ready", default=None)
    args = parser.parse_args()
    push = args.mode == "push"
    sender = Sender(port=args.port, address="tcp://127.0.0.1", mode=PUSH if push else PUB, queue_size=10,
                    block=push, send_timeout=100 if push else None)
    sender.open()
    image = np.arange(WIDTH * HEIGHT, dtype=np.uint16).reshape(HEIGHT, WIDTH)
    pulse_id, period, next_time, ready = args.pulse_id, 1.0 / args.rate, time.monotonic(), args.ready
    while True:
        now = time.time()
        if sender.send({"image": image}, timestamp=now, pulse_id=pulse_id):
            pulse_id += 1
            if ready:
                tmp = f"{ready}.part"
                with open(tmp, "w") as f:
                    f.write(repr(now))
                os.replace(tmp, ready)
                ready = None
        next_time += period
        time.sleep(max(0.0, next_time - time.monotonic()))


if __name__ == "__main__":
    main()

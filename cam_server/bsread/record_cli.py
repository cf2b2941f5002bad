"""``cam-record ADDRESS FILE -n N [--mode sub|pull] [--timeout S]``: record a bsread stream to HDF5."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm

from cam_server.bsread import h5
from cam_server.bsread.endpoints import socket_mode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cam-record", description="Record a bsread stream into an HDF5 file "
                                     "(layout: see cam_server.bsread.h5).")
    parser.add_argument("address", help="stream address, e.g. tcp://host:9999 or ipc:///tmp/stream")
    parser.add_argument("file", help="output HDF5 file (overwritten)")
    parser.add_argument("-n", "--n-messages", type=int, required=True, help="number of messages to record")
    parser.add_argument("--mode", choices=("sub", "pull"), default="sub", help="SUB (default) or PULL socket")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop when no message arrives for this many seconds (default: wait forever)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n_messages <= 0:
        print("cam-record: -n must be > 0", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    timeout_ms = None if args.timeout is None else int(args.timeout * 1000)
    with tqdm(total=args.n_messages, unit="msg", desc="recording") as bar:
        written = h5.receive(source=args.address, file_name=args.file, mode=socket_mode(args.mode),
                             n_messages=args.n_messages, receive_timeout=timeout_ms,
                             progress=lambda n: bar.update(n - bar.n))
    print(f"wrote {written} messages to {args.file}")
    return 0 if written == args.n_messages else 1


if __name__ == "__main__":
    sys.exit(main())

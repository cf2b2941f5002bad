"""``python3 dev.py cluster`` (``cam-server-cluster``): a demo cluster on this machine.

Starts Debian's ``redis-server``, a camera manager, a pipeline manager and two workers of each on loopback (a copy
of the bundled ``configuration/`` for the managers), prints the addresses and the workers as they register, and
stops everything (by PID) on Ctrl-C. Ports (documented in README "Running several hosts"): managers 8888 / 8889,
camera workers 8890-8891, pipeline workers 8892-8893, Redis 6380; ``--base_port`` moves them all.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import IO

from cam_server.cli.demo import _raise_interrupt, _start, _wait_ready, clean_up, work_folder

REDIS_SERVER = "redis-server"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a demo cluster (Redis, 2 managers, 2 workers of each kind) "
                                                 "on loopback until Ctrl-C.")
    parser.add_argument("--base_port", type=int, default=8888,
                        help="camera manager port; pipeline manager +1, workers +2..+5 (default 8888)")
    parser.add_argument("--redis_port", type=int, default=6380)
    parser.add_argument("--host", default="127.0.0.1", help="address everything binds and advertises")
    args = parser.parse_args(argv)
    redis_server = shutil.which(REDIS_SERVER)
    if redis_server is None:
        print("redis-server is not installed (Debian: apt-get install redis-server)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _raise_interrupt)

    work, config = work_folder("cam_server_cluster_")
    host, base = args.host, args.base_port
    redis_url = f"redis://{host}:{args.redis_port}/0"
    cam_url, pipe_url = f"http://{host}:{base}", f"http://{host}:{base + 1}"
    common = ["-i", host, "--log_level", "INFO"]
    commands: list[tuple[str, list[str], str | None]] = [
        ("camera_manager", ["cam_server.start_camera_manager", "-p", str(base), *common, "--redis", redis_url,
                            "-b", str(config / "camera_config"), "-u", str(config / "user_scripts")], cam_url),
        ("pipeline_manager", ["cam_server.start_pipeline_manager", "-p", str(base + 1), *common, "--redis",
                              redis_url, "-c", cam_url, "-b", str(config / "pipeline_config"),
                              "-g", str(config / "background_config"), "-u", str(config / "user_scripts")],
         pipe_url)]
    for i in range(2):
        commands.append((f"camera_worker_{i + 1}", ["cam_server.start_camera_worker", "-p", str(base + 2 + i),
                                                    *common, "-n", host, "--redis", redis_url], None))
        commands.append((f"pipeline_worker_{i + 1}", ["cam_server.start_pipeline_worker", "-p", str(base + 4 + i),
                                                      *common, "-n", host, "--redis", redis_url, "-c", cam_url,
                                                      "--file_folder", str(work / "data")], None))
    children: list[subprocess.Popen] = []
    logs: list[IO[bytes]] = []
    try:
        logs.append(open(work / "redis.log", "wb"))  # noqa: SIM115 - closed in finally
        children.append(subprocess.Popen([redis_server, "--port", str(args.redis_port), "--bind", host, "--save",
                                          "", "--appendonly", "no", "--dir", str(work)], stdout=logs[-1],
                                         stderr=subprocess.STDOUT, start_new_session=True))
        time.sleep(0.3)
        if children[0].poll() is not None:
            raise RuntimeError(f"redis-server exited: {(work / 'redis.log').read_text()[-1000:]}")
        for name, command, _ in commands:
            logs.append(open(work / f"{name}.log", "wb"))  # noqa: SIM115
            children.append(_start(command, logs[-1]))
        for child, (name, command, url) in zip(children[1:], commands, strict=True):
            port = command[command.index("-p") + 1]
            root = "/api/v1/cam" if "camera" in name else "/api/v1/pipeline"
            _wait_ready(child, f"http://{host}:{port}{root}", work / f"{name}.log", name)
            print(f"{name:18} http://{host}:{port}" + ("  (clients talk to this one)" if url else ""), flush=True)
        print(f"{'redis':18} {redis_url}", flush=True)
        print(f"workers and instances: {cam_url}/api/v1/proxy/info, {pipe_url}/api/v1/proxy/info", flush=True)
        print(f"logs: {work}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        print("a process of the cluster ended; stopping", flush=True)
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
    except Exception as exc:  # noqa: BLE001 - a demo reports and cleans up
        print(f"cluster failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        clean_up(children, logs, work)
    print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

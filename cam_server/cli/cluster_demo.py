"""``python3 dev.py cluster`` (``cam-server-cluster``): a demo cluster on this machine.

Starts Debian's ``redis-server``, a camera manager, a pipeline manager and two workers of each on loopback (a copy
of the bundled ``configuration/`` for the managers), prints the addresses and the workers as they register, and
stops everything (by PID) on Ctrl-C. Ports (documented in README "Running several hosts"): managers 8888 / 8889,
camera workers 8890-8891, pipeline workers 8892-8893, Redis 6380; ``--base_port`` moves them all.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence

from cam_server.cli.demo import Demo

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
    demo = Demo("cam_server_cluster_")
    work, config = demo.work, demo.config
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

    def body() -> None:
        redis = demo.start("redis", [redis_server, "--port", str(args.redis_port), "--bind", host, "--save", "",
                                     "--appendonly", "no", "--dir", str(work)], module=False)
        time.sleep(0.3)
        if redis.poll() is not None:
            raise RuntimeError(f"redis-server exited: {demo.log_path('redis').read_text()[-1000:]}")
        started = [(demo.start(name, command), name, command, url) for name, command, url in commands]
        for child, name, command, url in started:
            port = command[command.index("-p") + 1]
            root = "/api/v1/cam" if "camera" in name else "/api/v1/pipeline"
            demo.wait_ready(child, f"http://{host}:{port}{root}", name)
            print(f"{name:18} http://{host}:{port}" + ("  (clients talk to this one)" if url else ""), flush=True)
        print(f"{'redis':18} {redis_url}", flush=True)
        print(f"workers and instances: {cam_url}/api/v1/proxy/info, {pipe_url}/api/v1/proxy/info", flush=True)
        print(f"logs: {work}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        while all(c.poll() is None for c in demo.children):
            time.sleep(0.5)
        print("a process of the cluster ended; stopping", flush=True)

    return demo.run("cluster", body)


if __name__ == "__main__":
    sys.exit(main())

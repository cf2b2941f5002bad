"""``python3 dev.py cluster`` (``cam_server.cli.cluster_demo``): starts Redis, both managers and two workers of each,
prints their addresses, and on SIGTERM stops every process it started."""

from __future__ import annotations

import os
import random
import re
import signal
import socket

import psutil

from cam_server.client.proxy_client import ProxyClient
from tests.helpers.procs import start_python, stop_pid, wait_until


def _free_run(count: int) -> int:
    """A first port of ``count`` consecutive ports free on 127.0.0.1 a moment ago."""
    for _ in range(50):
        base = random.randrange(20000, 60000)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no run of free ports")


def test_demo_cluster_starts_registers_and_stops_everything(tmp_path) -> None:
    base, redis_port = _free_run(6), _free_run(1)
    log = tmp_path / "cluster.log"
    proc = start_python(["-m", "cam_server.cli.cluster_demo", "--base_port", str(base), "--redis_port",
                         str(redis_port)], log_path=log)
    seen: dict[int, psutil.Process] = {}
    try:
        def ready() -> bool:
            seen.update({p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)})
            if proc.poll() is not None:
                raise RuntimeError(f"cluster exited early:\n{log.read_text()}")
            return "Ctrl-C to stop." in log.read_text()

        wait_until(ready, 90, "the demo cluster to start")
        text = log.read_text()
        assert re.search(rf"^camera_manager +http://127\.0\.0\.1:{base} ", text, flags=re.M), text
        assert f"redis://127.0.0.1:{redis_port}/0" in text
        for port, workers in ((base, {base + 2, base + 3}), (base + 1, {base + 4, base + 5})):
            proxy = ProxyClient(f"http://127.0.0.1:{port}")
            wait_until(lambda p=proxy, w=workers: set(p.get_status_info()) == {f"http://127.0.0.1:{x}" for x in w},
                       20, "both workers registered")
        seen.update({p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)})
        assert len(seen) >= 7  # redis, 2 managers, 4 workers
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)
    finally:
        stop_pid(proc)
    assert proc.returncode == 0 and "stopped." in log.read_text()
    wait_until(lambda: not [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
               15, "every process of the demo cluster gone")

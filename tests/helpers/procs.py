"""Start real processes for tests and always stop them by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stop_pid(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it does not go."""
    if proc.poll() is not None or not signal_group(proc.pid, signal.SIGTERM):
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait(5)


def signal_group(pgid: int, sig: int) -> bool:
    """Signal every process of group ``pgid``; False when there is none left. A SIGKILL takes Python's resource
    tracker too, as systemd's last resort does: our processes hold no named semaphore it would have to remove
    (tests/faults/test_server_faults.py checks)."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def start_python(args: Sequence[str], env: dict[str, str] | None = None, log_path: Path | None = None,
                 ) -> subprocess.Popen:
    """Run ``python args...`` with this interpreter in its own process group (so children stop with it)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; raise with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last error: {last_exc!r})")

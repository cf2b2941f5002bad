#!/usr/bin/env python3
"""One entry point for a fresh machine: ``python3 dev.py run`` or ``python3 dev.py test``.

Both create ``.venv`` (once; again whenever pyproject.toml changes), install the project with its
test extras into it, and then either start both servers with the bundled example configuration, or
run the test suite. Only the Python standard library is used here, so nothing must be installed first.

``python3 dev.py openapi`` rewrites docs/openapi-camera.json and docs/openapi-pipeline.json, the OpenAPI
documents of both servers (after a change of a route or of a model in them; a test compares them).

``python3 dev.py cluster`` starts a demo cluster on this machine: redis-server, a camera manager, a pipeline
manager and two workers of each (README "Running several hosts"), until Ctrl-C.

``test`` runs the suite inside a private, loopback-only network namespace when it can (root and
``unshare`` available): EPICS Channel Access sends packets to the host's own addresses otherwise. It first installs
the Debian packages the tests drive (chromium, redis-server) when they are missing and it can (root, apt-get);
``python3 dev.py setup`` installs both the packages and the virtual environment, and runs nothing (CI runs it
before entering its own namespace).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".cam_server_installed"


def _fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def setup() -> None:
    """Create the virtual environment and install the project (skipped when already up to date)."""
    if STAMP.exists() and STAMP.read_text() == _fingerprint() and PY.exists():
        return
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q"]
    print("installing cam_server and its dependencies (a minute on a fresh machine)", flush=True)
    log = VENV / "install.log"
    with open(log, "w") as out:
        for args in (["install", "--upgrade", "pip"], ["install", "-e", f"{ROOT}[compiled,test]"]):
            if subprocess.call([*pip, *args], stdout=out, stderr=subprocess.STDOUT) != 0:
                sys.stdout.write(log.read_text())
                raise SystemExit(f"installation failed (pip {' '.join(args)}); the log is above and in {log}")
        # Compile the numba kernels once now (they are cached on disk), not in the first server or test.
        subprocess.call([str(PY), "-c", "import cam_server.processing.default"], stdout=out, stderr=subprocess.STDOUT)
    STAMP.write_text(_fingerprint())


# Programs the tests drive for real, by their Debian packages: a browser for the live view tests, the cluster
# tests' Redis (`python3 dev.py cluster` needs redis-server too).
SYSTEM_PACKAGES = {"chromium": "chromium", "redis-server": "redis-server"}


def system_packages(commands: tuple[str, ...] = tuple(SYSTEM_PACKAGES)) -> None:
    """Install the Debian packages of ``commands`` that are missing (as root with apt-get; otherwise say which
    tests will be skipped). Needs the network: called before a test run enters its private namespace."""
    missing = [SYSTEM_PACKAGES[c] for c in commands if shutil.which(c) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"note: {' '.join(missing)} not installed (Debian packages; root and apt-get install them here): "
              "the tests that need them are skipped", flush=True)
        return
    print(f"installing Debian packages: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *missing]
    if subprocess.call(install, env=env) != 0:
        subprocess.call(["apt-get", "update", "-q"], env=env)
        if subprocess.call(install, env=env) != 0:
            print(f"note: apt-get could not install {' '.join(missing)}", flush=True)


def _only_loopback() -> bool:
    try:
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return [ln.split(":")[0].strip() for ln in lines] == ["lo"]


def test(args: list[str]) -> int:
    if not _only_loopback():  # inside the private namespace there is no network (nor need: done outside)
        system_packages()
    setup()
    cmd = [str(PY), "-m", "pytest", "-p", "no:cacheprovider", *args]
    if not _only_loopback() and os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        # Re-run ourselves inside a private network namespace that has only loopback.
        inner = " ".join(["ip link set lo up && exec", sys.executable, str(Path(__file__).resolve()), "test",
                          *(f"'{a}'" for a in args)])
        return subprocess.call(["unshare", "-n", "sh", "-c", inner], cwd=ROOT)
    if not _only_loopback():
        print("note: not in a loopback-only network namespace; EPICS tests will be skipped", flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def run(args: list[str], module: str = "cam_server.cli.demo") -> int:
    setup()
    demo = subprocess.Popen([str(PY), "-m", module, *args], cwd=ROOT)
    while True:
        try:
            return demo.wait()
        except KeyboardInterrupt:
            # Ctrl-C reaches the demo too (same process group); let it stop its servers and wait for it.
            demo.send_signal(signal.SIGINT)


def openapi() -> int:
    setup()
    return subprocess.call([str(PY), "-m", "cam_server.cli.openapi", str(ROOT / "docs")], cwd=ROOT)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"run", "test", "setup", "openapi", "cluster"}:
        print(__doc__)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "setup":
        system_packages()
        setup()
        return 0
    if command == "openapi":
        return openapi()
    try:
        if command == "cluster":
            system_packages(("redis-server",))
            return run(rest, "cam_server.cli.cluster_demo")
        return test(rest) if command == "test" else run(rest)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

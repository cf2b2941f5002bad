"""Several hosts on one machine for multi-host tests: network namespaces joined by a bridge.

:class:`Network` (a context manager; the ``network`` fixture factory of ``tests/cluster_hosts`` uses it) creates,
from the test process's own private network namespace, one *bridge* namespace holding a Linux bridge and N *host*
namespaces (``ip netns add``), each joined to the bridge by a veth pair (``eth0`` in the host), with addresses in a
private ``10.77.<random>.0/24`` that exists only inside these namespaces. The test process itself is joined to the
bridge too (address ``.1``, :attr:`Network.client_address`), so it talks to every host directly. Namespace names
carry a random suffix: ``/run/netns`` is shared with the whole machine and parallel runs must not collide.

A :class:`Host` runs processes (:meth:`Host.popen`: ``ip netns exec`` execs, so the ``Popen`` pid is the process's
own pid) and can lose its cable (:meth:`Host.link_down` sets its veth's bridge end down: the host keeps its address
and can still reach itself, but nothing else) and get it back (:meth:`Host.link_up`). Leaving the ``with`` block,
also on failure, stops every started process by PID (SIGTERM to its process group, SIGKILL after a grace period),
then every process still living in our namespaces (their instances), and deletes the namespaces and the test
process's veth.

The harness needs root, ``ip netns`` and a test process in a network namespace of its own (``unshare -n``, as
``python3 dev.py test`` and CI run the suite): it never adds an interface to the machine's network. Otherwise it
skips with the reason, which ``CAM_SERVER_REQUIRE_NETNS=1`` (CI) turns into a failure.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import pytest

from tests.helpers.net import interfaces
from tests.helpers.procs import ROOT, signal_group

log = logging.getLogger(__name__)

PREFIX = "camsrv"
"""Every namespace of ours is named ``camsrv<suffix>-<role>`` (``ip netns list | grep camsrv`` finds leftovers)."""


def netns_unavailable() -> str | None:
    """Why this process cannot build a :class:`Network`, or None when it can."""
    if os.geteuid() != 0:
        return "multi-host tests need root (ip netns add)"
    if not shutil.which("ip"):
        return "multi-host tests need iproute2's 'ip'"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "'ip netns' is unavailable here"
    foreign = [name for name in interfaces() if name != "lo" and not name.startswith(PREFIX)]
    if foreign:
        return ("multi-host tests add a veth to the test process's network namespace and run only in a private, "
                f"loopback-only one (unshare -n, as 'python3 dev.py test' does); this one has {foreign}")
    return None


def require_netns() -> None:
    """Skip (or fail, with CAM_SERVER_REQUIRE_NETNS=1) when a :class:`Network` cannot be built here."""
    reason = netns_unavailable()
    if reason is None:
        return
    if os.environ.get("CAM_SERVER_REQUIRE_NETNS") == "1":
        pytest.fail(reason + " (CAM_SERVER_REQUIRE_NETNS=1)")
    pytest.skip(reason)


def _ip(*args: str) -> None:
    """Run ``ip args...``; a failure raises with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def netns_pids(name: str) -> list[int]:
    """The pids of the processes living in namespace ``name`` (none when it is gone)."""
    done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that still runs (a zombie waiting for its parent has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Host:
    """One host of a :class:`Network`: a network namespace with ``eth0`` on the bridge and ``lo``."""

    def __init__(self, network: Network, role: str, index: int) -> None:
        self.network = network
        self.role = role
        self.netns = f"{network.name}-{role}"
        self.address = f"{network.subnet}.{10 + index}"
        self._bridge_end = f"v{index}"  # the veth's end in the bridge namespace

    def __repr__(self) -> str:
        return f"Host({self.role}, {self.address})"

    def url(self, port: int) -> str:
        """``http://<address>:<port>``."""
        return f"http://{self.address}:{port}"

    def popen(self, cmd: Sequence[str], env: dict[str, str] | None = None, log_path: Path | None = None,
              cwd: Path = ROOT) -> subprocess.Popen:
        """Start ``cmd`` inside this host, in a process group of its own, output to ``log_path`` (or nowhere); the
        network stops it at teardown (:meth:`Network.stop`)."""
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        out: IO[bytes] | int = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd], cwd=cwd, env=full_env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if log_path:
                out.close()  # type: ignore[union-attr]
        self.network.processes.append(proc)
        return proc

    def python(self, args: Sequence[str], env: dict[str, str] | None = None,
               log_path: Path | None = None) -> subprocess.Popen:
        """``python args...`` (this interpreter, this checkout) inside this host."""
        return self.popen([sys.executable, *args], env={"PYTHONPATH": str(ROOT), **(env or {})}, log_path=log_path)

    def run(self, cmd: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run a short command inside this host to its end (output captured as text)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True,
                              timeout=timeout)

    def link_down(self) -> None:
        """Cut this host's cable: its veth's bridge end goes down (no packet in or out; the host still reaches
        itself through its own address)."""
        _ip("-n", self.network.bridge, "link", "set", self._bridge_end, "down")

    def link_up(self) -> None:
        """Plug the cable back in."""
        _ip("-n", self.network.bridge, "link", "set", self._bridge_end, "up")

    def pids(self) -> list[int]:
        """Every process living in this host now."""
        return netns_pids(self.netns)


class Network:
    """A bridge namespace, one :class:`Host` per name in ``roles``, and the test process on the bridge.

    ``with Network(["manager", "a", "b"]) as net: net["a"].popen([...])``. ``grace`` is how long a process gets
    between SIGTERM and SIGKILL at teardown.
    """

    def __init__(self, roles: Sequence[str], grace: float = 3.0) -> None:
        if len(set(roles)) != len(roles) or not roles:
            raise ValueError(f"host roles must be distinct and not empty: {roles}")
        self.name = f"{PREFIX}{secrets.token_hex(3)}"
        self.subnet = f"10.77.{secrets.randbelow(256)}"
        self.bridge = f"{self.name}-bridge"
        self.client_address = f"{self.subnet}.1"
        self._client_link = self.name  # the test process's veth end
        self.grace = grace
        self.hosts = [Host(self, role, index) for index, role in enumerate(roles)]
        self.processes: list[subprocess.Popen] = []
        self._created: list[str] = []  # namespaces made so far (teardown deletes exactly these)

    def __getitem__(self, role: str) -> Host:
        for host in self.hosts:
            if host.role == role:
                return host
        raise KeyError(role)

    def namespaces(self) -> list[str]:
        """The names of every namespace this network made and has not deleted yet."""
        return list(self._created)

    def __enter__(self) -> Network:
        require_netns()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _create(self) -> None:
        self._add_netns(self.bridge)
        _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge, "link", "set", "br0", "up")
        for host in self.hosts:
            self._add_netns(host.netns)
            _ip("-n", host.netns, "link", "add", "eth0", "type", "veth", "peer", "name", host._bridge_end,
                "netns", self.bridge)
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            _ip("-n", self.bridge, "link", "set", host._bridge_end, "master", "br0", "up")
        _ip("link", "add", self._client_link, "type", "veth", "peer", "name", "vc", "netns", self.bridge)
        _ip("addr", "add", f"{self.client_address}/24", "dev", self._client_link)
        _ip("link", "set", self._client_link, "up")
        _ip("-n", self.bridge, "link", "set", "vc", "master", "br0", "up")

    def stop(self, processes: Sequence[subprocess.Popen] | None = None) -> None:
        """Stop every process started on a host (or just ``processes``) by PID (SIGTERM to its group, SIGKILL after
        the grace period), then every process still living in our namespaces (what they started: instances in
        sessions of their own), by PID."""
        running = [proc for proc in (self.processes if processes is None else processes) if proc.poll() is None]
        for proc in running:
            signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if processes is not None:
            return
        for name in self._created:
            left = netns_pids(name)
            for pid in left:
                log.warning("killing pid %d left in namespace %s", pid, name)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _wait_gone(left, 5.0)

    def close(self) -> None:
        """Stop every process (:meth:`stop`), delete our namespaces and the test process's veth."""
        try:
            self.stop()
        finally:
            subprocess.run(["ip", "link", "del", self._client_link], capture_output=True)
            for name in reversed(self._created):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            self._created.clear()


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)

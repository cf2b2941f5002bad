"""The multi-host harness itself (tests/helpers/netns.py): hosts reach each other over TCP through the bridge, a cut
link cuts them off and a restored one reconnects, and teardown leaves no namespace, interface or process behind."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.helpers.net import interfaces
from tests.helpers.netns import PREFIX, Host, Network, alive, netns_pids
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.unit  # namespaces and plain python -c tools: no process of ours

PORT = 7000
ECHO_SERVER = f"""
import socket
s = socket.create_server(("0.0.0.0", {PORT}))
while True:
    c, peer = s.accept()
    c.sendall(("hello " + peer[0]).encode())
    c.close()
"""


def _connect_from(host: Host, target: str) -> subprocess.CompletedProcess[str]:
    """Connect from inside ``host`` to the echo server at ``target`` (1 s timeout); prints what it got."""
    code = (f"import socket; c = socket.create_connection(('{target}', {PORT}), timeout=1); "
            "print(c.recv(100).decode())")
    return host.run([sys.executable, "-c", code])


def _reachable_from_here(address: str) -> str:
    with socket.create_connection((address, PORT), timeout=1) as conn:
        return conn.recv(100).decode()


def _our_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith(PREFIX)}


def test_hosts_reach_each_other_until_a_link_is_cut() -> None:
    before = interfaces()
    with Network(["a", "b"]) as net:
        a, b = net["a"], net["b"]
        assert a.address != b.address and a.address.startswith("10.77.")
        server = a.popen([sys.executable, "-c", ECHO_SERVER])
        assert server.pid in a.pids()  # ip netns exec execs: the Popen pid is the server itself
        wait_until(lambda: _reachable_from_here(a.address), 10, "the echo server on host a")
        assert _reachable_from_here(a.address) == f"hello {net.client_address}"

        done = _connect_from(b, a.address)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"hello {b.address}"  # b's own address on the bridge, not a loopback

        a.link_down()
        cut = _connect_from(b, a.address)
        assert cut.returncode != 0 and "timed out" in cut.stderr
        with pytest.raises(OSError):
            _reachable_from_here(a.address)
        assert _connect_from(a, a.address).stdout.strip() == f"hello {a.address}"  # a still reaches itself

        a.link_up()
        wait_until(lambda: _connect_from(b, a.address).returncode == 0, 10, "host a back on the bridge")
        names = net.namespaces()
        assert len(names) == 3 and set(names) <= _our_namespaces()
    assert not set(names) & _our_namespaces()
    assert server.poll() is not None
    assert interfaces() == before


def test_teardown_after_a_failure_stops_every_process_of_the_hosts() -> None:
    """A process that a host's process started in a session of its own (like an instance) is found in the namespace
    and stopped by PID too, and the namespaces go, although the test body raised."""
    before = interfaces()
    orphan_maker = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; "
                    "time.sleep(60)'], start_new_session=True); time.sleep(60)")
    with pytest.raises(RuntimeError, match="the test failed"), Network(["a"], grace=0.5) as net:
        parent = net["a"].popen([sys.executable, "-c", orphan_maker])
        wait_until(lambda: len(net["a"].pids()) == 2, 10, "the parent and its child in host a")
        pids = net["a"].pids()
        names = net.namespaces()
        raise RuntimeError("the test failed")
    assert parent.poll() is not None
    assert not set(names) & _our_namespaces()
    assert all(not netns_pids(name) for name in names)
    assert not any(alive(pid) for pid in pids)
    assert interfaces() == before

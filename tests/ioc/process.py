"""Start, kill, restart and command the simulated camera IOC (tests/ioc/camera_ioc.py) from tests.

Only use inside a loopback-only network namespace (``tests.helpers.net.require_loopback_netns()``): the IOC gets
``tests.helpers.net.EPICS_ENV`` in its environment, and :meth:`CameraIoc.command` is a Channel Access client.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.net import EPICS_ENV, free_port
from tests.helpers.procs import start_python, stop_pid, wait_until
from tests.ioc.camera_ioc import READY_LINE

IOC_SCRIPT = "tests/ioc/camera_ioc.py"
_prefix_numbers = itertools.count()


def unique_prefix() -> str:
    """A PV prefix no other test run (pid) or IOC of this run uses."""
    return f"TEST{os.getpid()}:CAM{next(_prefix_numbers)}"


@dataclass
class CameraIoc:
    """One simulated camera IOC process; the prefix stays the same across kill/start so clients can reconnect."""

    prefix: str
    log_dir: Path
    width: int = 1280
    height: int = 1024
    rate: float = 20.0
    dtype: str = "uint16"
    ftvl: str | None = None
    max_pixels: int | None = None
    pv_names: str = "epics"  # or "area_detector" / "bsread": which IOC flavour's PV names it serves
    unused_pvs: bool = True  # area_detector: serve cam1:ColorMode and cam1:DataType
    camera_name: str | None = None  # the camera config name (default from the prefix); bsread channel <name>:FPICTURE
    bsread_port: int | None = None  # bsread: the stream's port (default: a free one, kept across restarts)
    bsread_flat: bool = False  # bsread: send the image 1-D
    proc: subprocess.Popen | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"ioc-{self.prefix.replace(':', '_')}-{self.starts}.log"

    def args(self) -> list[str]:
        args = [IOC_SCRIPT, "--prefix", self.prefix, "--width", str(self.width), "--height", str(self.height),
                "--rate", str(self.rate), "--dtype", self.dtype]
        if self.ftvl:
            args += ["--ftvl", self.ftvl]
        if self.max_pixels:
            args += ["--max-pixels", str(self.max_pixels)]
        args += ["--pv-names", self.pv_names] + ([] if self.unused_pvs else ["--no-unused-pvs"])
        if self.pv_names == "bsread":
            args += ["--bsread-port", str(self.bsread_port), "--bsread-channel", f"{self.name}:FPICTURE"]
            args += ["--bsread-flat"] if self.bsread_flat else []
        return args

    @property
    def name(self) -> str:
        """The camera config name (:meth:`camera_config`)."""
        return self.camera_name or self.prefix.replace(":", "_").lower()

    @property
    def stream_address(self) -> str:
        """bsread: the address the IOC publishes its frames on (the initial value of P:BSREADCONFIG)."""
        return f"tcp://127.0.0.1:{self.bsread_port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start the IOC (again, after :meth:`kill`/:meth:`stop`) and wait until it serves its PVs."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"IOC {self.prefix} is already running (pid {self.proc.pid})")
        self.starts += 1
        if self.pv_names == "bsread" and self.bsread_port is None:
            self.bsread_port = free_port()
        log_path = self.log_path
        self.proc = start_python(self.args(), env=EPICS_ENV, log_path=log_path)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"IOC {self.prefix} exited with {self.proc.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            return READY_LINE in log_path.read_text(errors="replace")

        try:
            wait_until(ready, timeout, f"IOC {self.prefix} to report ready")
        except (TimeoutError, RuntimeError):
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL the IOC by PID, like a crash: clients see the TCP circuit drop without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) the IOC by PID; safe to call when it is not running."""
        if self.proc is not None:
            stop_pid(self.proc)

    def restart(self, timeout: float = 20.0) -> None:
        self.kill()
        self.start(timeout)

    def command(self, text: str, timeout: float = 5.0) -> None:
        """Write one SIM_CMD line (``resize W H``, ``offline``, ``online``, ``status TEXT``, ``extra N``, ``pause``,
        ``resume``, bsread: ``bsreadconfig [TEXT]``) and wait until the IOC has applied it."""
        import epics

        result = epics.caput(f"{self.prefix}:SIM_CMD", text, wait=True, timeout=timeout)
        if result != 1:
            raise RuntimeError(f"caput {self.prefix}:SIM_CMD {text!r} failed ({result!r})")
        # The put completes once the IOC applied the command, and the IOC processes the records a command changes
        # before that (SimulatedCamera.post): a read right after shows them.

    def camera_config(self, **overrides: Any) -> dict[str, Any]:
        """A camera config dict for this IOC (``source_type`` = its PV names), with ``overrides`` applied."""
        config: dict[str, Any] = {
            "name": self.name, "source": self.prefix, "source_type": self.pv_names,
            "mirror_x": False, "mirror_y": False, "rotate": 0, "dtype": self.dtype, "connection_timeout": 5.0,
        }
        config.update(overrides)
        return config

"""What handling one message can lead to, and the instance exit codes (shared by all pipeline types)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0          # finished normally: records reached, pid_range stop, stop requested, no clients
EXIT_FAILURE = 1     # could not start or run: bad config, camera unreachable, unexpected error
EXIT_ABORTED = 2     # a processing error with abort_on_error
EXIT_MEMORY = 3      # ended by the memory limit (memory_limit / the server's --instance_memory_limit)


class ProcessingError(Exception):
    """A frame failed in pre-processing or the processing function (message says which step and why)."""


class FinishInstance(Exception):  # noqa: N818 - control flow, not an error
    """The instance has done its job (pid_range stop reached)."""


class FrameOverwritten(Exception):  # noqa: N818 - control flow: the input counted the drop
    """The frame's shared-memory slot was overwritten while it was used: its results must not leave."""


@dataclass(slots=True)
class Job:
    """A frame that passed the sequential gates, ready for the (possibly parallel) compute step."""

    pulse_id: int
    timestamp: tuple[int, int]
    compute: Callable[[], dict[str, Any] | None]
    received: float = 0.0  # wall clock of the message's receive (set by the loop: the processing time histogram)

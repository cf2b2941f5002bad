"""Harness for ``pipeline_type: "script"``: a user module that produces the output stream itself.

The script defines::

    def run(stop_event, parameters, sender, context=None): ...

- ``stop_event`` (``threading.Event``): set when the instance must stop; ``run`` should return soon after.
- ``parameters`` (:class:`LiveParameters`, a read-only mapping): always the instance's current config, so
  config updates sent to the instance are seen on the next access.
- ``sender`` (:class:`ScriptSender`): ``sender.send(data: dict, pulse_id=None, timestamp=None)``;
  ``sender.client_count``.
- ``context`` (:class:`ScriptContext`, only passed if ``run`` has a 4th parameter, a ``context`` keyword
  or ``**kwargs``):
  ``instance_id``, ``scripts_folder``, ``logger``.

``run`` returning ends the instance normally; an exception ends it with a :class:`UserScriptError` naming
the script line. The full description is in docs/pipeline_types.md.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cam_server.pipeline.instance.user_code import (
    UserScriptError,
    describe_exception,
    load_module,
    validate_result,
)

log = logging.getLogger(__name__)

SendFunction = Callable[[dict, int, tuple[int, int]], Any]


class LiveParameters(Mapping):
    """Read-only view of the current parameters: every access asks ``get_parameters()`` (cheap, no copy)."""

    def __init__(self, get_parameters: Callable[[], Mapping[str, Any]]):
        self._get = get_parameters

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._get()))

    def __len__(self) -> int:
        return len(self._get())

    def snapshot(self) -> dict[str, Any]:
        """A copy of the current parameters (consistent for a whole loop iteration)."""
        return dict(self._get())


class ScriptSender:
    """What a script sends through: validates the data and fills in pulse id and timestamp.

    ``pulse_id=None`` continues from the previous message (+1; the first is 0); ``timestamp=None`` is now.
    ``send`` returns what the underlying send function returns (False = dropped by a non-blocking stream).
    """

    def __init__(self, send: SendFunction, client_count: Callable[[], int] | None = None):
        self._send = send
        self._client_count = client_count
        self._next_pulse_id = 0
        self.sent = 0

    @property
    def client_count(self) -> int:
        return int(self._client_count()) if self._client_count is not None else 0

    def send(self, data: Mapping[str, Any], pulse_id: int | None = None,
             timestamp: tuple[int, int] | float | None = None) -> Any:
        if not isinstance(data, Mapping):
            raise UserScriptError(f"sender.send(data): data must be a dict (channel name -> value), "
                                  f"got {type(data).__name__}")
        data = validate_result(data, "script sender.send(data)")
        if pulse_id is None:
            pulse_id = self._next_pulse_id
        elif not isinstance(pulse_id, int) or isinstance(pulse_id, bool) or pulse_id < 0:
            raise UserScriptError(f"pulse_id must be a non-negative int, got {pulse_id!r}")
        if timestamp is None:
            timestamp = time.time()
        if isinstance(timestamp, (int, float)):
            sec = int(timestamp)
            timestamp = (sec, int((timestamp - sec) * 1e9))
        elif not (isinstance(timestamp, (tuple, list)) and len(timestamp) == 2):
            raise UserScriptError(f"timestamp must be (sec, ns) or float seconds, got {timestamp!r}")
        self._next_pulse_id = pulse_id + 1
        result = self._send(data, pulse_id, (int(timestamp[0]), int(timestamp[1])))
        self.sent += 1
        return result


@dataclass
class ScriptContext:
    """Extra information for scripts that ask for it (4th ``run`` parameter)."""

    instance_id: str = ""
    scripts_folder: str | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("cam_server.user_script"))


def load_script(path_or_name: str, scripts_folder: str | os.PathLike | None,
                reload: bool = False) -> tuple[Callable[..., Any], str]:
    """The script's ``run`` function and how it takes a ``context`` ("positional", "keyword" or "");
    clear errors for a bad interface."""
    module = load_module(path_or_name, scripts_folder, reload)
    where = f"script {os.path.basename(getattr(module, '__file__', None) or module.__name__)}"
    run = getattr(module, "run", None)
    if run is None:
        raise UserScriptError(f"{where} has no function 'run' (expected: def run(stop_event, parameters, sender))")
    if not callable(run):
        raise UserScriptError(f"'run' in {where} is not callable (it is {type(run).__name__})")
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError):
        return run, ""
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_more = len(positional) >= 4 or any(p.kind is p.VAR_POSITIONAL for p in params)
    for n_args in ((3, 4) if takes_more else (3,)):
        try:
            signature.bind(*([None] * n_args))
            break
        except TypeError:
            continue
    else:
        raise UserScriptError(f"'run' in {where} must accept (stop_event, parameters, sender[, context]); "
                              f"its signature is run{signature}")
    if takes_more:
        return run, "positional"
    if "context" in signature.parameters or any(p.kind is p.VAR_KEYWORD for p in params):
        return run, "keyword"
    return run, ""


def run_script(path_or_name: str, scripts_folder: str | os.PathLike | None, stop_event: threading.Event,
               get_parameters: Callable[[], Mapping[str, Any]], send: SendFunction,
               client_count: Callable[[], int] | None = None, instance_id: str = "",
               reload: bool = False) -> ScriptSender:
    """Load the script and run it in this thread until it returns; returns the sender (for its counters).

    ``get_parameters()`` must return the current full parameters dict; ``send(data, pulse_id, (sec, ns))``
    publishes one message. Raises :class:`UserScriptError` for load errors and for exceptions in ``run``.
    """
    run, context_mode = load_script(path_or_name, scripts_folder, reload)
    sender = ScriptSender(send, client_count)
    args: list[Any] = [stop_event, LiveParameters(get_parameters), sender]
    kwargs: dict[str, Any] = {}
    context = ScriptContext(instance_id=instance_id,
                            scripts_folder=os.fspath(scripts_folder) if scripts_folder else None)
    if context_mode == "positional":
        args.append(context)
    elif context_mode == "keyword":
        kwargs["context"] = context
    path = getattr(run, "__code__", None) and os.path.abspath(run.__code__.co_filename)
    log.info("starting script %s for instance %r", path_or_name, instance_id)
    try:
        run(*args, **kwargs)
    except UserScriptError as ex:  # e.g. a bad sender.send() call: already a clear message
        raise UserScriptError(f"script {path_or_name} failed: {ex}") from None
    except Exception as ex:
        raise UserScriptError(f"script {path_or_name} failed: {describe_exception(ex, path)}") from None
    log.info("script %s returned after %d messages", path_or_name, sender.sent)
    return sender

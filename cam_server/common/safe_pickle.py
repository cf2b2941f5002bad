"""A restricted reader for the pickled request bodies PSI's clients send (``pickle.dumps(d, protocol=0)``).

Why not ``pickle.loads``: unpickling runs whatever callable the pickle names (``os.system`` ...), so a request body
would be code chosen by the client. The bodies we accept hold only plain data (dicts, lists, tuples, strings, numbers),
which pickle builds without naming any global, so :class:`RestrictedUnpickler` refuses every global. Before that, a
scan of the opcodes (without building anything) bounds the work and memory a crafted body can cost (pickle bombs,
deep nesting): a legitimate body has a few dozen opcodes, however large its strings are. The opcode count also
bounds the depth of structures built inside-out (tuples), which never sit nested on the stack; callers still check the
result's shape without recursing into it.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
from typing import Any

from cam_server.common.errors import CamServerError

log = logging.getLogger(__name__)

MAX_PICKLE_OPCODES = 1000
MAX_PICKLE_DEPTH = 32
_SCALARS = frozenset({pickletools.pyint, pickletools.pylong, pickletools.pyinteger_or_bool, pickletools.pybool,
                      pickletools.pyfloat, pickletools.pystring, pickletools.pyunicode, pickletools.pybytes,
                      pickletools.pybytearray, pickletools.pybytes_or_str, pickletools.pynone})


class PickleRefused(CamServerError):
    """A pickled body that is malformed, names a global, or is too complex to be plain data (HTTP 400)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only build plain data: every global (class, function) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        log.warning("refused a pickle naming the global %.100s.%.100s", module, name)  # worth an administrator's look
        raise PickleRefused(f"The restricted unpickler refuses global {module}.{name}: a pickled body may only hold "
                            "dicts, lists, tuples, strings and numbers.")

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefused("The restricted unpickler refuses persistent ids: a pickled body may only hold plain data.")


def safe_loads(data: bytes, max_opcodes: int = MAX_PICKLE_OPCODES, max_depth: int = MAX_PICKLE_DEPTH) -> Any:
    """Plain data from a pickle, refusing globals, malformed input and bodies of more than ``max_opcodes`` opcodes
    or nested deeper than ``max_depth`` with :class:`PickleRefused`."""
    _scan(data, max_opcodes, max_depth)
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except PickleRefused:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as exc:
        raise PickleRefused(f"Malformed pickle: {type(exc).__name__}: {_short(exc)}") from None


def _scan(data: bytes, max_opcodes: int, max_depth: int) -> None:
    """Walk the opcodes without building objects: refuse truncated or garbled pickles, too many opcodes and deep
    nesting (the containers and marks on the unpickler's stack while inner values are built)."""
    if not data:
        raise PickleRefused("Malformed pickle: the body is empty.")
    stack: list[bool] = []  # one entry per value: True for a container (or an unknown object, e.g. from the memo)
    marks: list[int] = []   # stack sizes at each MARK
    count = end = 0
    try:
        for opcode, _arg, pos in pickletools.genops(data):
            end = pos + 1
            count += 1
            if count > max_opcodes:
                raise PickleRefused(f"Pickle refused: more than {max_opcodes} opcodes (plain data of this kind needs "
                                    "a few dozen); possibly a pickle bomb.")
            _apply(opcode, stack, marks)
            if sum(stack) + len(marks) > max_depth:
                raise PickleRefused(f"Pickle refused: nested deeper than {max_depth} levels.")
    except PickleRefused:
        raise
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:  # genops: truncated or unknown opcode
        raise PickleRefused(f"Malformed pickle: {_short(exc)}") from None
    if end < len(data):
        raise PickleRefused(f"Malformed pickle: {len(data) - end} bytes after the end (STOP) of the pickle.")


def _apply(opcode: pickletools.OpcodeInfo, stack: list[bool], marks: list[int]) -> None:
    """The opcode's documented stack effect on ``stack``/``marks``."""
    before, after = opcode.stack_before, opcode.stack_after
    if pickletools.markobject in before:  # pops down to the innermost mark (what follows it in ``before``), the mark,
        if not marks:                     # and what precedes it in ``before`` (e.g. the list of APPENDS)
            raise PickleRefused(f"Malformed pickle: {opcode.name} without a mark.")
        size = marks.pop() - before.index(pickletools.markobject)
    elif opcode.name == "POP" and marks and len(stack) == marks[-1]:  # POP of a mark on top of the stack
        marks.pop()
        return
    else:
        size = len(stack) - len(before)
    if size < (marks[-1] if marks else 0):
        raise PickleRefused(f"Malformed pickle: {opcode.name} on an empty stack.")
    del stack[size:]
    if pickletools.markobject in after:  # MARK
        marks.append(size)
    else:
        stack.extend(kind not in _SCALARS for kind in after)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."

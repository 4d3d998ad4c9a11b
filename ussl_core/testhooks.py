"""Crash points and write faults for the crash-safety and disk-fault tests.

`USSL_CRASH_AT="shard-write:2"` kills the process (SIGKILL, no cleanup) the 2nd time the
point named "shard-write" is reached. Unset in normal use, where `crash_point` costs one
dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    spec = os.environ.get("USSL_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_ERRNO_NAMES = {"ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS, "EACCES": errno.EACCES,
                "EDQUOT": errno.EDQUOT, "EIO": errno.EIO}
_fault_counts: Counter[str] = Counter()


def write_fault(point: str, path: str | os.PathLike) -> None:
    """A test hook at the write layer: USSL_FAIL_AT="png:3:ENOSPC" makes the 3rd write at the
    point named "png" fail as the operating system would (OSError ENOSPC naming `path`).
    Unset in normal use, where it costs one dictionary lookup."""
    spec = os.environ.get("USSL_FAIL_AT")
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != point:
        return
    nth, _, code_name = rest.partition(":")
    _fault_counts[point] += 1
    if _fault_counts[point] == int(nth or 1):
        code = _ERRNO_NAMES[code_name or "ENOSPC"]
        raise OSError(code, os.strerror(code), os.fspath(path))

"""Crash points and write faults for the crash-safety and disk-fault tests.

`USSL_CRASH_AT="shard-write:2"` kills the process (SIGKILL, no cleanup) the 2nd time the
point named "shard-write" is reached; `USSL_SLOW_AT="shard-write:1:30"` sleeps 30 s there
instead. Unset in normal use, where `crash_point` costs one
dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import Counter

_reached: Counter[str] = Counter()


def _hook_fires(variable: str, point: str) -> str | None:
    """For `variable`="<point>:<n>[:<extra>]": the extra text ("" if none) when `point` is
    reached for the n-th time in this process, else None."""
    spec = os.environ.get(variable)
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    if name != point:
        return None
    nth, _, extra = rest.partition(":")
    _reached[f"{variable}:{point}"] += 1
    return extra if _reached[f"{variable}:{point}"] == int(nth or 1) else None


def crash_point(name: str) -> None:
    if _hook_fires("USSL_CRASH_AT", name) is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = _hook_fires("USSL_SLOW_AT", name)   # "<point>:<n>:<seconds>": a process caught mid-work
    if pause:
        time.sleep(float(pause))


_ERRNO_NAMES = {"ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS, "EACCES": errno.EACCES,
                "EDQUOT": errno.EDQUOT, "EIO": errno.EIO}


def write_fault(point: str, path: str | os.PathLike) -> None:
    """A test hook at the write layer: USSL_FAIL_AT="png:3:ENOSPC" makes the 3rd write at the
    point named "png" fail as the operating system would (OSError ENOSPC naming `path`).
    Unset in normal use, where it costs one dictionary lookup."""
    code_name = _hook_fires("USSL_FAIL_AT", point)
    if code_name is not None:
        code = _ERRNO_NAMES[code_name or "ENOSPC"]
        raise OSError(code, os.strerror(code), os.fspath(path))

"""Crash points for the crash-safety tests.

`USSL_CRASH_AT="shard-write:2"` kills the process (SIGKILL, no cleanup) the 2nd time the
point named "shard-write" is reached. Unset in normal use, where `crash_point` costs one
dictionary lookup.
"""

from __future__ import annotations

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

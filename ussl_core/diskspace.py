"""Room on the disk before a large write.

A write that would fill the disk is refused before it starts, with one clear line, so that a
full disk costs at most the unit of work in flight (a shot, an epoch, a batch of images) and a
re-run of the same command continues. Each check asks for the write's own size plus a reserve
that keeps the catalog able to commit and the logs able to say what happened.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ussl_core.errors import UsslError

RESERVE_BYTES = 32 * 1024 * 1024   # left free for SQLite's journal, logs and cards


class DiskSpaceError(UsslError):
    """Not enough free space for a write that was about to start (nothing was written)."""


def free_bytes(path: str | os.PathLike) -> int:
    """Free space on the file system of `path` (its nearest existing parent).
    USSL_FREE_BYTES overrides it, for tests of a nearly full disk."""
    override = os.environ.get("USSL_FREE_BYTES")
    if override:
        return int(override)
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free


def megabytes(count: int) -> str:
    return f"{count / 1e6:,.0f} MB" if count >= 1e6 else f"{count / 1e3:,.0f} kB"


def ensure_space(path: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse (DiskSpaceError) a write of about `needed` bytes at `path` that would leave less
    than the reserve free."""
    free = free_bytes(path)
    if free < needed + RESERVE_BYTES:
        raise DiskSpaceError(
            f"{path}: not enough free space for {what} ({megabytes(free)} free, about "
            f"{megabytes(needed + RESERVE_BYTES)} needed); free some space and run the same "
            "command again")

"""One writer per project: an advisory `flock` on `project.lock`.

The kernel releases a flock when its process dies, so a killed run never leaves a stale lock.
The file also holds who took it (pid, host, command, time) so that a refused writer can say
who holds the project.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ussl_core.errors import ProjectLockedError

LOCK_NAME = "project.lock"


class ProjectLock:
    def __init__(self, root: Path, holder: str) -> None:
        self.path = Path(root) / LOCK_NAME
        self.holder = holder
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ProjectLockedError(
                f"{self.path.parent}: project is being written by {describe_holder(self.path)}; "
                "wait for that job to finish or stop it"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "holder": self.holder,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "ProjectLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(root: Path) -> dict | None:
    """Who holds the write lock of the project at `root`, or None when nobody does."""
    path = Path(root) / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_info(path) or {"holder": "another process"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_holder(path: Path) -> str:
    info = _read_info(path)
    if not info:
        return "another process"
    return f"{info.get('holder', '?')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


def _read_info(path: Path) -> dict | None:
    try:
        text = path.read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None

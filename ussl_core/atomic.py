"""Files written whole or not at all: a temporary name beside the target, renamed when done."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ussl_core.testhooks import write_fault


@contextmanager
def atomic_path(path: str | os.PathLike, point: str = "file") -> Iterator[Path]:
    """Yield a temporary path beside `path` (a hidden `.<name>.tmp`) to write to; it becomes
    `path` when the block ends, and is removed if the block fails: a kill or a full disk never
    leaves a half-written file under the final name. An operating-system error names `path`, the
    file the user asked for (a failed write() names none, the rename names the temporary).
    `point` names the write for the test hook (ussl_core.testhooks.write_fault)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write_fault(point, tmp)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, point: str = "file") -> None:
    with atomic_path(path, point) as tmp:
        tmp.write_text(text, encoding="utf-8")

"""HDF5 array shards: written under a temporary name, renamed only when complete.

A shard holds one dataset (frames N x H x W x 3 or masks N x H x W, uint8) plus attributes.
A process killed mid-write leaves only a `*.tmp` file, which the next writer removes; the
catalog never points at a shard before its rename.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import h5py
import numpy as np

from ussl_core.errors import UsslError
from ussl_core.diskspace import ensure_space
from ussl_core.testhooks import crash_point, write_fault

TMP_SUFFIX = ".tmp"
ATTEMPT_MARK = ".attempt-"


class ShardError(UsslError):
    """A shard the catalog names that is missing or damaged: `ussl check --repair` mends it."""

    def __init__(self, path: Path, cause: str) -> None:
        self.path, self.cause = Path(path), cause
        super().__init__(f"{path}: shard {cause}; `ussl check PROJECT --repair` moves it aside and "
                         "recomputes it")

    def __reduce__(self):
        return type(self), (self.path, self.cause)


def write_shard(final_path: Path, name: str, array: np.ndarray, attrs: dict | None = None,
                compress: bool = False, attempt: str | None = None) -> Path:
    """Write `array` to `final_path + .tmp` (with `attempt`, `final_path.attempt-<attempt>.tmp`,
    a name of that attempt's own); return the temporary path (see `commit_shard`)."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    own = f"{ATTEMPT_MARK}{attempt}" if attempt else ""
    tmp = final_path.with_name(final_path.name + own + TMP_SUFFIX)
    ensure_space(final_path.parent, array.nbytes, f"the shard {final_path.name}")
    # HDF5 builds the file in memory and Python writes its bytes: HDF5 itself never meets a
    # full or read-only disk (it can crash the process while closing a file it failed to
    # write), and a failed write is a plain OSError naming the file.
    buffer = io.BytesIO()
    chunks = (1,) + array.shape[1:] if array.ndim >= 2 and len(array) else None
    with h5py.File(buffer, "w") as f:
        ds = f.create_dataset(name, shape=array.shape, dtype=array.dtype, chunks=chunks,
                              compression="lzf" if compress else None)
        ds[:] = array
        for key, value in (attrs or {}).items():
            ds.attrs[key] = value
    data = buffer.getbuffer()
    try:
        write_fault("shard", tmp)
        with open(tmp, "wb") as out:
            half = len(data) // 2
            out.write(data[:half])
            out.flush()
            crash_point("shard-write")  # the test hook: a kill here leaves a half-written file
            out.write(data[half:])
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:   # a failed write() names no file
            raise OSError(exc.errno, exc.strerror, os.fspath(final_path)) from None
        raise
    return tmp


def commit_shard(tmp_path: Path) -> Path:
    """Atomically move a complete temporary shard to its final name."""
    tmp_path = Path(tmp_path)
    final = tmp_path.with_name(tmp_path.name[: -len(TMP_SUFFIX)].split(ATTEMPT_MARK)[0])
    os.replace(tmp_path, final)
    return final


def read_shard(path: Path, name: str, rows: slice | list[int] | int | None = None) -> np.ndarray:
    try:
        with h5py.File(path, "r") as f:
            ds = f[name]
            if rows is None:
                return ds[()]
            if isinstance(rows, list):
                # h5py reads lists of rows only in increasing order without repeats.
                unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
                return ds[unique.tolist()][inverse]
            return ds[rows]
    except FileNotFoundError:
        raise ShardError(path, "missing") from None
    except (OSError, KeyError, ValueError, RuntimeError) as exc:   # h5py's words for a damaged file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShardError(path, f"corrupt or unreadable ({first})") from None


def remove_temporaries(folder: Path, attempts_only: bool = False) -> int:
    """Delete leftovers of killed writes under `folder` (`attempts_only`: only those of cluster
    attempts, `*.attempt-<token>.tmp`, which a finished cluster run removes); returns how many
    were removed."""
    removed = 0
    folder = Path(folder)
    if folder.exists():
        for tmp in folder.rglob(f"*{ATTEMPT_MARK}*{TMP_SUFFIX}" if attempts_only else f"*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed

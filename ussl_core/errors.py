"""Errors a user can cause. Each carries one readable message naming the file and the cause."""

from __future__ import annotations

import errno
import os


class UsslError(Exception):
    """Base of every error that is shown to a user as one line, never as a traceback."""


class MediaError(UsslError):
    """A file or folder that cannot be read as media (not media, truncated, empty, no frames)."""

    def __init__(self, path: str | os.PathLike, cause: str) -> None:
        self.path = os.fspath(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")

    def __reduce__(self):
        # Rebuilt from (path, cause), not from args: worker processes send it to the parent.
        return type(self), (self.path, self.cause)


class ProjectError(UsslError):
    """A project folder that is missing, not a project, or in a state that forbids the step."""


class ProjectLockedError(ProjectError):
    """Another process holds the project's write lock."""


class SettingsError(UsslError, ValueError):
    """A setting out of range or of the wrong kind (a CLI flag, a GUI form, a JSON value)."""


class NoModelsError(UsslError):
    """A project or folder without trained models (to segment with, or to use as a teacher)."""


# What an operating-system error means to a user, by its errno.
_CAUSES = {
    errno.ENOSPC: "the disk is full; free some space and run the same command again",
    errno.EDQUOT: "the disk quota is exceeded; free some space and run the same command again",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (an immutable or protected file?)",
    errno.ENOENT: "not found",
    errno.ELOOP: "too many symbolic links (a link loop?)",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "already exists (and is not what was expected here)",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EIO: "input/output error (a failing disk or a network file system?)",
}


def describe_os_error(exc: OSError) -> str:
    """One line, `<path>: <cause>`, for an error of the operating system (or of a library that
    raises OSError, as h5py does for a corrupt file)."""
    path = exc.filename if exc.filename is not None else None
    cause = _CAUSES.get(exc.errno) if exc.errno is not None else None
    if cause is None:
        cause = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename2 is not None:
        path = f"{path} -> {exc.filename2}"
    return f"{os.fspath(path)}: {cause}" if path is not None else cause


# What a SQLite error means to a user, by its primary result code (the error's sqlite_errorcode).
_SQLITE_CAUSES = {
    13: _CAUSES[errno.ENOSPC],                                    # SQLITE_FULL
    8: "read-only (the disk, the folder or the file)",            # SQLITE_READONLY
    3: _CAUSES[errno.EACCES],                                     # SQLITE_PERM
    14: "cannot be opened (missing, or a folder without access)", # SQLITE_CANTOPEN
    10: _CAUSES[errno.EIO],                                       # SQLITE_IOERR
    11: "corrupt; `ussl check` says what can be recovered",       # SQLITE_CORRUPT
    26: "not a ussl catalog (another kind of file)",              # SQLITE_NOTADB
    5: "busy: another process holds it; try again when it is done",  # SQLITE_BUSY
}


def describe_catalog_error(catalog: str | os.PathLike | None, exc: Exception) -> str:
    """One line, `<catalog>: <cause>`, for an error SQLite raised on a project's catalog."""
    code = getattr(exc, "sqlite_errorcode", None)
    cause = _SQLITE_CAUSES.get(code & 0xFF) if isinstance(code, int) else None
    where = os.fspath(catalog) if catalog is not None else "the project's catalog"
    return f"{where}: {cause or f'the catalog cannot be read or written ({exc})'}"


def require(condition: bool, message: str) -> None:
    """A settings check: a SettingsError with `message` unless `condition` holds."""
    if not condition:
        raise SettingsError(message)

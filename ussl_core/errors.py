"""Errors a user can cause. Each carries one readable message naming the file and the cause."""

from __future__ import annotations

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

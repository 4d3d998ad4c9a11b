"""The GUI's error boundary: an exception that reaches the event loop becomes one dialog line
(never a traceback on the screen), and its traceback goes to a log file for bug reports."""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

from ussl_core.errors import UsslError, describe_catalog_error, describe_os_error
from ussl_core.store.catalog import CatalogError


def log_path() -> Path:
    """~/.cache/ussl/ussl-gui.log (or $XDG_CACHE_HOME/ussl/...)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ussl" / "ussl-gui.log"


def one_line(exc: BaseException) -> str:
    """What a user reads: the project's own message, the path and cause of an OS error, or the
    kind of a bug and its message."""
    if isinstance(exc, UsslError):
        return str(exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, CatalogError):
        return describe_catalog_error(None, exc)
    return f"{type(exc).__name__}: {exc}"


def write_log(exc_type, exc, tb) -> Path | None:
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            log.writelines(traceback.format_exception(exc_type, exc, tb))
        return path
    except OSError:
        return None


def install(parent_of_dialogs=None) -> None:
    """Route uncaught exceptions on the GUI thread to a dialog and the log file."""
    def hook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log = write_log(exc_type, exc, tb)
        show(one_line(exc), log, parent_of_dialogs() if callable(parent_of_dialogs) else None)

    sys.excepthook = hook


def show(message: str, log: Path | None, parent=None) -> None:
    from PySide6.QtWidgets import QApplication, QMessageBox

    if QApplication.instance() is None:
        print(f"ussl-gui: error: {message}", file=sys.stderr)
        return
    box = QMessageBox(QMessageBox.Warning, "ussl", message, QMessageBox.Ok, parent)
    if log is not None:
        box.setInformativeText(f"The details are in {log} (for a bug report).")
    box.exec()

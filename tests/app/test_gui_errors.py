"""The GUI's error boundary (app.errors): one line for the user, the traceback in a log."""

from __future__ import annotations

import errno
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app import errors  # noqa: E402
from ussl_core.errors import ProjectError  # noqa: E402


def test_one_line_names_path_and_cause():
    assert errors.one_line(ProjectError("/p: locked")) == "/p: locked"
    assert errors.one_line(OSError(errno.EROFS, "Read-only file system", "/p/models")) == \
        "/p/models: read-only file system"
    assert errors.one_line(KeyError("x")) == "KeyError: 'x'"


def test_an_uncaught_error_is_a_dialog_and_a_log_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shown = []
    monkeypatch.setattr(errors, "show", lambda message, log, parent=None: shown.append((message, log)))
    saved = sys.excepthook
    try:
        errors.install()
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/p/arrays/x.h5")
        except OSError:
            sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook = saved
    assert shown == [("/p/arrays/x.h5: the disk is full; free some space and run the same command again",
                      tmp_path / "ussl" / "ussl-gui.log")]
    log = (tmp_path / "ussl" / "ussl-gui.log").read_text()
    assert "Traceback" in log and "No space left on device" in log


def test_background_work_reports_os_errors_and_bugs_as_one_line(qtbot):
    from PySide6.QtWidgets import QWidget

    from app.background import BackgroundCalls
    from app.context import ProjectContext

    def denied(cancel):
        raise PermissionError(errno.EACCES, "Permission denied", "/p/cache")

    def bug(cancel):
        return 1 / 0

    context, owner = ProjectContext(), QWidget()
    qtbot.addWidget(owner)
    calls, errors = BackgroundCalls(context, owner), []
    calls.run("denied", denied, print, errors.append)
    calls.run("bug", bug, print, errors.append)
    qtbot.waitUntil(lambda: len(errors) == 2, timeout=5000)
    assert sorted(errors) == ["/p/cache: permission denied", "ZeroDivisionError: division by zero"]
    context.shutdown()

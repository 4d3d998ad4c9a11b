"""Entry point of the desktop app: `ussl-gui [PROJECT]` or `python -m app [PROJECT]`.

`ussl-gui --job SPEC_JSON` runs one job child (ussl_core.jobs) instead of the GUI: a frozen
bundle has no `python -m`, so there the app starts its job children through its own
executable (app.workers.job_command). The check comes before any Qt import, so a job child
does not load the GUI.

`ussl-gui PROJECT --smoke-test` opens PROJECT, lets the window settle, prints one JSON line
({"opened", "panels", "startup_s", ...}) and exits: 0 when the project opened. The packaging
smoke test runs the bundle this way; recent projects and geometry are not saved to the
user's settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

JOB_FLAG = "--job"
SMOKE_SETTLE_MS = 1500
_IMPORTED_AT = time.monotonic()


def run_job_child(argv: list[str]) -> int:
    """`--job SPEC_JSON`: the same as `python -m ussl_core.jobs SPEC_JSON`."""
    from ussl_core.jobs import main as job_main

    return job_main(argv)


def resources_dir() -> Path:
    """resources/ of the source tree, or of the bundle when frozen (PyInstaller's _MEIPASS)."""
    return Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[1])) / "resources"


def seconds_since_start() -> float:
    """Seconds since this process started (Linux /proc); else since this module was imported."""
    try:
        import os

        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED_AT


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [JOB_FLAG]:
        return run_job_child(argv[1:])
    parser = argparse.ArgumentParser(prog="ussl-gui", description="ussl desktop application")
    parser.add_argument("project", nargs="?", help="project folder to open")
    parser.add_argument("--smoke-test", action="store_true",
                        help="open PROJECT, print one JSON line about the window and exit")
    args = parser.parse_args(argv)

    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    if args.smoke_test:
        _isolate_settings()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("ussl")
    app.setOrganizationName("ussl")
    icons = resources_dir() / "icons"
    icon = QIcon()
    for png in sorted(icons.glob("hicolor/*/apps/ussl.png")):
        icon.addFile(str(png))
    if not icon.isNull():
        app.setWindowIcon(icon)

    if args.smoke_test:
        return _smoke_test(app, args.project)

    from app import errors
    from app.window import MainWindow

    window = MainWindow()
    errors.install(lambda: window)   # an uncaught error: a dialog and the log, never a traceback
    if args.project:
        window.open_project(args.project)
    window.show()
    return app.exec()


def _isolate_settings() -> None:
    """Keep a smoke run's QSettings (recent projects, geometry) out of the user's."""
    import tempfile

    from PySide6.QtCore import QSettings

    folder = tempfile.mkdtemp(prefix="ussl-smoke-settings-")
    for fmt in (QSettings.NativeFormat, QSettings.IniFormat):
        QSettings.setPath(fmt, QSettings.UserScope, folder)


def _smoke_test(app, project: str | None) -> int:
    from PySide6.QtCore import QTimer

    from app.window import MainWindow
    from ussl_core.errors import UsslError
    from ussl_core.store import Project

    report: dict = {"opened": None}
    if project:
        try:  # checked first: a failed open in the window is a modal dialog, which would hang here
            Project.open(project).close()
        except UsslError as exc:
            print(json.dumps({"opened": None, "error": str(exc)}), flush=True)
            return 1
    window = MainWindow()
    if project and window.open_project(project):
        report["opened"] = str(window.context.root)
    window.show()

    def started() -> None:  # the first turn of the event loop: the window is up
        report["startup_s"] = round(seconds_since_start(), 3)

    def finish() -> None:
        report["panels"] = [window.tabs.tabText(i) for i in range(window.tabs.count())]
        report["window_title"] = window.windowTitle()
        report["frozen"] = bool(getattr(sys, "frozen", False))
        window.close()
        app.exit(0 if report["opened"] or not project else 1)

    QTimer.singleShot(0, started)
    QTimer.singleShot(SMOKE_SETTLE_MS, finish)
    code = app.exec()
    print(json.dumps(report), flush=True)
    return code

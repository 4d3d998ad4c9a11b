"""Entry point of the desktop app: `ussl-gui [PROJECT]` or `python -m app [PROJECT]`."""

from __future__ import annotations

import argparse
import sys

from PySide6.QtWidgets import QApplication

from app.window import MainWindow


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="ussl-gui", description="ussl desktop application")
    parser.add_argument("project", nargs="?", help="project folder to open")
    args = parser.parse_args(argv)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("ussl")
    app.setOrganizationName("ussl")
    window = MainWindow()
    if args.project:
        window.open_project(args.project)
    window.show()
    return app.exec()

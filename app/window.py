"""The main window: project open/close and the start page. Panels arrive with issue #4."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QLabel, QMainWindow, QMessageBox, QPushButton,
                               QVBoxLayout, QWidget)

from ussl_core.errors import UsslError
from ussl_core.store import Project


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.project: Project | None = None
        self.resize(1100, 720)
        self._build_menu()
        self._show_start_page()
        self._update_title()

    def _build_menu(self) -> None:
        menu = self.menuBar().addMenu("&File")
        for text, shortcut, slot in (("&New project...", QKeySequence.New, self.new_project_dialog),
                                     ("&Open project...", QKeySequence.Open, self.open_project_dialog),
                                     ("&Close project", QKeySequence.Close, self.close_project),
                                     ("&Quit", QKeySequence.Quit, self.close)):
            action = QAction(text, self)
            action.setShortcut(shortcut)
            action.triggered.connect(slot)
            menu.addAction(action)

    def _show_start_page(self) -> None:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setAlignment(Qt.AlignCenter)
        title = QLabel("<h2>ussl</h2><p>Unsupervised learning of foreground segmentation from video</p>")
        title.setAlignment(Qt.AlignCenter)
        layout.addWidget(title)
        for text, slot in (("New project...", self.new_project_dialog),
                           ("Open project...", self.open_project_dialog)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            layout.addWidget(button)
        self.setCentralWidget(page)

    def _show_project_page(self) -> None:
        assert self.project is not None
        videos = self.project.videos()
        label = QLabel(f"<h3>{self.project.root.name}</h3><p>{len(videos)} videos, "
                       f"{sum(v.frame_count for v in videos)} frames</p>")
        label.setAlignment(Qt.AlignCenter)
        self.setCentralWidget(label)

    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.project.root.name} — ussl" if self.project else "ussl")

    def open_project(self, path: str | Path) -> bool:
        try:
            project = Project.open(path)
        except UsslError as exc:
            QMessageBox.warning(self, "Cannot open project", str(exc))
            return False
        self.close_project()
        self.project = project
        self._show_project_page()
        self._update_title()
        return True

    def new_project_dialog(self) -> None:
        path = QFileDialog.getSaveFileName(self, "New project folder")[0]
        if path:
            try:
                Project.create(path).close()
            except UsslError as exc:
                QMessageBox.warning(self, "Cannot create project", str(exc))
                return
            self.open_project(path)

    def open_project_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project folder")
        if path:
            self.open_project(path)

    def close_project(self) -> None:
        if self.project is not None:
            self.project.close()
            self.project = None
            self._show_start_page()
            self._update_title()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.close_project()
        super().closeEvent(event)

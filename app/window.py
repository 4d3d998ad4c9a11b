"""The main window: project New/Open/Recent/Close, the panels as tabs, and a status bar with
the device, the running job, its progress and Cancel."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QLabel, QMainWindow, QMessageBox, QProgressBar,
                               QPushButton, QStackedWidget, QTabWidget, QVBoxLayout, QWidget)

from app.context import ProjectContext
from app.gc_policy import freeze_long_lived
from app.widgets.drops import dropped_paths
from app.widgets.job_progress import EtaEstimator, eta_text
from ussl_core.builtin import builtin_available
from ussl_core.errors import UsslError
from ussl_core.media import IMAGE_EXTENSIONS
from ussl_core.progress import Progress
from ussl_core.store import Project

MAX_RECENT = 8


def panel_classes() -> list[type]:
    """The panels, in tab order (each: QWidget(context) with a `title`)."""
    from app.panels import registry

    return registry.PANELS


class MainWindow(QMainWindow):
    def __init__(self, context: ProjectContext | None = None) -> None:
        super().__init__()
        self.context = context or ProjectContext(self)
        self.settings = QSettings("ussl", "ussl")
        self._predict_only = False   # the Predict panel shown for images, without a project
        self.resize(1280, 800)
        self._stack = QStackedWidget()
        self._stack.addWidget(self._start_page())
        self.tabs = QTabWidget()
        self.panels = [cls(self.context) for cls in panel_classes()]
        for panel in self.panels:
            self.tabs.addTab(panel, panel.title)
        self._stack.addWidget(self.tabs)
        self.setCentralWidget(self._stack)
        self.setAcceptDrops(True)   # drops on panels that take none land here (see dropEvent)
        self._build_menu()
        self._build_status_bar()
        self.context.project_changed.connect(self._project_changed)
        self.context.job_started.connect(self._job_started)
        self.context.job_progress.connect(self._job_progress)
        self.context.job_finished.connect(self._job_finished)
        self.context.job_error.connect(self._job_error)
        self._project_changed()
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        self.tabs.setCurrentIndex(int(self.settings.value("window/panel", 0) or 0))
        freeze_long_lived()   # see app.gc_policy: full collections would stall the GUI

    # ------------------------------------------------------------------ layout
    def _start_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setAlignment(Qt.AlignCenter)
        title = QLabel("<h2>ussl</h2><p>Unsupervised learning of foreground segmentation from video</p>")
        title.setAlignment(Qt.AlignCenter)
        layout.addWidget(title)
        for text, slot in (("New project...", self.new_project_dialog),
                           ("Open project...", self.open_project_dialog),
                           ("Open the sample project", self.open_sample_project)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            button.setMinimumWidth(260)
            layout.addWidget(button, 0, Qt.AlignCenter)
        self.sample_button = button
        self.segment_button = QPushButton("Segment images...")
        self.segment_button.setMinimumWidth(260)
        self.segment_button.clicked.connect(self.segment_images_dialog)
        layout.addWidget(self.segment_button, 0, Qt.AlignCenter)
        self.drop_hint = QLabel("Or drop images here: the models shipped with ussl segment them, "
                                "no project needed.")
        self.drop_hint.setAlignment(Qt.AlignCenter)
        layout.addWidget(self.drop_hint)
        shipped = builtin_available()
        self.segment_button.setVisible(shipped)
        self.drop_hint.setVisible(shipped)
        self.start_message = QLabel("")
        self.start_message.setAlignment(Qt.AlignCenter)
        layout.addWidget(self.start_message)
        return page

    def _build_menu(self) -> None:
        menu = self.menuBar().addMenu("&File")
        for text, shortcut, slot in (("&New project...", QKeySequence.New, self.new_project_dialog),
                                     ("&Open project...", QKeySequence.Open, self.open_project_dialog)):
            menu.addAction(self._action(text, shortcut, slot))
        self.recent_menu = menu.addMenu("Open &recent")
        self._fill_recent()
        menu.addAction(self._action("Open the &sample project", "Ctrl+Shift+S", self.open_sample_project))
        menu.addAction(self._action("&Close project", QKeySequence.Close, self.close_project))
        self.check_action = self._action("C&heck project...", None, self.check_project)
        menu.addAction(self.check_action)
        menu.addSeparator()
        menu.addAction(self._action("&Quit", QKeySequence.Quit, self.close))
        view = self.menuBar().addMenu("&View")
        for i, panel in enumerate(self.panels):   # Alt+1 .. Alt+n switch panels
            view.addAction(self._action(panel.title, f"Alt+{i + 1}",
                                        lambda checked=False, i=i: self.tabs.setCurrentIndex(i)))
        jobs = self.menuBar().addMenu("&Job")
        self.cancel_action = self._action("&Cancel the running job", "Ctrl+.", self.context.cancel_job)
        self.cancel_action.setEnabled(False)
        jobs.addAction(self.cancel_action)
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("main-toolbar")
        toolbar.setMovable(False)
        for text, slot in (("New", self.new_project_dialog), ("Open", self.open_project_dialog),
                           ("Close", self.close_project)):
            toolbar.addAction(text, slot)
        toolbar.addSeparator()
        toolbar.addAction(self.cancel_action)

    # ------------------------------------------------------------------ integrity
    def check_project(self):
        """Look for missing or corrupt shards, models and checkpoints in a thread; report them
        and offer the repair (a job: broken files to quarantine/, recomputed)."""
        from ussl_core.store.integrity import Problem, check_project

        if self.context.project is None:
            return None
        root = self.context.root

        def events(cancel):
            from ussl_core.store import Project

            with Project.open(root) as project:
                found = [p for p in check_project(project, cancel) if isinstance(p, Problem)]
            yield Progress(1, 1, "checked", {"problems": found})

        worker = self.context.run_light(events, self._checked)
        worker.error.connect(lambda message, details: QMessageBox.warning(self, "Check project", message))
        return worker

    def _checked(self, event) -> None:
        problems = event.metrics["problems"]
        root = self.context.root
        if not problems:
            QMessageBox.information(self, "Check project", "Every shard, model and checkpoint is sound.")
            return
        lines = "\n".join(p.line(root) for p in problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        box = QMessageBox(QMessageBox.Warning, "Check project",
                          f"{len(problems)} problem(s) found:\n\n{lines}{more}", parent=self)
        box.setInformativeText("Repair moves the broken files to quarantine/ (nothing is deleted), "
                               "stores the frames again and says what to run for the masks.")
        repair = box.addButton("Repair", QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Close)
        self._check_box = box   # tests answer it
        box.exec()
        if box.clickedButton() is repair:
            from ussl_core.steps import RepairStep

            self.context.run_job(RepairStep())

    def _action(self, text: str, shortcut, slot) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(slot)
        return action

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.device_label = QLabel(device_description())
        self.job_label = QLabel("")
        self.job_progress = QProgressBar()
        self.job_progress.setMaximumWidth(220)
        self.job_progress.hide()
        self.job_eta = QLabel("")
        self._eta = EtaEstimator()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.context.cancel_job)
        self.cancel_button.hide()
        bar.addWidget(self.job_label, 1)
        bar.addPermanentWidget(self.job_progress)
        bar.addPermanentWidget(self.job_eta)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.device_label)

    # ------------------------------------------------------------------ project
    def _project_changed(self) -> None:
        root = self.context.root
        self.setWindowTitle(f"{root.name} — ussl" if root else "ussl")
        if root is not None:
            self._predict_only = False
        self._show_panels()

    def _show_panels(self) -> None:
        """The start page without a project, unless images were given to segment: then the
        Predict panel alone (the other panels need a project)."""
        has_project = self.context.root is not None
        self._stack.setCurrentIndex(1 if has_project or self._predict_only else 0)
        for i, panel in enumerate(self.panels):
            self.tabs.setTabEnabled(i, has_project or panel.title == "Predict")

    def segment_without_project(self, paths: list[Path]) -> None:
        """Show the Predict panel with these images, segmented by the shipped models."""
        self._predict_only = True
        self._show_panels()
        predict = next(panel for panel in self.panels if panel.title == "Predict")
        self.tabs.setCurrentWidget(predict)
        predict.add_paths(paths)

    def segment_images_dialog(self) -> None:
        patterns = " ".join(f"*{ext}" for ext in sorted(IMAGE_EXTENSIONS))
        paths, _ = QFileDialog.getOpenFileNames(self, "Images to segment", "", f"Images ({patterns})")
        if paths:
            self.segment_without_project([Path(p) for p in paths])

    def open_project(self, path: str | Path) -> bool:
        try:
            self.context.open(path)
        except UsslError as exc:
            QMessageBox.warning(self, "Cannot open project", str(exc))
            return False
        self._remember(str(self.context.root))
        return True

    @property
    def project(self) -> Project | None:
        return self.context.project

    def new_project_dialog(self) -> None:
        path = QFileDialog.getSaveFileName(self, "New project folder")[0]
        if path:
            try:
                Project.create(path).close()
            except UsslError as exc:
                QMessageBox.warning(self, "Cannot create project", str(exc))
                return
            self.open_project(path)

    def sample_project_root(self) -> Path:
        base = QStandardPaths.writableLocation(QStandardPaths.AppDataLocation) or str(Path.home() / ".ussl")
        return Path(base) / "sample" / "project"

    def open_sample_project(self) -> None:
        """Open the embedded generated sample, making it first (in a job) if needed."""
        root = self.sample_project_root()
        if (root / "project.sqlite").exists() and self._sample_ready(root):
            self.open_project(root)
            return
        root.parent.mkdir(parents=True, exist_ok=True)
        worker = self.context.run_job({"kind": "sample", "project": str(root)})
        if worker is None:
            self.start_message.setText("A job is running; try again when it ends.")
            return
        self.sample_button.setEnabled(False)
        self.start_message.setText("Making the sample project (generated videos, teacher masks)\u2026")
        worker.result.connect(lambda _: self._sample_made(root))
        worker.error.connect(lambda *_: self.sample_button.setEnabled(True))
        worker.cancelled.connect(lambda: self.sample_button.setEnabled(True))

    @staticmethod
    def _sample_ready(root: Path) -> bool:
        try:
            with Project.open(root) as project:
                return project.active_selection() is not None
        except UsslError:
            return False

    def _sample_made(self, root: Path) -> None:
        self.sample_button.setEnabled(True)
        self.start_message.setText("")
        self.open_project(root)

    def open_project_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project folder")
        if path:
            self.open_project(path)

    def close_project(self) -> None:
        self._predict_only = False
        if self.context.root is None:
            self._show_panels()   # leaving the Predict panel of images without a project
        self.context.close()

    def _remember(self, path: str) -> None:
        recent = [p for p in (self.settings.value("recent", []) or []) if p != path]
        self.settings.setValue("recent", [path, *recent][:MAX_RECENT])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.value("recent", []) or []:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda checked=False, p=path: self.open_project(p))
        self.recent_menu.setEnabled(bool(self.recent_menu.actions()))

    # ------------------------------------------------------------------ jobs
    def _job_started(self, kind: str) -> None:
        self.job_label.setText(f"{kind}: starting")
        self.job_progress.setRange(0, 0)
        self.job_progress.show()
        self.cancel_button.show()
        self.cancel_action.setEnabled(True)
        self._eta.reset()

    def _job_progress(self, event) -> None:
        self.job_progress.setRange(0, max(event.total, 1))
        self.job_progress.setValue(min(event.done, max(event.total, 1)))
        self.job_label.setText(f"{event.stage or 'job'}: {event.message}")
        self.job_eta.setText(eta_text(self._eta, event.done, event.total))

    def _job_finished(self, kind: str, outcome: str) -> None:
        self.job_progress.hide()
        self.cancel_button.hide()
        self.cancel_action.setEnabled(False)
        self.job_eta.setText("")
        self.job_label.setText(f"{kind}: {outcome}")

    def _job_error(self, message: str, details: str) -> None:
        box = QMessageBox(QMessageBox.Warning, "The job failed", message, parent=self)
        box.setInformativeText("Completed work is kept; fix the cause and run it again to continue.")
        if details:
            box.setDetailedText(details)
        box.open()

    # ------------------------------------------------------------------ drops
    def _accepts(self, paths: list[Path]) -> bool:
        """With a project anything (images to Predict, the rest to Videos); without one,
        images to segment with the shipped models."""
        if not paths:
            return False
        return self.context.project is not None or (_all_images(paths) and builtin_available())

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if self._accepts(dropped_paths(event)):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802
        """Images go to the Predict panel; videos and folders are added to the project."""
        self.drop_paths(dropped_paths(event), event)

    def drop_paths(self, paths: list[Path], event=None) -> bool:
        """What a drop of these paths does (also for scripts and tests); False if refused."""
        if not self._accepts(paths):
            if event is not None:
                event.ignore()
            return False
        if event is not None:
            event.acceptProposedAction()
        if self.context.project is None:
            self.segment_without_project(paths)
            return True
        by_title = {panel.title: panel for panel in self.panels}
        target = by_title["Predict"] if _all_images(paths) else by_title["Videos"]
        self.tabs.setCurrentWidget(target)
        target.add_paths(paths)
        return True

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/panel", self.tabs.currentIndex())
        self.context.shutdown()
        super().closeEvent(event)


def _all_images(paths: list[Path]) -> bool:
    return all(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in paths)


def device_description() -> str:
    """CPU or the GPU's name, without importing TensorFlow in the GUI process."""
    try:
        import subprocess

        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=2).stdout.strip()
        if names:
            return "GPU: " + names.splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return "CPU"

"""The Videos panel: the project's sources, adding more, running the teacher, and a frame viewer.

Everything that writes goes through `context.run_job` (a child process); everything that reads
more than a row or two (the table's counts, frames, masks, ground truth) runs in a thread through
BackgroundCalls with its own short-lived read-only `Project.open` (ussl_core.views.videos), so
the GUI thread only ever applies finished results.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFrame, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QMessageBox, QProgressBar, QPushButton,
                               QScrollArea, QSpinBox, QSplitter, QToolButton, QVBoxLayout,
                               QWidget)

from app.background import BackgroundCalls
from app.context import StoreChange
from app.panels.videos_table import VideosTable
from app.panels.videos_viewer import VideoViewer
from app.style import BUSY_TIP, NO_PROJECT_TIP
from app.widgets.drops import dropped_paths
from app.widgets.job_progress import EtaEstimator, eta_text, format_duration
from app.widgets.settings_form import SettingsForm
from ussl_core.cluster import parse_cluster
from ussl_core.errors import SettingsError
from ussl_core.media import VIDEO_EXTENSIONS
from ussl_core.progress import Progress
from ussl_core.steps import AddStep, TeacherStep
from ussl_core.store.project import Producer
from ussl_core.teacher import TEACHERS
from ussl_core.teacher.runner import producer_name
from ussl_core.views.videos import (PanelState, StateRequest, VideoDetail, VideoRow, plan_adds,
                                    read_state)


class VideosPanel(QWidget):
    title = "Videos"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.setAcceptDrops(True)
        self._root: Path | None = None
        self._rows: list[VideoRow] = []
        self._producers: list[Producer] = []
        self.calls = BackgroundCalls(context, self)
        self._queue: list[AddStep] = []          # add steps waiting for the running one
        self._job_kind: str | None = None        # a job this panel started, while it runs
        self._job_started = 0.0
        self._eta = EtaEstimator()
        self._form_synced: tuple | None = None
        self.form: SettingsForm | None = None

        self._build()

        context.project_changed.connect(self._project_changed)
        context.changed.connect(self._store_changed)
        context.busy_changed.connect(self._update_actions)
        context.job_progress.connect(self._job_progress)
        context.job_finished.connect(self._job_finished)
        self._project_changed()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.setSpacing(4)

        bar = QHBoxLayout()
        bar.setSpacing(4)
        self.add_videos_button = QPushButton("Add videos\u2026")
        self.add_videos_button.clicked.connect(self.add_videos_dialog)
        self.add_folder_button = QPushButton("Add folder\u2026")
        self.add_folder_button.clicked.connect(self.add_folder_dialog)
        self.images_check = QCheckBox("Folder holds unrelated images")
        self.images_check.setToolTip("Checked: each image of an added folder is its own item "
                                     "(an image collection), not a frame of a video")
        self.busy_label = QLabel("")
        self.busy_label.setStyleSheet("color: #b07000;")
        hint = QLabel("or drop videos and folders here")
        hint.setStyleSheet("color: gray;")
        for widget in (self.add_videos_button, self.add_folder_button, self.images_check, hint):
            bar.addWidget(widget)
        bar.addStretch(1)
        bar.addWidget(self.busy_label)
        outer.addLayout(bar)

        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self._build_left())
        self.viewer = VideoViewer(self.context)
        self.viewer.producer_changed.connect(self.request_state)
        viewer = self.viewer   # its widgets, under the names the panel has always given them
        self.view, self.slider, self.frame_label = viewer.view, viewer.slider, viewer.frame_label
        self.play_button, self.producer_combo = viewer.play_button, viewer.producer_combo
        self.opacity_slider, self.side_check, self.gt_check = (
            viewer.opacity_slider, viewer.side_check, viewer.gt_check)
        self.splitter.addWidget(self.viewer)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setSizes([460, 700])
        outer.addWidget(self.splitter, 1)

    def _build_left(self) -> QWidget:
        left = QWidget()
        layout = QVBoxLayout(left)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)

        self.table = VideosTable()
        self.model = self.table.videos
        self.table.video_chosen.connect(self._video_chosen)
        layout.addWidget(self.table, 1)

        box = QGroupBox("Teacher")
        box_layout = QVBoxLayout(box)
        box_layout.setContentsMargins(6, 4, 6, 6)
        box_layout.setSpacing(4)
        row = QHBoxLayout()
        row.setSpacing(4)
        self.teacher_combo = QComboBox()
        self.teacher_combo.addItems(list(TEACHERS))
        self.teacher_combo.setToolTip("videopca: the paper's generation-1 teacher; "
                                      "mog2: a background-subtraction baseline")
        self.teacher_combo.currentTextChanged.connect(self._teacher_changed)
        self.workers_spin = QSpinBox()
        cpus = os.cpu_count() or 1
        self.workers_spin.setRange(1, max(cpus, 1))
        self.workers_spin.setValue(max(1, cpus - 1))
        self.workers_spin.setToolTip("Worker processes: shots are computed in parallel")
        self.defaults_button = QToolButton()
        self.defaults_button.setText("Defaults")
        self.defaults_button.setToolTip("Reset the settings to the paper's values")
        self.defaults_button.clicked.connect(lambda: self.form and self.form.reset())
        self.run_button = QPushButton("Run teacher")
        self.run_button.setDefault(False)
        self.run_button.clicked.connect(self.run_teacher)
        for widget in (QLabel("Teacher"), self.teacher_combo, QLabel("Workers"), self.workers_spin):
            row.addWidget(widget)
        row.addStretch(1)
        row.addWidget(self.defaults_button)
        row.addWidget(self.run_button)
        box_layout.addLayout(row)
        box_layout.addLayout(self._build_cluster_row())

        self.form_area = QScrollArea()
        self.form_area.setWidgetResizable(True)
        self.form_area.setFrameShape(QFrame.NoFrame)
        self.form_area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.form_area.setStyleSheet("QScrollArea, QScrollArea > QWidget > QWidget "
                                     "{ background: transparent; }")
        box_layout.addWidget(self.form_area)

        progress = QHBoxLayout()
        progress.setSpacing(6)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setMaximumHeight(16)
        self.eta_label = QLabel("")
        self.eta_label.setMinimumWidth(90)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_job)
        progress.addWidget(self.progress_bar, 1)
        progress.addWidget(self.eta_label)
        progress.addWidget(self.cancel_button)
        self.progress_row = QWidget()
        self.progress_row.setLayout(progress)
        progress.setContentsMargins(0, 0, 0, 0)
        self.progress_row.hide()
        box_layout.addWidget(self.progress_row)
        self.dashboard_label = QLabel("")   # the Dask dashboard's link while a cluster job runs
        self.dashboard_label.setOpenExternalLinks(True)
        self.dashboard_label.hide()
        box_layout.addWidget(self.dashboard_label)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet("color: gray;")
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        box_layout.addWidget(self.status_label)
        layout.addWidget(box)
        self._teacher_changed(self.teacher_combo.currentText())
        return left

    def _build_cluster_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(4)
        self.cluster_edit = QLineEdit(os.environ.get("USSL_CLUSTER", ""))
        self.cluster_edit.setPlaceholderText("this machine  (or tcp://host:8786, local:4)")
        self.cluster_edit.setToolTip(
            "Run the shots on Dask: a running scheduler's address (tcp://host:8786), or local:N for "
            "N worker processes here. Every worker must see the project folder and the videos at "
            "the same paths (docs/scale-out.md). Empty: this machine's worker processes.")
        self.cluster_edit.textChanged.connect(
            lambda text: self.workers_spin.setEnabled(not text.strip()))
        self.workers_spin.setEnabled(not self.cluster_edit.text().strip())
        row.addWidget(QLabel("Cluster"))
        row.addWidget(self.cluster_edit, 1)
        return row

    def _cluster(self) -> str | None:
        """The cluster field, checked; None when empty. A bad address is said in the status line."""
        text = self.cluster_edit.text().strip()
        if not text:
            return None
        try:
            parse_cluster(text)
        except SettingsError as exc:
            self.status_label.setText(str(exc))
            return ""
        return text

    # ------------------------------------------------------------------ project and state
    def _project_changed(self) -> None:
        self._root = self.context.root
        self.calls.forget()
        self.viewer.set_project(self._root)
        self._rows, self._producers = [], []
        self.table.select_video(None)
        self._queue.clear()
        self._form_synced = None
        self.model.set_rows([], self._teacher_producer())
        self.status_label.setText("")
        self._update_actions()
        self.request_state()

    def _teacher_producer(self) -> str:
        return producer_name(self.teacher_combo.currentText())

    def request_state(self) -> None:
        """Re-read the table and the selected video's index in a thread (coalesced)."""
        if self._root is None:
            return
        request = StateRequest(self._root, self._teacher_producer(), self.table.selected,
                               self.viewer.producer())
        self.calls.run("state", lambda _cancel: read_state(request), self._apply_state,
                       self.status_label.setText, coalesce=True)

    def _apply_state(self, state: PanelState) -> None:
        asked = state.request
        self._rows, self._producers = state.rows, state.producers
        self.model.set_rows(state.rows, asked.teacher_producer)
        self.viewer.set_producers(state.producers, self._teacher_producer())
        self._sync_form()
        current = self.table.selected
        if current is None or self.model.row_of(current) < 0:
            current = state.rows[0].id if state.rows else None
        self._select_row(current)
        if (current != asked.video_id or asked.viewer_producer != self.viewer.producer()
                or asked.teacher_producer != self._teacher_producer()):
            self.request_state()   # the selection moved on meanwhile
            return
        self._apply_detail(state.detail)
        self._update_actions()

    def _select_row(self, video_id: int | None) -> None:
        self.table.select_video(video_id)
        if video_id is None:
            self._apply_detail(None)

    def _video_chosen(self, _video_id: int) -> None:
        self.viewer.set_playing(False)
        self.request_state()

    def _apply_detail(self, detail: VideoDetail | None) -> None:
        self.viewer.show_detail(detail, "Select a video" if self._rows else
                                "Add videos: the buttons above, or drop files here")

    def _sync_form(self) -> None:
        """Show the settings the existing masks of the chosen teacher were made with (once)."""
        key = (self._root, self.teacher_combo.currentText())
        if self._form_synced == key or self.form is None:
            return
        self._form_synced = key
        existing = {p.name: p for p in self._producers}.get(self._teacher_producer())
        if existing is not None:
            known = set(self.form.field_names())
            self.form.set_values({k: v for k, v in existing.settings.items() if k in known})

    def _teacher_changed(self, name: str) -> None:
        # (setWidget deletes the previous form)
        self.form = SettingsForm(TEACHERS[name].settings_type, columns=2)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form_area.setWidget(self.form)
        rows = (len(self.form.field_names()) + 1) // 2
        self.form_area.setFixedHeight(min(rows, 6) * 27 + 4)
        self._form_synced = None
        if self._producers:
            self._sync_form()
        self.request_state()

    # ------------------------------------------------------------------ adding
    def _can_write(self) -> bool:
        return self.context.project is not None and not self.context.busy

    def add_videos_dialog(self) -> None:
        patterns = " ".join(f"*{ext}" for ext in sorted(VIDEO_EXTENSIONS))
        paths, _ = QFileDialog.getOpenFileNames(self, "Add videos", "",
                                                f"Videos ({patterns});;All files (*)")
        if paths:
            self.add_paths([Path(p) for p in paths])

    def add_folder_dialog(self) -> None:
        what = ("image collection" if self.images_check.isChecked()
                else "folder of frames, of videos, or a DAVIS root")
        path = QFileDialog.getExistingDirectory(self, f"Add a {what}")
        if path:
            self.add_paths([Path(path)])

    def add_paths(self, paths: list[Path]) -> list[AddStep]:
        """Start adding files and folders: videos, frame folders, image folders, DAVIS roots
        and folders of footage (each of their videos and frame folders; the job expands them).

        Returns the steps (the first starts now, the others when it ends)."""
        plan = plan_adds(paths, images=self.images_check.isChecked())
        specs, message = plan.steps, plan.message
        if not specs:
            self.status_label.setText(message or "Nothing to add")
            return []
        if not self._can_write():
            self.status_label.setText(BUSY_TIP if self.context.busy else NO_PROJECT_TIP)
            return []
        self._queue = specs[1:]
        self._start_job(specs[0])
        if message:
            self.status_label.setText(message)
        return specs

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if dropped_paths(event) and self._can_write():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = dropped_paths(event)
        if not paths or not self._can_write():
            event.ignore()
            return
        event.acceptProposedAction()
        self.add_paths(paths)

    # ------------------------------------------------------------------ the teacher
    def run_teacher(self) -> TeacherStep | None:
        if not self._can_write() or self.form is None:
            return None
        cluster = self._cluster()
        if cluster == "":
            return None
        name = self.teacher_combo.currentText()
        settings = self.form.values()
        replace = False
        existing = {p.name: p for p in self._producers}.get(producer_name(name))
        done = sum(r.masks for r in self._rows)
        if existing is not None and existing.settings != settings and done:
            decided = len(self.context.project.decisions(existing.id)) if self.context.project else 0
            also = (f"\n\nThis also discards the {decided} approve/reject decision(s) made on them "
                    f"(to keep a copy first: ussl decisions {self.context.project.root} --export FILE.csv)."
                    if decided else "")
            answer = QMessageBox.question(
                self, "Replace the teacher's masks?",
                f"{existing.name} masks were computed with other settings. Discard them and "
                f"compute all masks again with these settings?{also}",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes:
                return None
            replace = True
        step = TeacherStep(name, settings, self.workers_spin.value(), replace, discard_decisions=replace,
                           cluster=cluster)
        return step if self._start_job(step) else None

    # ------------------------------------------------------------------ jobs
    def _start_job(self, step) -> bool:
        if self.context.run_job(step) is None:
            self.status_label.setText(BUSY_TIP if self.context.busy else NO_PROJECT_TIP)
            return False
        self._job_kind = step.kind
        self._job_started = time.monotonic()
        self._eta.reset()
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat(f"{step.kind}: starting")
        self.eta_label.setText("")
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Cancel")
        self.progress_row.show()
        self.status_label.setText("")
        return True

    def cancel_job(self) -> None:
        self._queue.clear()
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling\u2026")
        self.context.cancel_job()

    def _job_progress(self, event: Progress) -> None:
        if self._job_kind is None:
            return
        now = time.monotonic()
        total = max(event.total, 1)
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(min(event.done, total))
        unit = "frames" if event.stage in ("teacher", "frames") else ""
        self.progress_bar.setFormat(f"%v / %m {unit}".rstrip())
        dashboard = event.metrics.get("dashboard") if event.metrics else None
        if dashboard:
            self.dashboard_label.setText(f'Dask dashboard: <a href="{dashboard}">{dashboard}</a>')
            self.dashboard_label.show()
        fps = event.metrics.get("frames_per_s") if event.metrics else None
        self.status_label.setText(event.message + (f"  \u00b7  {fps:.1f} frames/s" if fps else ""))
        self.eta_label.setText(eta_text(self._eta, event.done, event.total, now))

    def _store_changed(self, change: StoreChange) -> None:
        """Re-read the rows when a job or a panel wrote the store; while a job runs, as its
        videos and masks land (the context looks at most once a second)."""
        if not change.live or change.touches({"videos", "masks"}):
            self.request_state()

    def _job_finished(self, kind: str, outcome: str) -> None:
        self.viewer.forget_masks()
        if self._job_kind is None:
            return
        elapsed = format_duration(time.monotonic() - self._job_started)
        self._job_kind = None
        self.progress_row.hide()
        self.dashboard_label.hide()
        self.status_label.setText({
            "done": f"{kind}: done in {elapsed}",
            "cancelled": f"{kind}: cancelled after {elapsed}; completed work is kept, "
                         "run it again to continue",
            "failed": f"{kind}: failed; completed work is kept",
        }.get(outcome, f"{kind}: {outcome}"))
        if outcome == "done" and self._queue:
            self._start_job(self._queue.pop(0))
        else:
            self._queue.clear()
        self._update_actions()

    def _update_actions(self, *_args) -> None:
        has_project = self.context.project is not None
        busy = self.context.busy
        tip = NO_PROJECT_TIP if not has_project else (BUSY_TIP if busy else "")
        for button, normal in ((self.add_videos_button, "Add video files to the project"),
                               (self.add_folder_button, "Add a folder of frames, an image folder "
                                                        "or a DAVIS root"),
                               (self.run_button, "Compute the teacher's soft masks for every shot "
                                                 "without them (a re-run continues)")):
            button.setEnabled(has_project and not busy)
            button.setToolTip(tip or normal)
        self.busy_label.setText("A job is running: adding and the teacher wait for it"
                                if busy else "")

    def closeEvent(self, event) -> None:  # noqa: N802
        self.viewer.set_playing(False)
        super().closeEvent(event)

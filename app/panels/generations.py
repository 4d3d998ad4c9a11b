"""The Generations panel: where the project stands in Algorithm 1 (one row per generation: its
teacher, selection, students, EvalSeg-Net, ensembles) and the buttons for the next step: train
EvalSeg-Net, add unlabeled data, start the next generation. Each runs as a job (child process).

The overview is a few catalog rows and small JSON cards: cheap enough to read on refresh.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QFileDialog, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QListWidget, QPushButton, QSpinBox,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.style import BUSY_TIP
from app.widgets.job_progress import JobProgressView
from app.widgets.settings_form import SettingsForm
from ussl_core.builtin import builtin_available
from ussl_core.evalseg import evalseg_settings
from ussl_core.generations import GenerationSettings, GenerationStatus, generation_overview
from ussl_core.progress import Progress
from ussl_core.steps import AddStep, EvalSegStep, NextGenerationStep
from ussl_core.store import model_files

COLUMNS = ("Generation", "Teacher", "Selection", "Students", "EvalSeg-Net", "Ensembles", "Next step")
OUR_JOBS = ("evalseg", "next_generation", "add")


class GenerationsPanel(QWidget):
    title = "Generations"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.overview: list[GenerationStatus] = []
        self._job_kind: str | None = None

        self.headline = QLabel("")
        self.headline.setTextFormat(Qt.RichText)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)

        self.evalseg_epochs = QSpinBox()
        self.evalseg_epochs.setRange(1, 1000)
        self.evalseg_epochs.setValue(evalseg_settings().epochs)
        self.evalseg_button = QPushButton("Train EvalSeg-Net")
        self.generation_form = SettingsForm(GenerationSettings, columns=3)
        self.sources_list = QListWidget()
        self.sources_list.setMaximumHeight(90)
        self.sources_list.setToolTip("Unlabeled videos or folders that join with the next generation")
        self.davis_box = QCheckBox("Folders are DAVIS roots")
        self.add_source_button = QPushButton("Add folder\u2026")
        self.add_video_button = QPushButton("Add video\u2026")
        self.remove_source_button = QPushButton("Remove")
        self.add_now_button = QPushButton("Add to the project now")
        self.next_button = QPushButton("Start the next generation")
        self.builtin_button = QPushButton("Start from the built-in models")
        self.builtin_button.setToolTip(
            "The compact students and EvalSeg-Net shipped with ussl become this project's generation 1 "
            "and the teacher of generation 2: no training needed first")
        self.cancel_button = QPushButton("Cancel")
        self.progress = JobProgressView()
        self._layout()

        self.evalseg_button.clicked.connect(self.train_evalseg)
        self.next_button.clicked.connect(self.start_next_generation)
        self.builtin_button.clicked.connect(lambda: self.start_next_generation(teacher="builtin"))
        self.add_now_button.clicked.connect(self.add_now)
        self.add_source_button.clicked.connect(self._choose_folder)
        self.add_video_button.clicked.connect(self._choose_video)
        self.remove_source_button.clicked.connect(self._remove_source)
        self.cancel_button.clicked.connect(self.context.cancel_job)
        context.project_changed.connect(self.refresh)
        context.changed.connect(lambda change: change.live or self.refresh())   # at a job's end
        context.busy_changed.connect(self._update_actions)
        context.job_progress.connect(self._job_progress)
        context.job_finished.connect(self._job_finished)
        self.refresh()

    def _layout(self) -> None:
        evalseg_box = QGroupBox("EvalSeg-Net of the current generation")
        row = QHBoxLayout(evalseg_box)
        row.addWidget(QLabel("Epochs"))
        row.addWidget(self.evalseg_epochs)
        row.addWidget(self.evalseg_button)
        row.addStretch(1)

        next_box = QGroupBox("Next generation: the current students become the teacher")
        layout = QVBoxLayout(next_box)
        rule = GenerationSettings()
        layout.addWidget(QLabel(
            f"Candidates kept by EvalSeg-Net score: by default the best {rule.top_percent:g} % of each "
            f"video's, at most {rule.max_per_video} of one video; or set a threshold (the paper's: 0.8)"))
        layout.addWidget(self.generation_form)
        layout.addWidget(QLabel("New unlabeled data (optional)"))
        sources = QHBoxLayout()
        sources.addWidget(self.sources_list, 1)
        buttons = QVBoxLayout()
        for button in (self.add_source_button, self.add_video_button, self.remove_source_button):
            buttons.addWidget(button)
        buttons.addWidget(self.davis_box)
        buttons.addStretch(1)
        sources.addLayout(buttons)
        layout.addLayout(sources)
        actions = QHBoxLayout()
        actions.addWidget(self.add_now_button)
        actions.addStretch(1)
        actions.addWidget(self.builtin_button)
        actions.addWidget(self.next_button)
        layout.addLayout(actions)

        job_row = QHBoxLayout()
        job_row.addWidget(self.progress, 1)
        job_row.addWidget(self.cancel_button)
        main = QVBoxLayout(self)
        main.addWidget(self.headline)
        main.addWidget(self.table, 1)
        main.addWidget(evalseg_box)
        main.addWidget(next_box)
        main.addLayout(job_row)

    # ------------------------------------------------------------------ state
    def refresh(self) -> None:
        project = self.context.project
        self.overview = generation_overview(project) if project else []
        self.table.setRowCount(len(self.overview))
        for r, status in enumerate(self.overview):
            values = (str(status.generation), status.teacher,
                      "" if status.selection_size is None else f"{status.selection_size} pairs",
                      ", ".join(status.students) or "none", status.evalseg or "none",
                      ", ".join(status.ensembles) or "none", status.next_step or "done")
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                if c == 2:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(r, c, item)
        if self.overview:
            current = self.overview[-1]
            self.headline.setText(f"<b>Generation {current.generation}</b> &nbsp;\u00b7&nbsp; "
                                  f"next: {current.next_step or 'nothing left to do'}")
        else:
            self.headline.setText("Open or create a project to see its generations.")
        self._update_actions()

    def sources(self) -> list[str]:
        return [self.sources_list.item(i).text() for i in range(self.sources_list.count())]

    def add_sources(self, paths: list[str | Path]) -> None:
        for path in paths:
            if str(path) not in self.sources():
                self.sources_list.addItem(str(path))
        self._update_actions()

    def _update_actions(self) -> None:
        current = self.overview[-1] if self.overview else None
        free = self.context.project is not None and not self.context.busy
        has_students = bool(current and current.students)
        self.evalseg_button.setEnabled(free and has_students)
        self.next_button.setEnabled(free and has_students and current.evalseg is not None)
        # The shipped models can be generation 1 of a project that has trained none of its own.
        can_start_builtin = bool(current and current.generation == 1 and not current.students
                                 and current.evalseg is None and builtin_available())
        self.builtin_button.setEnabled(free and can_start_builtin)
        self.add_now_button.setEnabled(free and bool(self.sources()))
        self.cancel_button.setEnabled(self._job_kind is not None)
        if self.context.busy and self._job_kind is None:
            tip = BUSY_TIP
            for button in (self.evalseg_button, self.next_button, self.add_now_button,
                           self.builtin_button):
                button.setToolTip(tip)
        else:
            self.evalseg_button.setToolTip("" if has_students else "Train students first (Training panel)")
            self.next_button.setToolTip(
                "" if has_students and current and current.evalseg else
                "Needs the current generation's students and its EvalSeg-Net")
            self.add_now_button.setToolTip("Add the listed data now, without starting a generation")

    # ------------------------------------------------------------------ jobs
    def train_evalseg(self):
        return self._start(EvalSegStep(self._preset(), {"epochs": self.evalseg_epochs.value()}, resume=True),
                           "Training EvalSeg-Net")

    def start_next_generation(self, teacher: str = "students"):
        from ussl_core.errors import SettingsError

        values = self.generation_form.values()
        try:
            GenerationSettings(**values)
        except (SettingsError, TypeError) as exc:
            self.progress.finish(f"Settings: {exc}")
            return None
        step = NextGenerationStep(tuple(self.sources()), self.davis_box.isChecked(), settings=values,
                                  teacher=teacher)
        worker = self._start(step,
                             "Scoring the built-in models' candidates" if teacher == "builtin"
                             else "Scoring the students' candidates")
        return worker

    def add_now(self):
        return self._start(AddStep(tuple(self.sources()), self.davis_box.isChecked()), "Adding data")

    def _start(self, step, message: str):
        worker = self.context.run_job(step)
        if worker is None:
            return None
        self._job_kind = step.kind
        self.progress.start(message)
        self._update_actions()
        return worker

    def _preset(self) -> str:
        """The preset of the current generation's students (EvalSeg-Net matches them)."""
        root = self.context.root
        generation = self.overview[-1].generation if self.overview else 1
        return (model_files.generation_preset(root, generation) if root else None) or "compact"

    def _job_progress(self, event: Progress) -> None:
        if self._job_kind is not None:
            self.progress.update(event)

    def _job_finished(self, kind: str, outcome: str) -> None:
        if self._job_kind is None or kind != self._job_kind:
            return
        self._job_kind = None
        if outcome == "done" and kind in ("next_generation", "add"):
            self.sources_list.clear()
        self.progress.finish({"done": "Done", "cancelled": "Cancelled: completed work is kept",
                              "failed": "Failed"}.get(outcome, outcome))
        self.refresh()

    # ------------------------------------------------------------------ dialogs
    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Unlabeled video frames or images")
        if path:
            self.add_sources([path])

    def _choose_video(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Unlabeled videos")
        self.add_sources(paths)

    def _remove_source(self) -> None:
        for item in self.sources_list.selectedItems():
            self.sources_list.takeItem(self.sources_list.row(item))
        self._update_actions()

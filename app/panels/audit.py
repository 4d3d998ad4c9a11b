"""Audit: the researcher's main tool for the teacher's soft masks.

Left, a virtualised grid of a producer's masks, best score first, each a small frame with its
mask on top, its score and a decision badge; filters by producer, video, score range and
decision. Keys on the grid: arrows move, A approves, R rejects, U clears, Space opens a large
view, Ctrl+Z / Ctrl+Shift+Z undo and redo. Right, the purity curve (from ground truth where
the masks have it, else from the decisions) with the selection cut-off as a line to drag or
a number to type, how many masks it keeps, and "Apply selection", which stores the active
selection (approved masks always in, rejected never).

The panel reads the store and calls ussl_core; loading the mask records, the curve and the
thumbnails happens off the GUI thread. Decisions and the selection are short writes through
`context.write`, refused (with a message, not a crash) while a job holds the project.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QItemSelectionModel, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QUndoStack
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFrame, QGridLayout,
                               QHBoxLayout, QLabel, QPushButton, QSpinBox, QSplitter, QToolButton,
                               QVBoxLayout, QWidget)

from app.panels.audit_table import (APPROVE, CODES, NAMES, NONE, REJECT, AuditRecord,
                                    AuditTable, ScoredMask, load_table, render_thumbnail)
from app.panels.audit_views import AuditModel, CutoffPlot, DecisionCommand, MaskDialog
from app.context import StoreChange
from app.style import MUTED, THUMB, WARNING
from app.widgets.thumbnails import (PayloadRole, RecordRole, ThumbnailCache, ThumbnailDelegate,
                                    ThumbnailGrid, ThumbnailLoader)
from app.workers import is_alive, never_raising
from ussl_core.errors import ProjectError, ProjectLockedError, UsslError
from ussl_core.purity import PurityCurve, decisions_curve, n_kept, purity_curve
from ussl_core.selection import SelectionSettings, kept_by_score, select
from ussl_core.store import Project

AUDITED_AREAS = frozenset({"videos", "masks", "decisions", "selections"})

DECISION_FILTERS = ("All", "Approved", "Rejected", "Undecided")
BUSY_MESSAGE = "A job is running: decisions and selection are paused until it finishes."
CURVE_REFRESH_MS = 800
COMPUTING_DELAY_MS = 250   # the purity placeholder waits this long for the curve
SELECTION_DEFAULTS = SelectionSettings()   # the cut-off's controls start at the defaults


# ============================================================================ panel
class AuditPanel(QWidget):
    """Audit the soft masks: grid, decisions with undo, purity curve, cut-off, selection."""

    title = "Audit"
    table_loaded = Signal()
    curve_loaded = Signal()
    selection_applied = Signal()

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.model = AuditModel(self)
        self.cache = ThumbnailCache(1500)   # ~40 MB of 96 x 72 thumbnails
        self.loader = ThumbnailLoader(render_thumbnail, parent=self)
        self.undo_stack = QUndoStack(self)
        self.curve: PurityCurve | None = None
        self.dialog: MaskDialog | None = None
        self.last_result = None
        self._table_token = 0
        self._curve_token = 0
        self._own_write = False
        self._refresh_when_shown = False
        # "Computing purity" is drawn only when the curve takes a while (usually it is cached):
        # each full draw of the plot holds the GUI thread for 20-70 ms.
        self._computing_timer = QTimer(self)
        self._computing_timer.setSingleShot(True)
        self._computing_timer.setInterval(COMPUTING_DELAY_MS)
        self._computing_timer.timeout.connect(self._show_computing)
        self._applying = False
        self._loading = False
        self._curve_after_table = False
        self._build()
        self._curve_timer = QTimer(self)
        self._curve_timer.setSingleShot(True)
        self._curve_timer.setInterval(CURVE_REFRESH_MS)
        self._curve_timer.timeout.connect(self.refresh_decisions_curve)
        context.project_changed.connect(self._project_changed)
        context.changed.connect(self._store_changed)
        context.busy_changed.connect(self._busy_changed)
        self.undo_stack.canUndoChanged.connect(lambda _: self._update_enabled())
        self.undo_stack.canRedoChanged.connect(lambda _: self._update_enabled())
        self._project_changed()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 4)
        outer.setSpacing(4)

        # Filters: one dense row above the grid.
        filters = QHBoxLayout()
        filters.setSpacing(6)
        self.producer_combo = QComboBox()
        self.producer_combo.setMinimumContentsLength(20)
        self.producer_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.video_combo = QComboBox()
        self.video_combo.setMinimumContentsLength(14)
        self.video_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.score_min = self._score_spin()
        self.score_max = self._score_spin()
        self.score_max.setValue(1.0)
        self.decision_combo = QComboBox()
        self.decision_combo.addItems(DECISION_FILTERS)
        self.count_label = QLabel("")
        self.count_label.setStyleSheet(MUTED)
        for text, widget in (("Producer", self.producer_combo), ("Video", self.video_combo)):
            filters.addWidget(self._caption(text))
            filters.addWidget(widget)
        filters.addSpacing(4)
        filters.addWidget(self._caption("Score"))
        filters.addWidget(self.score_min)
        filters.addWidget(QLabel("–"))
        filters.addWidget(self.score_max)
        filters.addSpacing(4)
        filters.addWidget(self._caption("Show"))
        filters.addWidget(self.decision_combo)
        filters.addStretch(1)
        filters.addWidget(self.count_label)

        # The grid.
        self.grid = ThumbnailGrid()
        self.grid.setModel(self.model)
        self.delegate = ThumbnailDelegate(self.cache, self.loader, THUMB, self.grid)
        self.delegate.attach(self.grid)
        self.grid.set_cell_size(self.delegate.cell_size() + QSize(4, 4))
        self.grid.setStyleSheet("QListView { background: #fafafa; border: 1px solid #dcdfe2; }")
        self.grid.decide.connect(self.decide)
        self.grid.open_requested.connect(self.open_large_view)
        self.grid.undo_requested.connect(self.undo)
        self.grid.redo_requested.connect(self.redo)
        self.grid.selectionModel().selectionChanged.connect(lambda *_: self._update_enabled())

        # Keys and history under the grid.
        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcut(QKeySequence("Ctrl+Z"))
        self.undo_action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.undo_action.triggered.connect(self.undo)
        self.redo_action = QAction("Redo", self)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.redo_action.triggered.connect(self.redo)
        self.addActions([self.undo_action, self.redo_action])
        self.undo_button = QToolButton()
        self.undo_button.setDefaultAction(self.undo_action)
        self.redo_button = QToolButton()
        self.redo_button.setDefaultAction(self.redo_action)
        self.advance_check = QCheckBox("next after deciding")
        self.advance_check.setChecked(True)
        self.advance_check.setToolTip("After A, R or U on one mask, move to the next one")
        keys = QLabel("<b>A</b> approve · <b>R</b> reject · <b>U</b> clear · <b>Space</b> enlarge")
        keys.setStyleSheet(MUTED)
        history = QHBoxLayout()
        history.setSpacing(6)
        history.addWidget(keys)
        history.addStretch(1)
        history.addWidget(self.advance_check)
        history.addWidget(self.undo_button)
        history.addWidget(self.redo_button)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.setSpacing(4)
        left_layout.addLayout(filters)
        left_layout.addWidget(self.grid, 1)
        left_layout.addLayout(history)

        # Right: purity, cut-off, selection.
        self.plot = CutoffPlot()
        self.plot.cutoff_dragged.connect(self._cutoff_dragged)
        self.source_label = QLabel("")
        self.source_label.setStyleSheet(MUTED)
        self.source_label.setWordWrap(True)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["Top percent", "Score above"])
        self.mode_combo.currentIndexChanged.connect(self._mode_changed)
        self.percent_spin = QDoubleSpinBox()
        self.percent_spin.setRange(0.1, 100.0)
        self.percent_spin.setDecimals(1)
        self.percent_spin.setSingleStep(1.0)
        self.percent_spin.setSuffix(" %")
        self.percent_spin.setValue(SELECTION_DEFAULTS.top_percent)
        self.percent_spin.setKeyboardTracking(False)
        self.percent_spin.valueChanged.connect(self._cutoff_changed)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setKeyboardTracking(False)
        self.threshold_spin.valueChanged.connect(self._cutoff_changed)
        self.threshold_spin.hide()
        self.per_video_check = QCheckBox("of each video")
        self.per_video_check.setToolTip("The cut-off applies to each video's masks on its own, so "
                                        "every video keeps some")
        self.per_video_check.setChecked(SELECTION_DEFAULTS.per_video)
        self.per_video_check.toggled.connect(self._cutoff_changed)
        self.cap_spin = QSpinBox()
        self.cap_spin.setRange(0, 1_000_000)
        self.cap_spin.setSpecialValueText("no cap")
        self.cap_spin.setPrefix("at most ")
        self.cap_spin.setSuffix(" per video")
        self.cap_spin.setToolTip("Keep at most this many masks of one video (the best): long, "
                                 "static videos would otherwise fill the selection")
        self.cap_spin.setValue(SELECTION_DEFAULTS.max_per_video or 0)
        self.cap_spin.setKeyboardTracking(False)
        self.cap_spin.valueChanged.connect(self._cutoff_changed)
        self.kept_label = QLabel("")
        self.kept_label.setWordWrap(True)
        self.apply_button = QPushButton("Apply selection")
        self.apply_button.setToolTip("Store the masks kept at this cut-off as the active selection "
                                     "(approved masks always in, rejected never)")
        self.apply_button.clicked.connect(self.apply_selection)
        self.selection_label = QLabel("")
        self.selection_label.setWordWrap(True)
        self.selection_label.setStyleSheet(MUTED)

        cutoff = QGridLayout()
        cutoff.setHorizontalSpacing(6)
        cutoff.setVerticalSpacing(4)
        cutoff.addWidget(self._caption("Cut-off"), 0, 0)
        cutoff.addWidget(self.mode_combo, 0, 1)
        cutoff.addWidget(self.percent_spin, 0, 2)
        cutoff.addWidget(self.threshold_spin, 0, 2)
        cutoff.addWidget(self.per_video_check, 0, 3)
        cutoff.addWidget(self.cap_spin, 1, 1, 1, 2)
        cutoff.setColumnStretch(4, 1)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(6, 0, 0, 0)
        right_layout.setSpacing(4)
        heading = QLabel("<b>Purity</b>")
        right_layout.addWidget(heading)
        right_layout.addWidget(self.plot, 1)
        right_layout.addWidget(self.source_label)
        right_layout.addWidget(_rule())
        right_layout.addLayout(cutoff)
        right_layout.addWidget(self.kept_label)
        apply_row = QHBoxLayout()
        apply_row.addWidget(self.apply_button)
        apply_row.addStretch(1)
        right_layout.addLayout(apply_row)
        right_layout.addWidget(self.selection_label)
        right_layout.addStretch(0)

        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        right.setMinimumWidth(300)
        splitter.setSizes([900, 360])
        outer.addWidget(splitter, 1)

        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        outer.addWidget(self.status_label)

        self.producer_combo.currentIndexChanged.connect(self._producer_changed)
        self.video_combo.currentIndexChanged.connect(self.apply_filters)
        self.decision_combo.currentIndexChanged.connect(self.apply_filters)
        self.score_min.valueChanged.connect(self.apply_filters)
        self.score_max.valueChanged.connect(self.apply_filters)

    @staticmethod
    def _caption(text: str) -> QLabel:
        label = QLabel(text)
        label.setStyleSheet(MUTED)
        return label

    @staticmethod
    def _score_spin() -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setDecimals(3)
        spin.setSingleStep(0.05)
        spin.setRange(0.0, 1.0)
        spin.setKeyboardTracking(False)
        spin.setFixedWidth(72)
        return spin

    # ------------------------------------------------------------------ messages
    def say(self, text: str, warn: bool = False) -> None:
        self.status_label.setStyleSheet(WARNING if warn else MUTED)
        self.status_label.setText(text)

    # ------------------------------------------------------------------ project and loading
    def _project_changed(self) -> None:
        self.undo_stack.clear()
        self.loader.reset()
        self.cache.clear()
        self.delegate.clear()
        self.close_large_view()
        project = self.context.project
        self.producer_combo.blockSignals(True)
        self.producer_combo.clear()
        if project is not None:
            try:
                default = project.default_producer().id
            except ProjectError:
                default = None
            for p in project.producers():
                count = project.mask_count(p.id)
                if count:
                    self.producer_combo.addItem(f"{p.name} ({count:,})", p.id)
            if default is not None and self.producer_combo.findData(default) >= 0:
                self.producer_combo.setCurrentIndex(self.producer_combo.findData(default))
        self.producer_combo.blockSignals(False)
        self._fill_videos()
        self._show_active_selection()
        self._start_from_active_selection()
        if project is not None and self.producer_combo.count() == 0:
            self.say("No masks yet: run the teacher on the project's videos (Videos panel), "
                     "then audit its masks here.")
        self._producer_changed()

    def _fill_videos(self) -> None:
        current = self.video_combo.currentData()
        self.video_combo.blockSignals(True)
        self.video_combo.clear()
        self.video_combo.addItem("All videos", None)
        if self.context.project is not None:
            for v in self.context.project.videos():
                self.video_combo.addItem(v.name, v.id)
        index = self.video_combo.findData(current) if current is not None else 0
        self.video_combo.setCurrentIndex(max(index, 0))
        self.video_combo.blockSignals(False)

    @property
    def producer_id(self) -> int | None:
        return self.producer_combo.currentData()

    def _producer_changed(self) -> None:
        self.undo_stack.clear()   # the history belongs to the producer being audited
        self.loader.reset()
        self.curve = None
        self.model.set_table(None)
        self._update_counts()
        if self.producer_id is None:
            self.plot.set_curve(None, "")
        else:
            self._computing_timer.start()
        self._curve_after_table = True   # one thread at a time: the grid first, then purity
        self.reload_table()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if self._refresh_when_shown:
            self._refresh_when_shown = False
            self._store_changed(StoreChange(AUDITED_AREAS))

    def _show_computing(self) -> None:
        if self.curve is None and self.producer_id is not None:
            self.plot.set_curve(None, "Computing purity …")

    def _store_changed(self, change: StoreChange) -> None:
        """A job (or another panel) wrote to the store: re-read what we show if it changed (a
        training job does not touch masks: re-reading them would only compete with the window),
        once the job has ended. Our own writes are already on screen."""
        if (self.context.project is None or change.live or not change.touches(AUDITED_AREAS)
                or self._own_write):
            return
        if not self.isVisible():
            self._refresh_when_shown = True   # one re-read when shown, not one per job meanwhile
            return
        known = {self.producer_combo.itemData(i) for i in range(self.producer_combo.count())}
        producers = {p.id for p in self.context.project.producers()
                     if self.context.project.mask_count(p.id)}
        if producers != known:
            self._project_changed()   # a new producer (the teacher ran): fill the lists again
            return
        self._fill_videos()
        self.loader.reset()
        self.cache.clear()
        self.delegate.clear()
        self.reload_table(keep_position=True)
        self.reload_curve()
        self._show_active_selection()

    def reload_table(self, keep_position: bool = False) -> None:
        self._table_token += 1
        token = self._table_token
        producer_id = self.producer_id
        if self.context.project is None or producer_id is None:
            self.model.set_table(None)
            self._update_counts()
            self._update_enabled()
            if self._curve_after_table:
                self._curve_after_table = False
                self.reload_curve()
            return
        self._loading = True
        self._update_enabled()
        if not keep_position:
            self.say(f"Reading {self.producer_combo.currentText()} …")
        current = self.current_record()
        root = self.context.root
        self.context.run_light(
            never_raising(lambda cancel: load_table(root, producer_id, cancel), "table", "audit"),
            lambda event: is_alive(self) and self._table_ready(token, event,
                                                             current if keep_position else None))

    def _table_ready(self, token: int, event, current: AuditRecord | None) -> None:
        if token != self._table_token:
            return   # a newer load is on its way
        self._loading = False
        if self._curve_after_table:
            self._curve_after_table = False
            self.reload_curve()
        if "error" in event.metrics:
            self.say(f"Cannot read the masks: {event.metrics['error']}", warn=True)
            self._update_enabled()
            return
        table: AuditTable = event.metrics["table"]
        self.model.set_table(table, reset=False)   # apply_filters below resets the model once
        if len(table):
            low, high = float(table.score.min()), float(table.score.max())
            floor, ceil = min(0.0, math.floor(low * 100) / 100), max(1.0, math.ceil(high * 100) / 100)
            for spin in (self.score_min, self.score_max, self.threshold_spin):
                spin.blockSignals(True)
                spin.setRange(floor, ceil)
                spin.blockSignals(False)
            if current is None:
                self.score_min.blockSignals(True)
                self.score_max.blockSignals(True)
                self.score_min.setValue(floor)
                self.score_max.setValue(ceil)
                self.score_min.blockSignals(False)
                self.score_max.blockSignals(False)
        self.apply_filters(restore=current)
        self._update_cutoff()
        if current is None:
            self.say("" if len(table) else "This producer has no masks.")
        self._update_enabled()
        self.table_loaded.emit()

    def reload_curve(self) -> None:
        self._curve_token += 1
        token = self._curve_token
        producer_id = self.producer_id
        if self.context.project is None or producer_id is None:
            self.curve = None
            self.plot.set_curve(None, "No masks to measure yet")
            self.source_label.setText("")
            return
        if self.curve is None:
            self._computing_timer.start()
        root = self.context.root

        def work(cancel):
            with Project.open(root) as project:
                return purity_curve(project, producer_id)

        self.context.run_light(never_raising(work, "curve", "audit"),
                               lambda event: is_alive(self) and self._curve_ready(token, event))

    def refresh_decisions_curve(self) -> None:
        """After decisions, when purity comes from them: the curve from the decisions the grid
        already shows (ussl_core's decisions_curve on the table), without re-reading 100,000
        masks from the store."""
        table = self.model.table
        if table is None or self.curve is None or self.curve.source != "decisions":
            self.reload_curve()
            return
        self._curve_token += 1
        token = self._curve_token
        frame_ids, scores, codes = table.frame_id.copy(), table.score.copy(), table.decision.copy()
        producer_id = table.producer_id

        def work(cancel):
            masks = [ScoredMask(f, producer_id, s) for f, s in zip(frame_ids.tolist(), scores.tolist())]
            decided = {(int(f), producer_id): {"decision": NAMES[int(c)]}
                       for f, c in zip(frame_ids[codes != NONE], codes[codes != NONE])}
            return decisions_curve(masks, decided)

        self.context.run_light(never_raising(work, "curve", "audit"),
                               lambda event: is_alive(self) and self._curve_ready(token, event))

    def _curve_ready(self, token: int, event) -> None:
        if token != self._curve_token:
            return
        if "error" in event.metrics:
            self.curve = None
            self.plot.set_curve(None, "No purity curve")
            self.source_label.setText(f"Cannot compute purity: {event.metrics['error']}")
            return
        curve: PurityCurve = event.metrics["curve"]
        self.curve = curve
        if curve.source == "ground_truth":
            self.plot.set_curve(curve)
            self.source_label.setText(f"From ground truth ({curve.n_masks:,} masks with annotations)")
        else:
            audited = curve.n_audited[-1] if curve.n_audited else 0
            message = "" if audited else "No ground truth and no decisions yet:\napprove or reject masks"
            self.plot.set_curve(curve, message)
            self.source_label.setText(f"From human decisions, {audited:,} audited")
        self._update_cutoff()
        self.curve_loaded.emit()

    # ------------------------------------------------------------------ filters
    def apply_filters(self, *_, restore: AuditRecord | None = None) -> None:
        if restore is None:
            restore = self.current_record()
        low, high = self.score_min.value(), self.score_max.value()
        if low > high:
            low, high = high, low
        self.model.apply_filter(self.video_combo.currentData(), low, high,
                                self.decision_combo.currentText())
        row = 0
        if restore is not None and self.model.table is not None:
            position = self.model.table.index_of([restore.frame_id])[0]
            rows = self.model.rows_of(np.array([position])) if position >= 0 else []
            row = int(rows[0]) if len(rows) else 0
        if self.model.rowCount():
            index = self.model.index(row)
            self.grid.selectionModel().setCurrentIndex(index, QItemSelectionModel.ClearAndSelect)
            self.grid.scrollTo(index)
        self._update_counts()

    def _update_counts(self) -> None:
        total = len(self.model.table) if self.model.table is not None else 0
        shown = self.model.rowCount()
        if self._loading and not total:
            self.count_label.setText("loading …")
        elif shown == total:
            self.count_label.setText(f"{total:,} masks")
        else:
            self.count_label.setText(f"{shown:,} of {total:,} masks")

    # ------------------------------------------------------------------ selection in the grid
    def selected_rows(self) -> list[int]:
        rows = sorted(i.row() for i in self.grid.selectionModel().selectedIndexes())
        if not rows and self.grid.currentIndex().isValid():
            rows = [self.grid.currentIndex().row()]
        return rows

    def current_record(self) -> AuditRecord | None:
        index = self.grid.currentIndex()
        return index.data(RecordRole) if index.isValid() else None

    def step(self, delta: int) -> None:
        row = self.grid.currentIndex().row() + delta
        if 0 <= row < self.model.rowCount():
            index = self.model.index(row)
            self.grid.selectionModel().setCurrentIndex(index, QItemSelectionModel.ClearAndSelect)
            self.grid.scrollTo(index)

    # ------------------------------------------------------------------ decisions
    def _refuse_while_busy(self) -> bool:
        if self.context.busy:
            self.say(BUSY_MESSAGE, warn=True)
            return True
        return False

    def decide(self, decision: str) -> None:
        """Approve / reject / clear the selected masks (one undoable step)."""
        if self._refuse_while_busy():
            return
        table = self.model.table
        rows = self.selected_rows()
        if table is None or not rows:
            self.say("Select one or more masks first.")
            return
        positions = self.model.view[rows]
        frame_ids = [int(f) for f in table.frame_id[positions]]
        previous = [NAMES.get(int(c), "clear") for c in table.decision[positions]]
        if all(p == decision for p in previous):
            self.say(f"Already {_past(decision)}.")
            self._advance(rows)
            return
        if not self.write_decisions(table.producer_id, frame_ids, [decision] * len(frame_ids)):
            return
        self.undo_stack.push(DecisionCommand(self, table.producer_id, frame_ids, previous, decision))
        n = len(frame_ids)
        self.say(f"{_past(decision).capitalize()} {n:,} mask{'s' if n != 1 else ''}.")
        self._advance(rows)

    def _advance(self, rows: list[int]) -> None:
        if self.advance_check.isChecked() and len(rows) == 1:
            self.step(1)

    def write_decisions(self, producer_id: int, frame_ids: list[int], decisions: list[str],
                        from_history: bool = False) -> bool:
        """Store decisions (one short locked write) and show them; False when refused."""
        rows = [(f, producer_id, d, None, None) for f, d in zip(frame_ids, decisions)]
        if not self._write(lambda project: project.set_decisions(rows), "store the decision"):
            if from_history:
                # The store and the history no longer agree: start a fresh history from
                # what the store holds (re-read), rather than guess.
                QTimer.singleShot(0, self._history_failed)
            return False
        table = self.model.table
        if table is not None and table.producer_id == producer_id:
            positions = table.index_of(frame_ids)
            ok = positions >= 0
            self.model.set_codes(positions[ok], np.array([CODES[d] for d in decisions], np.int8)[ok])
            self._update_cutoff()
            if self.curve is not None and self.curve.source == "decisions":
                self._curve_timer.start()
        return True

    def _history_failed(self) -> None:
        self.undo_stack.clear()
        self.reload_table(keep_position=True)

    def _write(self, change, what: str):
        """context.write with the panel's messages; the result, or None when refused."""
        if self._refuse_while_busy():
            return None
        self._own_write = True
        try:
            return self.context.write(change) or True
        except ProjectLockedError as exc:
            self.say(f"Cannot {what} now: {exc}", warn=True)
        except UsslError as exc:
            self.say(f"Cannot {what}: {exc}", warn=True)
        finally:
            self._own_write = False
        return None

    def undo(self) -> None:
        if self._refuse_while_busy() or not self.undo_stack.canUndo():
            return
        text = self.undo_stack.undoText()
        self.undo_stack.undo()
        if self.undo_stack.count():
            self.say(f"Undid: {text}.")

    def redo(self) -> None:
        if self._refuse_while_busy() or not self.undo_stack.canRedo():
            return
        text = self.undo_stack.redoText()
        self.undo_stack.redo()
        if self.undo_stack.count():
            self.say(f"Redid: {text}.")

    # ------------------------------------------------------------------ busy
    def _busy_changed(self, busy: bool) -> None:
        if busy:
            self.say(BUSY_MESSAGE)
        elif self.status_label.text() == BUSY_MESSAGE:
            self.say("")
        self._update_enabled()

    def _update_enabled(self) -> None:
        if not (is_alive(self) and is_alive(self.undo_stack)):
            return   # the panel is being torn down
        busy = self.context.busy
        has_table = self.model.table is not None and len(self.model.table) > 0
        self.undo_action.setEnabled(not busy and self.undo_stack.canUndo())
        self.redo_action.setEnabled(not busy and self.undo_stack.canRedo())
        self.undo_action.setToolTip(f"Undo {self.undo_stack.undoText()} (Ctrl+Z)"
                                    if self.undo_stack.canUndo() else "Nothing to undo")
        self.redo_action.setToolTip(f"Redo {self.undo_stack.redoText()} (Ctrl+Shift+Z)"
                                    if self.undo_stack.canRedo() else "Nothing to redo")
        self.apply_button.setEnabled(not busy and has_table and not self._applying)
        self.plot.setEnabled(has_table)
        for widget in (self.percent_spin, self.threshold_spin, self.mode_combo,
                       self.per_video_check, self.cap_spin):
            widget.setEnabled(has_table)

    # ------------------------------------------------------------------ cut-off
    @property
    def threshold_mode(self) -> bool:
        return self.mode_combo.currentIndex() == 1

    def _mode_changed(self) -> None:
        table = self.model.table
        if self.threshold_mode:
            # Start from the score at the current percent, so the line stays put.
            if table is not None and len(table):
                k = n_kept(self.percent_spin.value(), len(table))
                self.threshold_spin.blockSignals(True)
                self.threshold_spin.setValue(_threshold_keeping(table.score, k))
                self.threshold_spin.blockSignals(False)
            self.percent_spin.hide()
            self.threshold_spin.show()
        else:
            if table is not None and len(table):
                kept = int(np.count_nonzero(table.score > self.threshold_spin.value()))
                self.percent_spin.blockSignals(True)
                self.percent_spin.setValue(max(0.1, 100.0 * kept / len(table)))
                self.percent_spin.blockSignals(False)
            self.threshold_spin.hide()
            self.percent_spin.show()
        self._update_cutoff()

    def _cutoff_changed(self) -> None:
        self._update_cutoff()

    def _cutoff_dragged(self, percent: float) -> None:
        table = self.model.table
        if table is None or not len(table):
            return
        if self.threshold_mode:
            k = n_kept(percent, len(table))
            self.threshold_spin.setValue(_threshold_keeping(table.score, k))
        else:
            self.percent_spin.setValue(round(percent, 1))

    def kept_mask(self) -> np.ndarray:
        """Which table positions the score alone keeps at the cut-off (selection's own rule)."""
        table = self.model.table
        if table is None or not len(table):
            return np.zeros(0, bool)
        return kept_by_score(table.score, table.video_id, self.selection_settings())

    def kept_by_score(self) -> int:
        """How many masks the score alone keeps at the cut-off."""
        return int(np.count_nonzero(self.kept_mask()))

    def selection_settings(self) -> SelectionSettings:
        rule = ({"top_percent": None, "threshold": self.threshold_spin.value()} if self.threshold_mode
                else {"top_percent": self.percent_spin.value()})
        return SelectionSettings(**rule, per_video=self.per_video_check.isChecked(),
                                 max_per_video=self.cap_spin.value() or None)

    def _whole_ranking(self) -> bool:
        """The cut-off is a prefix of the global score order (what the purity curve shows)."""
        return not self.per_video_check.isChecked() and not self.cap_spin.value()

    def _update_cutoff(self) -> None:
        table = self.model.table
        if table is None or not len(table):
            self.kept_label.setText("")
            self.plot.set_cutoff(self.percent_spin.value())
            return
        n = len(table)
        kept = self.kept_mask()
        k = int(np.count_nonzero(kept))
        if self.model.set_kept(kept):
            self.grid.viewport().update()   # the visible cells dim or brighten
        whole = self._whole_ranking()
        percent = self.percent_spin.value() if whole and not self.threshold_mode else 100.0 * k / n
        self.plot.set_cutoff(percent)
        approved_below = int(np.count_nonzero((table.decision == APPROVE) & ~kept))
        rejected_above = int(np.count_nonzero((table.decision == REJECT) & kept))
        total = k + approved_below - rejected_above
        parts = [f"Keeps <b>{total:,}</b> of {n:,} masks"]
        if approved_below or rejected_above:
            parts.append(f"({k:,} by score, +{approved_below:,} approved, "
                         f"−{rejected_above:,} rejected)")
        if self.threshold_mode or not whole:
            parts.append(f"= {percent:.1f} %")
        text = " ".join(parts)
        if not whole:
            text += "<br>(the curve ranks all masks together; per video the kept masks differ)"
        elif self.curve is not None and k:
            p = min(max(int(math.ceil(percent)), 1), 100) - 1
            if self.curve.source == "ground_truth":
                iou, corloc = self.curve.mean_iou[p], self.curve.corloc[p]
                if iou is not None:
                    text += f"<br>mean IoU {iou:.3f} · CorLoc {corloc:.3f} at the cut-off"
            elif self.curve.approved_share and self.curve.approved_share[p] is not None:
                text += (f"<br>{self.curve.approved_share[p]:.0%} approved of "
                         f"{self.curve.n_audited[p]:,} audited above the cut-off")
        self.kept_label.setText(text)

    # ------------------------------------------------------------------ selection
    def apply_selection(self):
        """Write the selection at the current cut-off, in a thread (about 1 s with 100,000
        masks); `selection_applied` is emitted when it is stored."""
        producer_id = self.producer_id
        if producer_id is None or self._refuse_while_busy() or self._applying:
            return None
        settings = self.selection_settings()
        self._applying = True
        self._own_write = True
        self.apply_button.setEnabled(False)
        self.say("Applying the selection\u2026")

        def done(result) -> None:
            self._applying = self._own_write = False
            self._update_enabled()
            how = (f"top {settings.top_percent:g} %" if settings.threshold is None
                   else f"score above {settings.threshold:.3f}")
            self.say(f"Selection applied ({how}): {result.n_selected:,} masks selected — "
                     f"{result.n_by_score:,} by score, {result.n_approved_added:,} approved added, "
                     f"{result.n_rejected_removed:,} rejected removed.")
            self.last_result = result
            self._show_active_selection()
            self.selection_applied.emit()

        def failed(message: str) -> None:
            self._applying = self._own_write = False
            self._update_enabled()
            self.say(f"Cannot apply the selection: {message}", warn=True)
            self.selection_applied.emit()

        return self.context.write_in_background(
            lambda project: select(project, producer_id, settings), done, failed)

    def _start_from_active_selection(self) -> None:
        """Open at the cut-off of the project's active selection, when it is this producer's."""
        project = self.context.project
        active = project.active_selection() if project is not None else None
        if not active or active["producer_id"] != self.producer_id:
            return
        threshold = active["method"] == "threshold"
        spin = self.threshold_spin if threshold else self.percent_spin
        for widget in (self.mode_combo, spin):
            widget.blockSignals(True)
        self.mode_combo.setCurrentIndex(1 if threshold else 0)
        self.percent_spin.setVisible(not threshold)
        self.threshold_spin.setVisible(threshold)
        if threshold:
            spin.setRange(min(spin.minimum(), active["value"]), max(spin.maximum(), active["value"]))
        spin.setValue(active["value"])
        for widget in (self.mode_combo, spin):
            widget.blockSignals(False)

    def _show_active_selection(self) -> None:
        project = self.context.project
        active = project.active_selection() if project is not None else None
        if not active:
            self.selection_label.setText("No active selection yet.")
            return
        how = (f"top {active['value']:g} %" if active["method"] == "top_percent"
               else f"score above {active['value']:.3f}")
        extra = ""
        if active["n_approved_added"] or active["n_rejected_removed"]:
            extra = (f", +{active['n_approved_added']:,} approved"
                     f", −{active['n_rejected_removed']:,} rejected")
        self.selection_label.setText(
            f"Active selection: {active['n_selected']:,} masks ({how}{extra}), "
            f"generation {active.get('generation', 1)}, {active['created_at']}")

    # ------------------------------------------------------------------ large view
    def open_large_view(self) -> None:
        index = self.grid.currentIndex()
        if not index.isValid():
            return
        if self.dialog is None:
            self.dialog = MaskDialog(self)
        self.dialog.show_record(index.data(RecordRole), index.data(PayloadRole),
                                int(self.model.table.shot_id[self.model.position(index.row())]),
                                self._record_text(index))
        self.dialog.show()
        self.dialog.raise_()

    def _record_text(self, index) -> str:
        return index.data(Qt.ToolTipRole).replace("\n", " — ")

    def close_large_view(self) -> None:
        if self.dialog is not None:
            self.dialog.close()

    # ------------------------------------------------------------------ teardown
    def shutdown(self) -> None:
        """Stop the thumbnail thread (the loader also stops when the application quits)."""
        self.loader.stop()


def _threshold_keeping(scores: np.ndarray, k: int) -> float:
    """A score threshold that keeps (about) the best k of scores sorted best first."""
    if k <= 0:
        return float(scores[0])
    if k >= len(scores):
        return float(scores[-1]) - 1e-3
    return float(scores[k])


def _past(decision: str) -> str:
    return {"approve": "approved", "reject": "rejected", "clear": "cleared"}[decision]


def _rule() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.HLine)
    line.setStyleSheet("color: #dcdfe2;")
    return line

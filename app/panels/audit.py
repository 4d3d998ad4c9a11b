"""Audit: the researcher's main tool for the teacher's soft masks.

Left, a virtualised grid of a producer's masks, best score first, each a small frame with its
mask on top, its score and a decision badge; filters by producer, video, score range and
decision. Keys on the grid: arrows move, A approves, R rejects, U clears, Space opens a large
view, Ctrl+Z / Ctrl+Shift+Z undo and redo. Right, the purity curve (from ground truth where
the masks have it, else from the decisions) with the selection cut-off as a line to drag or
a number to type, how many masks it keeps, and "Apply selection", which stores the active
selection (approved masks always in, rejected never).

The panel wires its parts (audit_filters, audit_views, audit_decisions, audit_cutoff) and reads
through ussl_core.views.audit; loading the mask records, the curve and the thumbnails happens
off the GUI thread. Decisions and the selection are short writes through `context.write`,
refused (with a message, not a crash) while a job holds the project.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QItemSelectionModel, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from app.background import BackgroundCalls
from app.context import StoreChange
from app.panels.audit_cutoff import CutoffControls
from app.panels.audit_decisions import BUSY_MESSAGE, DecisionBar
from app.panels.audit_filters import AuditFilters
from app.panels.audit_views import AuditModel, MaskDialog, render_cell
from app.style import MUTED, THUMB, WARNING
from app.widgets.thumbnails import (PayloadRole, RecordRole, ThumbnailCache, ThumbnailDelegate,
                                    ThumbnailGrid, ThumbnailLoader)
from app.workers import is_alive
from ussl_core.purity import PurityCurve
from ussl_core.selection import SelectionSettings, select
from ussl_core.views.audit import (AuditRecord, AuditTable, decision_codes, load_table,
                                   read_purity_curve, table_decisions_curve)

AUDITED_AREAS = frozenset({"videos", "masks", "decisions", "selections"})
CURVE_REFRESH_MS = 800


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
        self.calls = BackgroundCalls(context, self)
        self.model = AuditModel(self)
        self.cache = ThumbnailCache(1500)   # ~40 MB of 96 x 72 thumbnails
        self.loader = ThumbnailLoader(render_cell, parent=self)
        self.dialog: MaskDialog | None = None
        self.last_result = None
        self._refresh_when_shown = False
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
        self._project_changed()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.filters = AuditFilters()
        self.filters.producer_changed.connect(self._producer_changed)
        self.filters.filters_changed.connect(self.apply_filters)

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

        self.decisions = DecisionBar(self.context)
        self.decisions.written.connect(self._show_decisions)
        self.decisions.said.connect(self.say)
        self.decisions.history_lost.connect(lambda: self.reload_table(keep_position=True))
        self.addActions([self.decisions.undo_action, self.decisions.redo_action])

        self.cutoff = CutoffControls(self.model)
        self.cutoff.cutoff_changed.connect(self._update_cutoff)
        self.cutoff.apply_requested.connect(self.apply_selection)
        self.cutoff.setMinimumWidth(300)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.setSpacing(4)
        left_layout.addWidget(self.filters)
        left_layout.addWidget(self.grid, 1)
        left_layout.addWidget(self.decisions)

        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self.cutoff)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([900, 360])

        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 4)
        outer.setSpacing(4)
        outer.addWidget(splitter, 1)
        outer.addWidget(self.status_label)

        # The parts' widgets, by the names the panel has always offered (tests, benchmarks).
        f, d, c = self.filters, self.decisions, self.cutoff
        self.producer_combo, self.video_combo = f.producer_combo, f.video_combo
        self.score_min, self.score_max = f.score_min, f.score_max
        self.decision_combo, self.count_label = f.decision_combo, f.count_label
        self.undo_stack, self.undo_action, self.redo_action = d.undo_stack, d.undo_action, d.redo_action
        self.undo_button, self.redo_button = d.undo_button, d.redo_button
        self.advance_check = d.advance_check
        self.plot, self.source_label, self.kept_label = c.plot, c.source_label, c.kept_label
        self.mode_combo = c.mode_combo
        self.percent_spin, self.threshold_spin = c.percent_spin, c.threshold_spin
        self.per_video_check, self.cap_spin = c.per_video_check, c.cap_spin
        self.apply_button, self.selection_label = c.apply_button, c.selection_label

    # ------------------------------------------------------------------ messages
    def say(self, text: str, warn: bool = False) -> None:
        self.status_label.setStyleSheet(WARNING if warn else MUTED)
        self.status_label.setText(text)

    # ------------------------------------------------------------------ project and loading
    @property
    def producer_id(self) -> int | None:
        return self.filters.producer_id

    @property
    def curve(self) -> PurityCurve | None:
        return self.cutoff.curve

    def _project_changed(self) -> None:
        self.calls.forget()
        self.undo_stack.clear()
        self.loader.reset()
        self.cache.clear()
        self.delegate.clear()
        self.close_large_view()
        project = self.context.project
        self.filters.fill_producers(project)
        self.filters.fill_videos(project)
        self._show_active_selection()
        self._start_from_active_selection()
        if project is not None and self.producer_combo.count() == 0:
            self.say("No masks yet: run the teacher on the project's videos (Videos panel), "
                     "then audit its masks here.")
        self._producer_changed()

    def _producer_changed(self) -> None:
        self.undo_stack.clear()   # the history belongs to the producer being audited
        self.loader.reset()
        self.model.set_table(None)
        self._update_counts()
        if self.producer_id is None:
            self.cutoff.show_no_curve("")
        else:
            self.cutoff.curve_pending(forget_current=True)
        self._curve_after_table = True   # one thread at a time: the grid first, then purity
        self.reload_table()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if self._refresh_when_shown:
            self._refresh_when_shown = False
            self._store_changed(StoreChange(AUDITED_AREAS))

    def _store_changed(self, change: StoreChange) -> None:
        """A job (or another panel) wrote to the store: re-read what we show if it changed (a
        training job does not touch masks: re-reading them would only compete with the window),
        once the job has ended. Our own writes are already on screen."""
        if (self.context.project is None or change.live or not change.touches(AUDITED_AREAS)
                or self.decisions.writing or self._applying):
            return
        if not self.isVisible():
            self._refresh_when_shown = True   # one re-read when shown, not one per job meanwhile
            return
        producers = {p.id for p in self.context.project.producers()
                     if self.context.project.mask_count(p.id)}
        if producers != self.filters.producer_ids():
            self._project_changed()   # a new producer (the teacher ran): fill the lists again
            return
        self.filters.fill_videos(self.context.project)
        self.loader.reset()
        self.cache.clear()
        self.delegate.clear()
        self.reload_table(keep_position=True)
        self.reload_curve()
        self._show_active_selection()

    def reload_table(self, keep_position: bool = False) -> None:
        producer_id = self.producer_id
        if self.context.project is None or producer_id is None:
            self.calls.cancel("table")
            self.model.set_table(None)
            self._update_counts()
            self._update_enabled()
            self._curve_after_table_now()
            return
        self._loading = True
        self._update_enabled()
        if not keep_position:
            self.say(f"Reading {self.producer_combo.currentText()} …")
        current = self.current_record() if keep_position else None
        root = self.context.root
        self.calls.run("table", lambda cancel: load_table(root, producer_id, cancel),
                       lambda table: self._table_ready(table, current), self._table_failed)

    def _curve_after_table_now(self) -> None:
        if self._curve_after_table:
            self._curve_after_table = False
            self.reload_curve()

    def _table_failed(self, message: str) -> None:
        self._loading = False
        self._curve_after_table_now()
        self.say(f"Cannot read the masks: {message}", warn=True)
        self._update_enabled()

    def _table_ready(self, table: AuditTable, current: AuditRecord | None) -> None:
        self._loading = False
        self._curve_after_table_now()
        self.model.set_table(table, reset=False)   # apply_filters below resets the model once
        if len(table):
            low, high = float(table.score.min()), float(table.score.max())
            floor, ceil = min(0.0, math.floor(low * 100) / 100), max(1.0, math.ceil(high * 100) / 100)
            self.filters.set_score_range(floor, ceil, reset_values=current is None)
            self.cutoff.set_score_range(floor, ceil)
        self.apply_filters(restore=current)
        self._update_cutoff()
        if current is None:
            self.say("" if len(table) else "This producer has no masks.")
        self._update_enabled()
        self.table_loaded.emit()

    def reload_curve(self) -> None:
        producer_id = self.producer_id
        if self.context.project is None or producer_id is None:
            self.calls.cancel("curve")
            self.cutoff.show_no_curve("No masks to measure yet")
            return
        self.cutoff.curve_pending()
        root = self.context.root
        self.calls.run("curve", lambda cancel: read_purity_curve(root, producer_id),
                       self._curve_ready, self._curve_failed)

    def refresh_decisions_curve(self) -> None:
        """After decisions, when purity comes from them: the curve from the decisions the grid
        already shows, without re-reading 100,000 masks from the store."""
        table = self.model.table
        if table is None or self.curve is None or self.curve.source != "decisions":
            self.reload_curve()
            return
        codes = table.decision.copy()   # the grid changes them on this thread meanwhile
        self.calls.run("curve", lambda cancel: table_decisions_curve(table, codes),
                       self._curve_ready, self._curve_failed)

    def _curve_failed(self, message: str) -> None:
        self.cutoff.show_no_curve("No purity curve", f"Cannot compute purity: {message}")

    def _curve_ready(self, curve: PurityCurve) -> None:
        self.cutoff.show_curve(curve)
        self._update_cutoff()
        self.curve_loaded.emit()

    # ------------------------------------------------------------------ filters
    def apply_filters(self, *_, restore: AuditRecord | None = None) -> None:
        if restore is None:
            restore = self.current_record()
        self.model.apply_filter(*self.filters.values())
        row = 0
        if restore is not None and self.model.table is not None:
            position = self.model.table.index_of([restore.frame_id])[0]
            rows = self.model.rows_of(np.array([position])) if position >= 0 else []
            row = int(rows[0]) if len(rows) else 0
        if self.model.rowCount():
            self._select_row(row)
        self._update_counts()

    def _update_counts(self) -> None:
        total = len(self.model.table) if self.model.table is not None else 0
        self.filters.show_counts(self.model.rowCount(), total, self._loading)

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
            self._select_row(row)

    def _select_row(self, row: int) -> None:
        index = self.model.index(row)
        self.grid.selectionModel().setCurrentIndex(index, QItemSelectionModel.ClearAndSelect)
        self.grid.scrollTo(index)

    # ------------------------------------------------------------------ decisions
    def decide(self, decision: str) -> None:
        """Approve / reject / clear the selected masks (one undoable step)."""
        if self.decisions.refuse_while_busy():
            return
        table = self.model.table
        rows = self.selected_rows()
        if table is None or not rows:
            self.say("Select one or more masks first.")
            return
        if (self.decisions.decide(table, self.model.view[rows], decision)
                and self.advance_check.isChecked() and len(rows) == 1):
            self.step(1)

    def write_decisions(self, producer_id: int, frame_ids: list[int], decisions: list[str]) -> bool:
        """Store decisions (one short locked write) and show them; False when refused."""
        return self.decisions.write(producer_id, frame_ids, decisions)

    def _show_decisions(self, producer_id: int, frame_ids: list[int], decisions: list[str]) -> None:
        """Written decisions on screen at once: badges, the cut-off's counts, the curve soon."""
        table = self.model.table
        if table is None or table.producer_id != producer_id:
            return
        positions = table.index_of(frame_ids)
        ok = positions >= 0
        self.model.set_codes(positions[ok], decision_codes(decisions)[ok])
        self._update_cutoff()
        if self.curve is not None and self.curve.source == "decisions":
            self._curve_timer.start()

    def undo(self) -> None:
        self.decisions.undo()

    def redo(self) -> None:
        self.decisions.redo()

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
        self.decisions.update_enabled()
        has_table = self.model.table is not None and len(self.model.table) > 0
        self.cutoff.set_enabled(has_table, not self.context.busy and has_table and not self._applying)

    # ------------------------------------------------------------------ cut-off
    @property
    def threshold_mode(self) -> bool:
        return self.cutoff.threshold_mode

    def selection_settings(self) -> SelectionSettings:
        return self.cutoff.selection_settings()

    def kept_mask(self) -> np.ndarray:
        """Which table positions the score alone keeps at the cut-off (selection's own rule)."""
        figures = self.cutoff.figures()
        return figures.kept if figures is not None else np.zeros(0, bool)

    def kept_by_score(self) -> int:
        """How many masks the score alone keeps at the cut-off."""
        return int(np.count_nonzero(self.kept_mask()))

    def _update_cutoff(self) -> None:
        figures = self.cutoff.figures()
        if figures is not None and self.model.set_kept(figures.kept):
            self.grid.viewport().update()   # the visible cells dim or brighten
        self.cutoff.show_figures(figures)

    # ------------------------------------------------------------------ selection
    def apply_selection(self):
        """Write the selection at the current cut-off, in a thread (about 1 s with 100,000
        masks); `selection_applied` is emitted when it is stored."""
        producer_id = self.producer_id
        if producer_id is None or self.decisions.refuse_while_busy() or self._applying:
            return None
        settings = self.selection_settings()
        self._applying = True
        self.apply_button.setEnabled(False)
        self.say("Applying the selection\u2026")

        def done(result) -> None:
            self._applying = False
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
            self._applying = False
            self._update_enabled()
            self.say(f"Cannot apply the selection: {message}", warn=True)
            self.selection_applied.emit()

        return self.context.write_in_background(
            lambda project: select(project, producer_id, settings), done, failed)

    def _active_selection(self) -> dict | None:
        project = self.context.project
        return project.active_selection() if project is not None else None

    def _start_from_active_selection(self) -> None:
        """Open at the cut-off of the project's active selection, when it is this producer's."""
        active = self._active_selection()
        if active and active["producer_id"] == self.producer_id:
            self.cutoff.start_from(active)

    def _show_active_selection(self) -> None:
        self.cutoff.show_active(self._active_selection())

    # ------------------------------------------------------------------ large view
    def open_large_view(self) -> None:
        index = self.grid.currentIndex()
        if not index.isValid():
            return
        if self.dialog is None:
            self.dialog = MaskDialog(self.context, self)
            self.dialog.decide_requested.connect(self._decide_in_large_view)
            self.dialog.step_requested.connect(self._step_in_large_view)
        self.dialog.show_record(index.data(RecordRole), index.data(PayloadRole),
                                int(self.model.table.shot_id[self.model.position(index.row())]),
                                index.data(Qt.ToolTipRole).replace("\n", " — "))
        self.dialog.show()
        self.dialog.raise_()

    def _decide_in_large_view(self, decision: str) -> None:
        self.step(0)   # the mask shown there only, not the grid's whole selection
        self.decide(decision)
        self.open_large_view()   # the next mask, or this one with its new decision

    def _step_in_large_view(self, delta: int) -> None:
        self.step(delta)
        self.open_large_view()

    def close_large_view(self) -> None:
        if self.dialog is not None:
            self.dialog.close()

    # ------------------------------------------------------------------ teardown
    def shutdown(self) -> None:
        """Stop the thumbnail thread (the loader also stops when the application quits)."""
        self.loader.stop()

"""Per-image: the project's frames and added images, one row each, teacher against students.

Each row shows the frame, its ground truth (where it exists), the teacher's soft mask with its
selection score, each student's mask of the chosen generation with its EvalSeg-Net score,
Multi-Net and MultiSelect-Net (the student it picked is outlined, as in the paper's Figure 7),
IoU against ground truth under every mask, and two numbers to sort by: the disagreement
between teacher and students and the IoU gain of Multi-Net over the teacher. Sorting by any
score (the header or "Sort by") finds where the students improved on their teacher and where
they failed; rows can be limited to one video; double-click opens a large side-by-side view.

The GUI thread never computes: the rows' catalog facts are read in a thread
(ussl_core.views.browse.read_state), and the students' predictions are made in batches there
too (the generation's models loaded once, see StudentPredictor), visible rows first, only while
the panel is shown; `BackgroundCalls` drops what arrives for a project no longer open. Results
are kept in memory per teacher and generation, so switching back is instant; rows fill in as
batches land. The table is virtualised (browser_table): thumbnails are made on demand by a
background loader (app.widgets.thumbnails).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from app.background import BackgroundCalls
from app.context import StoreChange
from app.gc_policy import freeze_after_import
from app.panels.browser_dialog import RowDialog
from app.panels.browser_table import BrowserModel, BrowserTable, CellDelegate
from app.style import MUTED, THUMB
from app.widgets.thumbnails import ThumbnailCache, ThumbnailLoader, fit_size
from ussl_core.views.browse import (DISAGREEMENT_TIP, FRAME_ORDER, IOU_TIP, TEACHER_SCORE,
                                    BatchScores, BrowseFrame, BrowseState, FrameResult,
                                    GenerationInfo, RecentlyUsed, RowImages, SourceCache,
                                    StudentPredictor, compute_batch, generation_label, hint_text,
                                    make_columns, make_renderer, next_batch, ordered_view,
                                    progress_text, read_row, read_state, results_key, row_facts,
                                    sort_keys)

KEPT_RESULTS = 4           # (teacher, generation) result sets kept in memory
KEPT_PREDICTORS = 2        # generations whose models stay loaded
BROWSED_AREAS = frozenset({"videos", "masks", "models"})   # what the rows show


class BrowserPanel(QWidget):
    """The per-image predictions browser (see the module's docstring)."""

    title = "Per-image"
    state_loaded = Signal()     # the rows' catalog facts were (re)read
    rows_complete = Signal()    # every row of the current teacher and generation is computed

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.calls = BackgroundCalls(context, self)
        self.state: BrowseState | None = None
        self.dialog: RowDialog | None = None
        self.batches_computed = 0
        self._generation: int | None = None
        self._video_id: int | None = None
        self._sort: tuple[str, bool] = (FRAME_ORDER, False)
        self._results: RecentlyUsed[tuple, dict[int, FrameResult]] = RecentlyUsed(KEPT_RESULTS)
        self._predictors: RecentlyUsed[tuple, StudentPredictor] = RecentlyUsed(KEPT_PREDICTORS)
        self._sources = SourceCache()       # used by one batch at a time
        self._computing = False             # one batch at a time
        self._complete = False
        self._warning = ""
        self._refresh_when_shown = False
        self.cache = ThumbnailCache(3000)
        self.loader = ThumbnailLoader(make_renderer(), parent=self)
        self._build()
        context.project_changed.connect(self._project_changed)
        context.changed.connect(self._store_changed)
        self._project_changed()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 4)
        outer.setSpacing(4)
        bar = QHBoxLayout()
        bar.setSpacing(6)
        self.generation_combo = QComboBox()
        self.generation_combo.setToolTip("Whose students to compare with the teacher")
        self.teacher_combo = QComboBox()
        for combo in (self.generation_combo, self.teacher_combo):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.teacher_combo.setToolTip("The teacher whose masks and selection scores are shown")
        self.video_combo = QComboBox()
        self.video_combo.setMinimumContentsLength(12)
        self.video_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.sort_combo = QComboBox()
        self.sort_combo.setMinimumContentsLength(18)
        self.sort_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.sort_combo.setToolTip("Sort the rows by a score (rows without one go last)\n"
                                   + DISAGREEMENT_TIP + "\n" + IOU_TIP)
        self.descending_button = QToolButton()
        self.descending_button.setCheckable(True)
        self.descending_button.setToolTip("Highest first (checked) or lowest first")
        self.descending_button.toggled.connect(self._descending_toggled)
        self._show_direction(False)
        for caption, widget in (("Generation", self.generation_combo), ("Teacher", self.teacher_combo),
                                ("Video", self.video_combo), ("Sort by", self.sort_combo)):
            label = QLabel(caption)
            label.setStyleSheet(MUTED)
            bar.addWidget(label)
            bar.addWidget(widget)
        bar.addWidget(self.descending_button)
        bar.addStretch(1)
        self.progress_label = QLabel("")
        self.progress_label.setStyleSheet(MUTED)
        bar.addWidget(self.progress_label)
        outer.addLayout(bar)

        self.hint_label = QLabel("")
        self.hint_label.setWordWrap(True)
        self.hint_label.setStyleSheet("color: #8a5a00; background: #fff6e0; padding: 4px;")
        self.hint_label.hide()
        outer.addWidget(self.hint_label)

        self.model = BrowserModel(self)
        self.table = BrowserTable(self.model)
        self.delegate = CellDelegate(self.cache, self.loader, THUMB, self.table)
        self.table.use_delegate(self.delegate)
        self.table.horizontalHeader().sectionClicked.connect(self._header_clicked)
        self.table.doubleClicked.connect(lambda index: self.open_row(index.row()))
        self.table.verticalScrollBar().valueChanged.connect(lambda _: self._schedule())
        outer.addWidget(self.table, 1)

        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet(MUTED)
        outer.addWidget(self.status_label)

        self.generation_combo.currentIndexChanged.connect(lambda _: self._generation_changed())
        self.teacher_combo.currentIndexChanged.connect(lambda _: self._teacher_changed())
        self.video_combo.currentIndexChanged.connect(lambda _: self._video_changed())
        self.sort_combo.currentIndexChanged.connect(lambda _: self._sort_combo_changed())

    def _show_direction(self, descending: bool) -> None:
        self.descending_button.blockSignals(True)
        self.descending_button.setChecked(descending)
        self.descending_button.setText("\u2193 high first" if descending else "\u2191 low first")
        self.descending_button.blockSignals(False)

    # ------------------------------------------------------------------ public API
    def rows(self) -> list[dict]:
        """The visible rows in their current order, as plain data."""
        return [row_facts(self.model.frame_at(row), self.model.result_at(row))
                for row in range(self.model.rowCount())]

    def sort_keys(self) -> list[str]:
        info = self.generation_info()
        return sort_keys(info.students if info else (), bool(info and info.has_evalseg))

    def sort_by(self, key: str, descending: bool | None = None) -> None:
        """Order the rows by a key of `sort_keys()` (highest first by default, except the
        frame order); rows without a value go last."""
        if key not in self.sort_keys():
            raise KeyError(f"unknown sort key {key!r}; one of {', '.join(self.sort_keys())}")
        self._sort = (key, key != FRAME_ORDER if descending is None else bool(descending))
        self._sync_sort_widgets()
        self._apply_sort()

    @property
    def sort_key(self) -> tuple[str, bool]:
        return self._sort

    def generations(self) -> list[int]:
        return sorted(self.state.generations) if self.state else []

    @property
    def generation(self) -> int | None:
        return self._generation

    def generation_info(self) -> GenerationInfo | None:
        if self.state is None or self._generation is None:
            return None
        return self.state.generations.get(self._generation)

    def set_generation(self, generation: int) -> None:
        index = self.generation_combo.findData(generation)
        if index < 0:
            raise KeyError(f"no trained students of generation {generation}")
        self.generation_combo.setCurrentIndex(index)

    def set_video(self, video_id: int | None) -> None:
        """Show one video's rows (None: all)."""
        index = self.video_combo.findData(video_id if video_id is not None else -1)
        if index < 0:
            raise KeyError(f"no video {video_id}")
        self.video_combo.setCurrentIndex(index)

    def is_complete(self) -> bool:
        """True when every row of the current teacher and generation has its scores."""
        return self._complete

    def open_row(self, row: int) -> RowDialog:
        """The large side-by-side view of a row (its `loaded` signal fires when it is filled)."""
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
        frame, result = self.model.frame_at(row), self.model.result_at(row)
        dialog = self.dialog = RowDialog(frame, result, self.model.columns, self)
        size, display = self.working_size(), self.display_size(frame)
        predictor = self.predictor() if dialog.predicts else None

        def work(cancel) -> RowImages:
            images = read_row(frame, size, display, predictor)
            if predictor is not None:
                freeze_after_import("tensorflow")   # the students loaded it: see app.gc_policy
            return images

        # One large view at a time: the key drops a replaced dialog's pictures.
        self.calls.run("row", work, dialog.show_images, dialog.show_error)
        dialog.show()
        return dialog

    def shutdown(self) -> None:
        """Stop the thumbnail thread and further batches."""
        self.calls.forget()
        self.state = None
        self.loader.stop()

    # -- used by the large view
    def working_size(self) -> tuple[int, int]:
        return self.state.working_size if self.state else (256, 256)

    def display_size(self, frame: BrowseFrame) -> tuple[int, int]:
        for video_id, _, width, height in (self.state.videos if self.state else []):
            if video_id == frame.video_id:
                return fit_size(width, height, QSize(480, 360))
        return 480, 360

    def predictor(self) -> StudentPredictor | None:
        info = self.generation_info()
        if info is None or not info.students or self.state is None:
            return None
        root, generation = self.state.root, info.generation
        return self._predictors.get((str(root), generation, info.signature),
                                    lambda: StudentPredictor(root / "models", generation))

    # ------------------------------------------------------------------ state
    def _project_changed(self) -> None:
        self.calls.forget()
        self._computing = False   # a batch still running for the old project is dropped
        self.state = None
        self._results.clear()
        self._predictors.clear()
        self._sources = SourceCache()
        self._generation, self._video_id = None, None
        self._warning = ""
        self._complete = False
        self.loader.reset()
        self.cache.clear()
        self.delegate.clear()
        self.model.set_contents([], {}, make_columns(None), None, None, {}, np.empty(0, np.int64))
        for combo in (self.generation_combo, self.teacher_combo, self.video_combo, self.sort_combo):
            combo.blockSignals(True)
            combo.clear()
            combo.blockSignals(False)
        self.hint_label.hide()
        self.progress_label.setText("")
        self.status_label.setText("" if self.context.project else "No project")
        self.request_state()

    def _store_changed(self, change: StoreChange) -> None:
        """A job or a panel wrote the store: re-read, once the job has ended, only when frames,
        masks or models changed (an applied selection or a decision changes nothing shown here,
        and the re-read would compete with the window for the GIL just as the next job starts)."""
        if change.live or not change.touches(BROWSED_AREAS):
            return
        if not self.isVisible():
            self._refresh_when_shown = True   # one re-read when shown, not one per job meanwhile
            return
        self.request_state()

    def request_state(self) -> None:
        """Re-read the rows' catalog facts and the models folder in a thread; requests made while
        one runs are coalesced into one read after it."""
        if self.context.project is None:
            return
        root, teacher = self.context.root, self.teacher_combo.currentData()
        self.calls.run("state", lambda cancel: read_state(root, teacher), self._apply_state,
                       self._state_failed, coalesce=True)

    def _state_failed(self, message: str) -> None:
        self.status_label.setText(f"Cannot read the project: {message}")

    def _apply_state(self, state: BrowseState) -> None:
        previous = self.state
        self.state = state
        if previous is not None and (previous.generations != state.generations or
                                     previous.teacher_signature != state.teacher_signature):
            self.loader.reset()      # a model was retrained or the teacher ran again
            self.cache.clear()
            self.delegate.clear()
        self._fill_combo(self.teacher_combo, [(name, name) for name in state.teachers],
                         state.teacher, "(no teacher masks yet)")
        generations = sorted(state.generations)
        wanted = self._generation if self._generation in state.generations else (
            generations[-1] if generations else None)
        self._fill_combo(self.generation_combo,
                         [(generation_label(state.generations[g]), g) for g in generations],
                         wanted, "(no trained students)")
        self._generation = wanted
        videos = [("All videos", -1)] + [(name, vid) for vid, name, _, _ in state.videos]
        video = self._video_id if any(v == self._video_id for _, v in videos[1:]) else None
        self._fill_combo(self.video_combo, videos, video if video is not None else -1, "")
        self._video_id = video
        self._rebuild()
        self.state_loaded.emit()

    @staticmethod
    def _fill_combo(combo: QComboBox, items: list[tuple[str, object]], current, empty: str) -> None:
        combo.blockSignals(True)
        combo.clear()
        for text, data in items:
            combo.addItem(text, data)
        if not items and empty:
            combo.addItem(empty, None)
        combo.setEnabled(bool(items))
        index = combo.findData(current) if current is not None else -1
        combo.setCurrentIndex(max(index, 0))
        combo.blockSignals(False)

    # ------------------------------------------------------------------ rows
    def _current_results(self) -> dict[int, FrameResult]:
        return self._results.get(results_key(self.state, self.generation_info()), dict)

    def _rebuild(self) -> None:
        """Columns, rows and order for the current state, teacher, generation and video."""
        state, info = self.state, self.generation_info()
        if state is None:
            return
        columns = make_columns(info)
        thumbs = {vid: fit_size(w, h, THUMB) for vid, _, w, h in state.videos}
        keys = self.sort_keys()
        if self._sort[0] not in keys:
            self._sort = (FRAME_ORDER, False)
        anchor = self.table.anchor()
        self.model.set_contents(state.frames, self._current_results(), columns,
                                info.generation if info else None, state.teacher_id, thumbs,
                                self._ordered_view(state.frames))
        self.table.restore(anchor)
        cell = self.delegate.cell_size().width()
        for i, column in enumerate(columns):
            self.table.setColumnWidth(i, cell if column.image else 96)
        self.sort_combo.blockSignals(True)
        self.sort_combo.clear()
        self.sort_combo.addItems(keys)
        self.sort_combo.blockSignals(False)
        self._sync_sort_widgets()
        self._update_hint()
        self._complete = False
        self._update_progress()
        self._schedule()

    def _update_hint(self) -> None:
        text = hint_text(self.state, self.generation_info(), self._warning)
        self.hint_label.setText(text)
        self.hint_label.setVisible(bool(text))

    def hint_text(self) -> str:
        return self.hint_label.text() if not self.hint_label.isHidden() else ""

    def _ordered_view(self, frames: list[BrowseFrame]) -> np.ndarray:
        results = self.model.results if frames is self.model.frames else self._current_results()
        return ordered_view(frames, results, self._video_id, *self._sort)

    def _apply_sort(self) -> None:
        if self.state is not None:
            self.model.reorder(self._ordered_view(self.model.frames))

    def _sync_sort_widgets(self) -> None:
        key, descending = self._sort
        self.sort_combo.blockSignals(True)
        self.sort_combo.setCurrentIndex(max(self.sort_combo.findText(key), 0))
        self.sort_combo.blockSignals(False)
        self._show_direction(descending)
        header = self.table.horizontalHeader()
        column = next((i for i, c in enumerate(self.model.columns) if c.key == key), -1)
        header.setSortIndicator(column, Qt.DescendingOrder if descending else Qt.AscendingOrder)

    # ------------------------------------------------------------------ controls
    def _generation_changed(self) -> None:
        self._generation = self.generation_combo.currentData()
        self._rebuild()

    def _teacher_changed(self) -> None:
        self.request_state()

    def _video_changed(self) -> None:
        data = self.video_combo.currentData()
        self._video_id = None if data in (None, -1) else data
        if self.state is not None:
            self.model.set_view(self._ordered_view(self.model.frames))
            self._update_progress()
            self._schedule()

    def _sort_combo_changed(self) -> None:
        key = self.sort_combo.currentText()
        if key:
            self.sort_by(key)

    def _descending_toggled(self, descending: bool) -> None:
        self.sort_by(self._sort[0], descending)

    def _header_clicked(self, section: int) -> None:
        key = self.model.columns[section].key if 0 <= section < len(self.model.columns) else None
        if key is None:
            self._sync_sort_widgets()   # not sortable: keep the indicator where it was
            return
        self.sort_by(key, not self._sort[1] if key == self._sort[0] else None)

    # ------------------------------------------------------------------ computing
    def _schedule(self) -> None:
        """Start the next batch if none runs (only while the panel is shown)."""
        if self._computing or self.state is None or not self.isVisible():
            return
        batch = next_batch(self.model.frames, self.model.view, max(self.table.rowAt(0), 0),
                           self._current_results())
        if not batch:
            self._update_progress()
            if not self._complete:
                self._complete = True
                self.rows_complete.emit()
            return
        self._computing = True
        key, predictor, size, sources = (results_key(self.state, self.generation_info()),
                                         self.predictor(), self.state.working_size, self._sources)

        def work(cancel) -> BatchScores:
            scores = compute_batch(batch, size, predictor, sources)
            freeze_after_import("tensorflow")   # the students loaded it: see app.gc_policy
            return scores

        def failed(message: str) -> None:   # keep going: these rows stay empty, the hint says why
            self._batch_done(key, BatchScores([FrameResult(f.frame_id) for f in batch], message))

        self.calls.run("batch", work, lambda scores: self._batch_done(key, scores), failed)

    def _batch_done(self, key: tuple, scores: BatchScores) -> None:
        self._computing = False
        if scores.warning and scores.warning != self._warning:
            self._warning = scores.warning
            self._update_hint()
        self.batches_computed += 1
        kept = self._results.peek(key)
        if kept is not None:
            for result in scores.results:
                kept[result.frame_id] = result
        if self.state is not None and key == results_key(self.state, self.generation_info()):
            self.model.frames_updated({r.frame_id for r in scores.results})
            if self._sort[0] not in (FRAME_ORDER, TEACHER_SCORE):
                self._apply_sort()   # computed rows take their place (rows without values last)
            self._update_progress()
        self._schedule()

    def _update_progress(self) -> None:
        if self.state is None:
            self.progress_label.setText("")
            return
        self.progress_label.setText(progress_text(self.model.shown_frames(), self.model.results,
                                                  self.generation_info() is not None))

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if self._refresh_when_shown:
            self._refresh_when_shown = False
            self.request_state()
        self._schedule()

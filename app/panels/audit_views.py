"""The audit panel's views of the table: the grid's model, the thumbnail a cell shows, and the
large view of one mask. They read pixels through ussl_core.views.audit only."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt, Signal
from PySide6.QtWidgets import QDialog, QLabel, QVBoxLayout

from app.background import BackgroundCalls
from app.style import MUTED, THUMB
from app.widgets.mask_view import MaskView
from app.widgets.thumbnails import (BadgeRole, CellRole, DimRole, KeyRole, PayloadRole, RecordRole,
                                    ThumbnailGrid, fit_size)
from ussl_core.views.audit import (NAMES, AuditRecord, AuditTable, LargeView, MaskPixels, is_kept,
                                   read_large_view, render_thumbnail)


def render_cell(pixels: MaskPixels) -> np.ndarray:
    """A grid cell's thumbnail (the loader thread's work): the source's aspect in a THUMB tile."""
    return render_thumbnail(pixels, fit_size(*pixels.source_size, THUMB))


# ============================================================================ model
class AuditModel(QAbstractListModel):
    """The grid's rows: the table's positions that pass the filters, in score order."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.table: AuditTable | None = None
        self.view = np.empty(0, np.int64)
        self.kept = np.zeros(0, bool)   # per table position: kept by the cut-off

    # -- contents
    def set_table(self, table: AuditTable | None, reset: bool = True) -> None:
        """A new table; reset=False when `apply_filter` (which resets) follows at once."""
        if reset:
            self.beginResetModel()
        self.table = table
        self.view = np.arange(len(table), dtype=np.int64) if table is not None else np.empty(0, np.int64)
        self.kept = np.zeros(len(self.view), bool)
        if reset:
            self.endResetModel()

    def apply_filter(self, video_id: int | None, low: float, high: float, decision: str) -> None:
        self.beginResetModel()
        self.view = (np.empty(0, np.int64) if self.table is None
                     else self.table.filtered(video_id, low, high, decision))
        self.endResetModel()

    def set_kept(self, kept: np.ndarray) -> bool:
        """Move the cut-off (which table positions the score keeps); True when it moved. No
        dataChanged over every row (with 100,000 rows the view walks them all, ~80 ms): the
        caller repaints the visible cells."""
        if np.array_equal(kept, self.kept):
            return False
        self.kept = kept
        return True

    def rows_of(self, positions: np.ndarray) -> np.ndarray:
        """Grid rows of table positions (those that pass the filters)."""
        positions = np.asarray(positions, np.int64)
        rows = np.searchsorted(self.view, positions)
        ok = rows < len(self.view)
        ok[ok] = self.view[rows[ok]] == positions[ok]
        return rows[ok]

    def set_codes(self, positions: np.ndarray, codes: np.ndarray) -> None:
        """Show new decisions at once (the store has them already)."""
        if self.table is None:
            return
        self.table.decision[positions] = codes
        for row in self.rows_of(positions):
            index = self.index(int(row))
            self.dataChanged.emit(index, index, [BadgeRole, DimRole, CellRole])

    def position(self, row: int) -> int:
        return int(self.view[row])

    def is_kept(self, i: int) -> bool:
        return is_kept(int(self.table.decision[i]), bool(self.kept[i]))

    # -- Qt interface
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt naming)
        return 0 if parent.isValid() else len(self.view)

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or self.table is None:
            return None
        t = self.table
        i = int(self.view[index.row()])
        if role == CellRole:
            return ((t.producer_id, int(t.frame_id[i])), f"{t.score[i]:.3f}",
                    NAMES.get(int(t.decision[i]), ""), not self.is_kept(i))
        if role == Qt.DisplayRole:
            return f"{t.score[i]:.3f}"
        if role == KeyRole:
            return (t.producer_id, int(t.frame_id[i]))
        if role == BadgeRole:
            return NAMES.get(int(t.decision[i]), "")   # never None (see widgets.thumbnails)
        if role == DimRole:
            return not self.is_kept(i)
        if role == PayloadRole:
            return t.pixels(i)
        if role == RecordRole:
            return t.record(i)
        if role == Qt.ToolTipRole:
            return t.describe(i)
        return None


# ============================================================================ large view
class MaskDialog(QDialog):
    """Space on the grid: the mask large (frame | mask | overlay, ground truth outlined). Keys
    ask the panel to decide or move on (`decide_requested`, `step_requested`)."""

    decide_requested = Signal(str)   # "approve", "reject" or "clear" on the mask shown
    step_requested = Signal(int)     # -1 previous, +1 next

    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.calls = BackgroundCalls(context, self)
        self.setWindowTitle("Mask")
        self.resize(1000, 420)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        self.view = MaskView(self)
        self.view.set_mode("side_by_side")
        self.view.set_placeholder("Loading…")
        layout.addWidget(self.view, 1)
        self.info = QLabel("")
        self.info.setStyleSheet(MUTED)
        layout.addWidget(self.info)
        hint = QLabel("A approve · R reject · U clear · ←/→ previous/next · Space or Esc close")
        hint.setStyleSheet(MUTED)
        layout.addWidget(hint)
        self.record: AuditRecord | None = None

    def show_record(self, record: AuditRecord, pixels: MaskPixels, shot_id: int, text: str) -> None:
        same = self.record is not None and self.record.frame_id == record.frame_id
        self.record = record
        self.info.setText(text)
        if same:
            return   # only the decision changed: the images are already there (or on their way)
        root = self.context.root
        # The previous images stay until the new ones are read (no flicker). Arrow keys can
        # outrun the reads: only the latest one is shown.
        self.calls.run("images", lambda cancel: read_large_view(root, pixels, record.frame_id, shot_id),
                       self._loaded, self._failed)

    def _failed(self, message: str) -> None:
        self.view.set_placeholder(message)

    def _loaded(self, images: LargeView) -> None:
        self.view.set_frame(images.frame)
        self.view.set_mask(images.soft)
        self.view.set_ground_truth(images.ground_truth)

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        key = event.key()
        if key in ThumbnailGrid.KEYS and event.modifiers() in (Qt.NoModifier, Qt.ShiftModifier):
            self.decide_requested.emit(ThumbnailGrid.KEYS[key])
            return
        if key in (Qt.Key_Left, Qt.Key_Right):
            self.step_requested.emit(-1 if key == Qt.Key_Left else 1)
            return
        if key == Qt.Key_Space:
            self.close()
            return
        super().keyPressEvent(event)

"""The audit panel's views: the grid's model, the undoable decision command, the purity plot
with its draggable cut-off, and the large view of one mask."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QUndoCommand
from PySide6.QtWidgets import QDialog, QLabel, QVBoxLayout

from app.panels.audit_table import APPROVE, NAMES, NONE, REJECT, AuditRecord, AuditTable
from app.style import MUTED
from app.widgets.plot import PlotCanvas
from app.widgets.thumbnails import (BadgeRole, CellRole, DimRole, KeyRole, PayloadRole, RecordRole,
                                    ThumbnailGrid)
from app.workers import is_alive, never_raising
from ussl_core.demo import overlay
from ussl_core.purity import PurityCurve, read_ground_truth
from ussl_core.store import Project
from ussl_core.store.shards import read_shard

if TYPE_CHECKING:
    from app.panels.audit import AuditPanel







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
        t = self.table
        if t is None:
            self.view = np.empty(0, np.int64)
        else:
            keep = (t.score >= low - 1e-9) & (t.score <= high + 1e-9)
            if video_id is not None:
                keep &= t.video_id == video_id
            if decision == "Approved":
                keep &= t.decision == APPROVE
            elif decision == "Rejected":
                keep &= t.decision == REJECT
            elif decision == "Undecided":
                keep &= t.decision == NONE
            self.view = np.flatnonzero(keep)
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
        code = self.table.decision[i]
        return code == APPROVE or (code != REJECT and bool(self.kept[i]))

    # -- Qt interface
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt naming)
        return 0 if parent.isValid() else len(self.view)

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or self.table is None:
            return None
        t = self.table
        i = int(self.view[index.row()])
        if role == CellRole:
            code = int(t.decision[i])
            return ((t.producer_id, int(t.frame_id[i])), f"{t.score[i]:.3f}", NAMES.get(code, ""),
                    not (code == APPROVE or (code != REJECT and bool(self.kept[i]))))
        if role == Qt.DisplayRole:
            return f"{t.score[i]:.3f}"
        if role == KeyRole:
            return (t.producer_id, int(t.frame_id[i]))
        if role == BadgeRole:
            return NAMES.get(int(t.decision[i]), "")   # never None (see widgets.thumbnails)
        if role == DimRole:
            return not self.is_kept(i)
        if role == PayloadRole:
            return t.payload(i)
        if role == RecordRole:
            return AuditRecord(int(t.frame_id[i]), t.producer_id, float(t.score[i]),
                               int(t.video_id[i]), NAMES.get(int(t.decision[i])))
        if role == Qt.ToolTipRole:
            decision = NAMES.get(int(t.decision[i]), "undecided")
            return (f"{t.video_names.get(int(t.video_id[i]), '?')}, frame {int(t.frame_idx[i])}\n"
                    f"score {t.score[i]:.4f} · rank {i + 1:,} of {len(t):,} · {decision}")
        return None


# ============================================================================ undo
class DecisionCommand(QUndoCommand):
    """One decision on one or more masks; redo sets it, undo restores what each had."""

    def __init__(self, panel: "AuditPanel", producer_id: int, frame_ids: list[int],
                 previous: list[str], decision: str) -> None:
        n = len(frame_ids)
        verb = {"approve": "approve", "reject": "reject", "clear": "clear"}[decision]
        super().__init__(f"{verb} {n} mask{'s' if n != 1 else ''}")
        self.panel = panel
        self.producer_id = producer_id
        self.frame_ids = frame_ids
        self.previous = previous
        self.decision = decision
        self._done = True   # the panel wrote it before pushing; the push's redo is a no-op

    def redo(self) -> None:
        if self._done:
            self._done = False
            return
        self.panel.write_decisions(self.producer_id, self.frame_ids,
                                   [self.decision] * len(self.frame_ids), from_history=True)

    def undo(self) -> None:
        self.panel.write_decisions(self.producer_id, self.frame_ids, self.previous,
                                   from_history=True)


# ============================================================================ plot
class CutoffPlot(PlotCanvas):
    """The purity curve with the selection cut-off as a vertical line the mouse can drag.

    The line and its shaded span are animated artists: moving them restores the saved
    background and blits (a few ms), at most once per timer tick; the whole figure is drawn
    again (draw_idle) only when the curve changes or the canvas is resized.
    """

    cutoff_dragged = Signal(float)   # percent kept

    def __init__(self, parent=None) -> None:
        super().__init__(parent, width=3.6, height=2.6,
                         margins={"left": 0.16, "right": 0.97, "top": 0.95, "bottom": 0.13})
        self.curve: PurityCurve | None = None
        self.message = ""
        self._line = None
        self._span = None
        self._dragging = False
        self.cutoff = 10.0
        self._blit_timer = QTimer(self)
        self._blit_timer.setSingleShot(True)
        self._blit_timer.setInterval(10)
        self._blit_timer.timeout.connect(self.blit_animated)
        self.mpl_connect("button_press_event", self._press)
        self.mpl_connect("motion_notify_event", self._motion)
        self.mpl_connect("button_release_event", self._release)
        self.set_curve(None)

    def set_curve(self, curve: PurityCurve | None, message: str = "") -> None:
        self.curve = curve
        self.message = message
        ax = self.axes
        ax.clear()
        self.style_axes()
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("percent kept (best scores first)")
        ax.set_ylabel("purity")
        if curve is not None and curve.source == "ground_truth":
            ax.plot(curve.percent, _nan(curve.mean_iou), color="#3b6ea8", lw=1.4, label="mean IoU")
            ax.plot(curve.percent, _nan(curve.corloc), color="#d08c2f", lw=1.4, label="CorLoc")
            ax.legend(loc="lower left", frameon=False, fontsize=7)
        elif curve is not None and curve.approved_share is not None:
            ax.plot(curve.percent, _nan(curve.approved_share), color="#2e9d57", lw=1.4,
                    label="approved share of audited")
            ax.legend(loc="lower left", frameon=False, fontsize=7)
        if message:
            ax.text(50, 0.5, message, ha="center", va="center", color="#8a8f94", fontsize=8,
                    wrap=True)
        self._span = ax.axvspan(0, self.cutoff, color="#c0392b", alpha=0.05, lw=0)
        self._line = ax.axvline(self.cutoff, color="#c0392b", lw=1.3, alpha=0.9)
        self.set_animated([self._span, self._line])
        self.redraw()

    def set_cutoff(self, percent: float) -> None:
        cutoff = float(min(max(percent, 0.0), 100.0))
        if self._line is None or cutoff == self.line_x:
            self.cutoff = cutoff
            return
        self.cutoff = cutoff
        self._line.set_xdata([cutoff, cutoff])
        self._span.set_width(cutoff)
        if not self._blit_timer.isActive():
            self._blit_timer.start()

    @property
    def line_x(self) -> float:
        return float(self._line.get_xdata()[0])

    def _percent_at(self, event) -> float | None:
        if event.inaxes is not self.axes or event.xdata is None:
            return None
        return float(min(max(event.xdata, 0.1), 100.0))

    def _press(self, event) -> None:
        if event.button == 1 and self.isEnabled():
            percent = self._percent_at(event)
            if percent is not None:
                self._dragging = True
                self.cutoff_dragged.emit(percent)

    def _motion(self, event) -> None:
        if self._dragging:
            percent = self._percent_at(event)
            if percent is not None:
                self.cutoff_dragged.emit(percent)
        else:
            near = (event.inaxes is self.axes and event.xdata is not None
                    and abs(event.xdata - self.cutoff) < 1.5)
            self.setCursor(Qt.SizeHorCursor if near else Qt.ArrowCursor)

    def _release(self, event) -> None:
        self._dragging = False


def _nan(values) -> list[float]:
    return [math.nan if v is None else v for v in values]


# ============================================================================ large view
class MaskDialog(QDialog):
    """Space on the grid: the mask large (frame | mask | overlay, ground truth outlined)."""

    def __init__(self, panel: "AuditPanel") -> None:
        super().__init__(panel)
        self.panel = panel
        self.setWindowTitle("Mask")
        self.resize(1000, 420)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        try:
            from app.widgets.mask_view import MaskView

            self.view = MaskView(self)
            self.view.set_mode("side_by_side")
            self.view.set_placeholder("Loading…")
            self.label = None
        except ImportError:  # pragma: no cover - the shared view is part of the app
            self.view = None
            self.label = QLabel("Loading…")
            self.label.setAlignment(Qt.AlignCenter)
            self.label.setMinimumSize(600, 300)
        layout.addWidget(self.view or self.label, 1)
        self.info = QLabel("")
        self.info.setStyleSheet(MUTED)
        layout.addWidget(self.info)
        hint = QLabel("A approve · R reject · U clear · ←/→ previous/next · Space or Esc close")
        hint.setStyleSheet(MUTED)
        layout.addWidget(hint)
        self.record: AuditRecord | None = None
        self._token = 0

    def show_record(self, record: AuditRecord, payload: tuple, shot_id: int, text: str) -> None:
        self._token += 1
        token = self._token
        same = self.record is not None and self.record.frame_id == record.frame_id
        self.record = record
        self.info.setText(text)
        root = self.panel.context.root

        def work(cancel):
            frames_path, frames_row, mask_path, mask_row, (tw, th) = payload
            soft = read_shard(Path(mask_path), "masks", mask_row).astype(np.float32) / 255.0
            frame = (read_shard(Path(frames_path), "frames", frames_row) if frames_path
                     else np.zeros(soft.shape + (3,), np.uint8))
            # Working frames are stored at a fixed size: show them in the source's aspect.
            h = max(frame.shape[0], 240)
            size = (max(1, round(h * tw / th)), h)
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
            soft = cv2.resize(soft, size, interpolation=cv2.INTER_LINEAR)
            gt = None
            with Project.open(root) as project:
                for f in project.frames(shot_id=shot_id):
                    if f.id == record.frame_id and f.gt_path:
                        gt = read_ground_truth(project.abspath(f.gt_path))
            return frame, soft, gt

        if same:
            return   # only the decision changed: the images are already there
        # The previous images stay until the new ones are read (no flicker). Arrow keys can outrun the reads: only the latest one is shown.
        self.panel.context.run_light(
            never_raising(work, "images", "audit"),
            lambda event: is_alive(self) and token == self._token and self._loaded(event))

    def _loaded(self, event) -> None:
        if "error" in event.metrics:
            if self.view is not None:
                self.view.set_placeholder(event.metrics["error"])
            else:
                self.label.setText(event.metrics["error"])
            return
        frame, soft, gt = event.metrics["images"]
        if self.view is not None:
            self.view.set_frame(frame)
            self.view.set_mask(soft)
            self.view.set_ground_truth(gt)
        else:
            from app.widgets.thumbnails import qimage_from_rgb
            from PySide6.QtGui import QPixmap

            big = overlay(frame, soft)
            self.label.setPixmap(QPixmap.fromImage(qimage_from_rgb(big)).scaled(
                self.label.size(), Qt.KeepAspectRatio, Qt.SmoothTransformation))

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        key = event.key()
        if key in ThumbnailGrid.KEYS and event.modifiers() in (Qt.NoModifier, Qt.ShiftModifier):
            self.panel.step(0)   # the mask shown here only, not the grid's whole selection
            self.panel.decide(ThumbnailGrid.KEYS[key])
            self.panel.open_large_view()   # the next mask, or this one with its new decision
            return
        if key in (Qt.Key_Left, Qt.Key_Right):
            self.panel.step(-1 if key == Qt.Key_Left else 1)
            self.panel.open_large_view()
            return
        if key == Qt.Key_Space:
            self.close()
            return
        super().keyPressEvent(event)



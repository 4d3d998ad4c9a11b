"""The Per-image panel's table: a virtual model over the rows' facts and computed scores, the
delegate that paints its cells (thumbnails, MultiSelect-Net's pick outlined) and the view that
keeps the researcher's place when the rows are rebuilt. What each cell says
is shaped in ussl_core.views.browse; this module only answers Qt's questions with it."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QRect, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QStyledItemDelegate, QTableView

from app.style import THUMB
from app.widgets.thumbnails import CellRole, PayloadRole, ThumbnailDelegate
from ussl_core.views.browse import (BrowseFrame, Column, FrameResult, cell_of, make_columns,
                                    number_text, payload_of, tooltip_of)

PICKED = QColor("#e08a00")     # MultiSelect-Net's pick, in the table and the large view


class BrowserModel(QAbstractTableModel):
    """Rows: positions into `frames` that pass the video filter, in the current sort order."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.frames: list[BrowseFrame] = []
        self.results: dict[int, FrameResult] = {}
        self.columns: list[Column] = make_columns(None)
        self.view = np.empty(0, np.int64)
        self.generation: int | None = None
        self.teacher_id: int | None = None
        self.thumb_sizes: dict[int, tuple[int, int]] = {}

    def set_contents(self, frames: list[BrowseFrame], results: dict[int, FrameResult],
                     columns: list[Column], generation: int | None, teacher_id: int | None,
                     thumb_sizes: dict[int, tuple[int, int]], view: np.ndarray) -> None:
        self.beginResetModel()
        self.frames, self.results, self.columns = frames, results, columns
        self.generation, self.teacher_id, self.thumb_sizes = generation, teacher_id, thumb_sizes
        self.view = view
        self.endResetModel()

    def set_view(self, view: np.ndarray) -> None:
        """Other rows (another video): a reset, nothing to keep."""
        self.beginResetModel()
        self.view = view
        self.endResetModel()

    def reorder(self, view: np.ndarray) -> None:
        """The same rows in another order; selection and current row follow their frames."""
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        positions = [int(self.view[i.row()]) for i in old]
        row_of = {int(p): r for r, p in enumerate(view)}
        self.view = view
        self.changePersistentIndexList(
            old, [self.index(row_of[p], i.column()) if p in row_of else QModelIndex()
                  for p, i in zip(positions, old)])
        self.layoutChanged.emit()

    def frames_updated(self, frame_ids: set[int]) -> None:
        rows = [r for r, p in enumerate(self.view.tolist()) if self.frames[p].frame_id in frame_ids]
        if rows:
            self.dataChanged.emit(self.index(min(rows), 0),
                                  self.index(max(rows), len(self.columns) - 1))

    def row_of(self, frame_id: int | None) -> int | None:
        """The row showing a frame, None when it is not listed."""
        if frame_id is None:
            return None
        position = next((p for p, f in enumerate(self.frames) if f.frame_id == frame_id), None)
        rows = np.flatnonzero(self.view == position) if position is not None else ()
        return int(rows[0]) if len(rows) else None

    def frame_at(self, row: int) -> BrowseFrame:
        return self.frames[int(self.view[row])]

    def result_at(self, row: int) -> FrameResult | None:
        return self.results.get(self.frame_at(row).frame_id)

    def shown_frames(self) -> list[BrowseFrame]:
        return [self.frames[p] for p in self.view.tolist()]

    # -- Qt interface
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt naming)
        return 0 if parent.isValid() else len(self.view)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if orientation != Qt.Horizontal or not 0 <= section < len(self.columns):
            return None
        if role == Qt.DisplayRole:
            return self.columns[section].title
        if role == Qt.ToolTipRole:
            return self.columns[section].tip
        return None

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        column = self.columns[index.column()]
        frame = self.frame_at(index.row())
        result = self.results.get(frame.frame_id)
        if role == CellRole:
            return (cell_of(column, frame, result, self.generation, self.teacher_id)
                    if column.image else None)
        if role == PayloadRole:
            size = self.thumb_sizes.get(frame.video_id, (THUMB.width(), THUMB.height()))
            return payload_of(column, frame, result, size)
        if role == Qt.DisplayRole and not column.image:
            return number_text(column, result)
        if role == Qt.TextAlignmentRole and not column.image:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ToolTipRole:
            return tooltip_of(column, frame, result)
        return None


class CellDelegate(ThumbnailDelegate):
    """Thumbnail cells (placeholders for what is not computed yet, never requested), the
    MultiSelect-Net pick outlined; number columns painted as plain text."""

    def paint(self, painter: QPainter, option, index) -> None:
        cell = index.model().data(index, CellRole)
        if cell is None:
            QStyledItemDelegate.paint(self, painter, option, index)
            return
        if cell[0] is not None:
            super().paint(painter, option, index)
            return
        _, caption, badge, dim = cell
        ratio = painter.device().devicePixelRatioF()
        painter.drawPixmap(option.rect.topLeft(), self._compose(None, caption, badge, dim, ratio))

    def _compose(self, thumbnail, caption: str, badge: str, dim: bool, ratio: float) -> QPixmap:
        cell = super()._compose(thumbnail, caption, "", dim, ratio)
        if badge == "picked":
            painter = QPainter(cell)
            painter.setRenderHint(QPainter.Antialiasing, True)
            painter.setPen(QPen(PICKED, 3))
            m = self.margin
            painter.drawRect(QRect(m, m, self.thumb_size.width(), self.thumb_size.height())
                             .adjusted(1, 1, -1, -1))
            font = QFont(self._badge_font)
            painter.setFont(font)
            painter.setPen(PICKED)
            painter.drawText(QRect(m + 4, m + 2, 20, 18), Qt.AlignLeft | Qt.AlignTop, "\u2605")
            painter.end()
        return cell


class BrowserTable(QTableView):
    """Fixed-size thumbnail rows, one selected at a time, scrolled by the pixel, sortable by a
    click on a header."""

    def __init__(self, model: BrowserModel, parent=None) -> None:
        super().__init__(parent)
        self.setModel(model)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.setShowGrid(False)
        self.setWordWrap(False)
        vertical = self.verticalHeader()
        vertical.hide()
        vertical.setSectionResizeMode(QHeaderView.Fixed)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Fixed)
        header.setHighlightSections(False)
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)

    def use_delegate(self, delegate: CellDelegate) -> None:
        delegate.attach(self)
        self.verticalHeader().setDefaultSectionSize(delegate.cell_size().height())

    def anchor(self) -> tuple[int | None, int | None, int]:
        """The current row's frame, the frame at the top of the view and how many pixels of it
        are scrolled past: what a rebuild (a job wrote the store) must not lose."""
        model: BrowserModel = self.model()
        if not len(model.view):
            return None, None, 0
        current = self.currentIndex()
        current_id = model.frame_at(current.row()).frame_id if current.isValid() else None
        top = self.rowAt(0)
        if top < 0:
            return current_id, None, 0
        return current_id, model.frame_at(top).frame_id, -self.rowViewportPosition(top)

    def restore(self, anchor: tuple[int | None, int | None, int]) -> None:
        """Back to the place `anchor` noted, for the frames still listed."""
        model: BrowserModel = self.model()
        current_id, top_id, offset = anchor
        current_row, top_row = model.row_of(current_id), model.row_of(top_id)
        if current_row is not None:
            selection = self.selectionModel()
            selection.blockSignals(True)
            self.setCurrentIndex(model.index(current_row, 0))
            selection.blockSignals(False)
        if top_row is not None:
            row_height = self.verticalHeader().defaultSectionSize()
            self.verticalScrollBar().setValue(top_row * row_height + offset)

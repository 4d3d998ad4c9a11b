"""The Videos panel's table of the project's videos: a model that signals only the rows that
changed (it is refreshed once a second while the teacher runs), and a sortable view of it."""

from __future__ import annotations

from PySide6.QtCore import (QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt,
                            Signal)
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from ussl_core.views.videos import COLUMNS, TEACHER_COLUMN, VideoRow

NUMERIC_COLUMNS = {1, 2}
TEACHER_IN_PROGRESS = "00000/00000"   # the teacher column's width while it runs, not to clip


class VideosModel(QAbstractTableModel):
    COLUMNS = COLUMNS

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[VideoRow] = []
        self.texts: list[tuple[str, ...]] = []   # each row's cells as shown, made once per change
        self.teacher = ""

    def set_rows(self, rows: list[VideoRow], teacher: str) -> None:
        header_changed = teacher != self.teacher
        self.teacher = teacher
        if [r.id for r in rows] == [r.id for r in self.rows]:
            # Only the rows that changed: the view and the sort proxy ask a Python data() for
            # every role of every signalled cell, once a second while the teacher runs.
            changed = [i for i, (new, old) in enumerate(zip(rows, self.rows)) if new != old]
            self.rows, self.texts = rows, [row.texts() for row in rows]
            for i in changed:
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))
        else:
            self.beginResetModel()
            self.rows, self.texts = rows, [row.texts() for row in rows]
            self.endResetModel()
        if header_changed:
            self.headerDataChanged.emit(Qt.Horizontal, TEACHER_COLUMN, TEACHER_COLUMN)

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt naming)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if orientation != Qt.Horizontal:
            return None
        if role == Qt.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ToolTipRole and section == TEACHER_COLUMN:
            return f"Frames with masks of {self.teacher}" if self.teacher else None
        return None

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        col = index.column()
        if role == Qt.DisplayRole:
            return self.texts[index.row()][col]
        if role == Qt.UserRole:  # sort key
            return row.sort_keys()[col]
        if role == Qt.TextAlignmentRole and col in NUMERIC_COLUMNS:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ToolTipRole:
            if col == TEACHER_COLUMN:
                if row.kind == "images":
                    return "An image collection: the video teacher does not use it"
                return f"{row.masks} of {row.frames} frames have {self.teacher} masks"
            return f"{row.name} ({row.kind})\n{row.source}"
        return None

    def row_of(self, video_id: int) -> int:
        for i, row in enumerate(self.rows):
            if row.id == video_id:
                return i
        return -1


class VideosTable(QTableView):
    """The sortable table and the selected video (`selected`, a video id or None);
    `video_chosen(id)` when the user selects another video."""

    video_chosen = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.videos = VideosModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.videos)
        self.proxy.setSortRole(Qt.UserRole)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.sortByColumn(-1, Qt.AscendingOrder)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(22)
        header = self.horizontalHeader()
        header.setHighlightSections(False)
        # Sized to the contents when the rows are replaced, not on every change (a
        # ResizeToContents header re-measures every cell whenever any cell changes).
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        self.videos.modelReset.connect(self._fit_columns)
        self.selectionModel().currentRowChanged.connect(self._current_row_changed)
        self.selected: int | None = None

    def _fit_columns(self) -> None:
        """Columns as wide as their texts, measured here: resizeColumnToContents would ask the
        model's data() for every role of every cell (2,400 calls for 20 videos)."""
        metrics = self.fontMetrics()
        header = self.horizontalHeader()
        for column in range(1, len(COLUMNS)):
            texts = [COLUMNS[column]] + [row[column] for row in self.videos.texts]
            if column == TEACHER_COLUMN:
                texts.append(TEACHER_IN_PROGRESS)
            header.resizeSection(column, max(metrics.horizontalAdvance(t) for t in texts) + 24)

    def select_video(self, video_id: int | None) -> None:
        """Make a video the selected one (None: none), without signalling it as the user's
        choice."""
        if video_id is None:
            self.selected = None
            return
        index = self.proxy.mapFromSource(self.videos.index(self.videos.row_of(video_id), 0))
        if self.currentIndex().row() != index.row() or self.selected != video_id:
            self.selected = video_id
            self.selectionModel().blockSignals(True)
            self.setCurrentIndex(index)
            self.selectRow(index.row())
            self.selectionModel().blockSignals(False)
            self.viewport().update()

    def _current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            return
        video_id = self.videos.rows[self.proxy.mapToSource(current).row()].id
        if video_id != self.selected:
            self.selected = video_id
            self.video_chosen.emit(video_id)

"""A horizontal row of thumbnails with captions, one per image, chosen one at a time."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem, QWidget

from app.style import THUMB
from app.widgets.thumbnails import qimage_from_rgb


class FilmStrip(QListWidget):
    """A horizontal row of thumbnails, one per image; an image's placeholder stays until its
    thumbnail is set."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.IconMode)
        self.setFlow(QListView.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Static)
        self.setIconSize(THUMB)
        self.setGridSize(QSize(THUMB.width() + 12, THUMB.height() + 24))
        self.setUniformItemSizes(True)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setTextElideMode(Qt.ElideMiddle)
        self.setFixedHeight(THUMB.height() + 24 + 16)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setDragEnabled(False)
        self.setAcceptDrops(False)   # drops go to the panel
        placeholder = QPixmap(THUMB)
        placeholder.fill(QColor("#e4e6e8"))
        self.placeholder = placeholder

    def add_image(self, caption: str, tooltip: str = "") -> None:
        item = QListWidgetItem(self.placeholder, caption)
        item.setToolTip(tooltip)
        self.addItem(item)

    def set_thumbnail(self, row: int, rgb: np.ndarray) -> None:
        self.item(row).setIcon(QPixmap.fromImage(qimage_from_rgb(rgb)))

    def reset_thumbnails(self) -> None:
        """Every image back to the placeholder (its thumbnail is being made again)."""
        for row in range(self.count()):
            self.item(row).setIcon(self.placeholder)

    def remove_quietly(self, row: int) -> None:
        """Take an image off without signalling; the one after it is current if it was."""
        was_current = row == self.currentRow()
        self.blockSignals(True)
        self.takeItem(row)
        if was_current and self.count():
            self.setCurrentRow(min(row, self.count() - 1))
        self.blockSignals(False)

    def keyboardSearch(self, search: str) -> None:  # noqa: N802 (Qt naming)
        """No type-ahead search: keys belong to the window."""

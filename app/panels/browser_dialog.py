"""The Per-image panel's large view of one row: its frame and every mask side by side. The panel
reads the row in a thread (ussl_core.views.browse.read_row) and hands the pictures over; the
tiles and captions are shaped by `row_tiles`."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QDialog, QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.panels.browser_table import PICKED
from app.style import MUTED
from app.widgets.thumbnails import qimage_from_rgb
from ussl_core.views.browse import BrowseFrame, Column, FrameResult, RowImages, row_summary, row_tiles


class ImageTile(QWidget):
    """A title, a picture scaled to fit (aspect kept), a caption; outlined when `picked`."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.caption = ""
        self.picked = False
        self.image = None
        self.setMinimumSize(160, 140)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_image(self, array: np.ndarray | None, caption: str = "", picked: bool = False) -> None:
        self.image = None if array is None else qimage_from_rgb(array)
        self.caption, self.picked = caption, picked
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        line = self.fontMetrics().height() + 2
        painter.setPen(PICKED if self.picked else QColor("#3c3f42"))
        painter.drawText(QRect(0, 0, self.width(), line), Qt.AlignCenter,
                         ("\u2605 " if self.picked else "") + self.title)
        area = QRect(0, line, self.width(), self.height() - 2 * line)
        if self.image is None:
            painter.fillRect(area.adjusted(2, 2, -2, -2), QColor("#e4e6e8"))
        else:
            fitted = self.image.size().scaled(area.size() - QSize(6, 6), Qt.KeepAspectRatio)
            target = QRect(0, 0, fitted.width(), fitted.height())
            target.moveCenter(area.center())
            painter.setRenderHint(QPainter.SmoothPixmapTransform, True)
            painter.drawImage(target, self.image)
            if self.picked:
                painter.setPen(QPen(PICKED, 3))
                painter.drawRect(target.adjusted(-2, -2, 2, 2))
        painter.setPen(QColor("#6b7075"))
        painter.drawText(QRect(0, self.height() - line, self.width(), line), Qt.AlignCenter,
                         self.caption)
        painter.end()


class RowDialog(QDialog):
    """Double-click on a row: its frame and every mask large, side by side. Student masks are
    predicted again at full resolution (the table keeps small copies): the tiles stay empty
    until `show_images` gets them."""

    loaded = Signal()

    def __init__(self, frame: BrowseFrame, result: FrameResult | None, columns: list[Column],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WA_DeleteOnClose, False)
        self.frame, self.result = frame, result
        self.columns = [c for c in columns if c.image]
        self.setWindowTitle(f"{frame.video}, frame {frame.idx}")
        self.resize(1200, 560)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        grid = QGridLayout()
        grid.setSpacing(6)
        per_row = 5 if len(self.columns) > 6 else len(self.columns)
        self.tiles: dict[Column, ImageTile] = {}
        for i, column in enumerate(self.columns):
            tile = ImageTile(column.title)
            tile.setToolTip(column.tip)
            self.tiles[column] = tile
            grid.addWidget(tile, i // per_row, i % per_row)
        layout.addLayout(grid, 1)
        self.info = QLabel("Loading\u2026")
        self.info.setStyleSheet(MUTED)
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.info)
        self.is_loaded = False

    @property
    def predicts(self) -> bool:
        """Whether the row's students must be predicted again for this view."""
        return any(c.kind == "student" for c in self.columns)

    def show_images(self, images: RowImages) -> None:
        for column, tile in row_tiles(self.columns, self.frame, self.result, images).items():
            self.tiles[column].set_image(tile.image, tile.caption, tile.picked)
        self.info.setText(row_summary(self.frame, self.result))
        self.is_loaded = True
        self.loaded.emit()

    def show_error(self, message: str) -> None:
        self.info.setText(message)

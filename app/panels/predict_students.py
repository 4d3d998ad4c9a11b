"""The Predict panel's row of students: every student's mask of the shown image, captioned with
its EvalSeg-Net score, MultiSelect-Net's pick marked (as in the paper's Figure 4)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from app.style import MUTED
from app.widgets.image_tile import ImageTile
from ussl_core.views.predict import ImageResult, student_tiles, students_heading

STUDENT_TILE = QSize(140, 116)


class StudentsRow(QWidget):
    """A heading and one tile per loaded student, scrolled sideways when they do not fit."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(4)
        self.heading = QLabel("Students")
        self.heading.setStyleSheet(MUTED)
        outer.addWidget(self.heading)
        row = QWidget()
        self.tiles_layout = QHBoxLayout(row)
        self.tiles_layout.setContentsMargins(0, 0, 0, 0)
        self.tiles_layout.setSpacing(4)
        self.tiles_layout.addStretch(1)
        self.tiles: dict[str, ImageTile] = {}
        scroll = QScrollArea()
        scroll.setWidget(row)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setFixedHeight(STUDENT_TILE.height() + 18)
        outer.addWidget(scroll)

    def show_image(self, names: Sequence[str], result: ImageResult | None, method: str) -> None:
        """The students `names` (tiles made anew when they change) on `result` (None: empty
        tiles); `method` is the one shown above."""
        if list(self.tiles) != list(names):
            for tile in self.tiles.values():
                self.tiles_layout.removeWidget(tile)
                tile.deleteLater()
            self.tiles = {}
            for i, name in enumerate(names):
                tile = ImageTile(name)
                tile.setFixedSize(STUDENT_TILE)
                self.tiles_layout.insertWidget(i, tile)
                self.tiles[name] = tile
        aspect = result.size[0] / result.size[1] if result else None
        for shown in student_tiles(names, result, method):
            tile = self.tiles[shown.name]
            tile.set_content(shown.mask, aspect=aspect)
            tile.set_caption(shown.caption)
            tile.set_marked(shown.picked)
            tile.setToolTip(shown.tooltip)
        self.heading.setText(students_heading(names, result))

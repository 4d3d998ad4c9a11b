"""A picture fitted into a tile with a caption: an RGB image, a soft mask in grey, an image with
its mask in colour and boxes on top, or an RGBA cut-out over a checkerboard."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.widgets.mask_view import mask_images
from app.widgets.thumbnails import qimage_from_rgb
from ussl_core.export import soft_to_uint8

BOX_COLOUR = QColor(255, 214, 0)
MARK_COLOUR = QColor("#2e7dd1")


def _qimage(array: np.ndarray) -> QImage:
    """An owning QImage of an RGB / RGBA / grey uint8 array or a float soft mask."""
    if array.dtype != np.uint8:
        array = soft_to_uint8(array)
    array = np.ascontiguousarray(array)
    if array.ndim == 3 and array.shape[2] == 4:
        h, w = array.shape[:2]
        return QImage(array.data, w, h, array.strides[0], QImage.Format_RGBA8888).copy()
    return qimage_from_rgb(array)


class ImageTile(QWidget):
    """A picture fitted into the tile (aspect kept) with a caption below: an RGB image, a soft
    mask in grey, an RGB image with a soft mask in colour and boxes on top, or an RGBA cut-out
    over a checkerboard. `marked` draws a coloured frame (Predict: MultiSelect-Net's pick)."""

    def __init__(self, caption: str = "", placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(80, 60)
        self.caption = caption
        self.placeholder = placeholder
        self.marked = False
        self.opacity = 0.5
        self.image: np.ndarray | None = None
        self.boxes: list = []
        self._qimage: QImage | None = None
        self._overlay: QImage | None = None
        self._overlay_buffers = None
        self._aspect: float | None = None

    def set_content(self, image: np.ndarray | None, mask: np.ndarray | None = None,
                    boxes: list | None = None, aspect: float | None = None) -> None:
        """Show `image` (with `mask` in colour and `boxes` on top); `aspect` (w / h) stretches it."""
        self.image = image
        self._qimage = None if image is None else _qimage(image)
        self._overlay, _, self._overlay_buffers = mask_images(mask) if mask is not None else (None, None, None)
        self.boxes = list(boxes or [])
        self._aspect = aspect
        self.update()

    def set_caption(self, caption: str) -> None:
        self.caption = caption
        self.update()

    def set_marked(self, marked: bool) -> None:
        self.marked = marked
        self.update()

    def has_image(self) -> bool:
        return self._qimage is not None

    def picture_rect(self) -> QRectF:
        """Where the picture is drawn, in widget coordinates (empty without one)."""
        if self._qimage is None:
            return QRectF()
        caption_h = self._caption_height()
        area = QRectF(self.rect()).adjusted(3, 3, -3, -3 - caption_h)
        aspect = self._aspect or self._qimage.width() / self._qimage.height()
        scale = max(min(area.width() / aspect, area.height()), 1e-6)
        w, h = aspect * scale, scale
        return QRectF(area.x() + (area.width() - w) / 2, area.y() + (area.height() - h) / 2, w, h)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.color(QPalette.Window).darker(106))
        caption_h = self._caption_height()
        if self._qimage is None:
            painter.setPen(palette.color(QPalette.PlaceholderText))
            painter.drawText(self.rect().adjusted(4, 4, -4, -4 - caption_h),
                             Qt.AlignCenter | Qt.TextWordWrap, self.placeholder)
        else:
            target = self.picture_rect()
            painter.setRenderHint(QPainter.SmoothPixmapTransform)
            if self._qimage.hasAlphaChannel():
                self._checkerboard(painter, target)
            painter.drawImage(target, self._qimage)
            if self._overlay is not None:
                painter.setOpacity(self.opacity)
                painter.drawImage(target, self._overlay)
                painter.setOpacity(1.0)
            if self.boxes:
                sx = target.width() / self._qimage.width()
                sy = target.height() / self._qimage.height()
                pen = QPen(BOX_COLOUR, 2)
                pen.setCosmetic(True)
                painter.setPen(pen)
                painter.setBrush(Qt.NoBrush)
                for x0, y0, x1, y1 in self.boxes:
                    painter.drawRect(QRectF(target.x() + x0 * sx, target.y() + y0 * sy,
                                            (x1 - x0) * sx, (y1 - y0) * sy))
            if self.marked:
                painter.setPen(QPen(MARK_COLOUR, 3))
                painter.drawRect(target.adjusted(-1, -1, 1, 1))
        if self.caption:
            painter.setPen(MARK_COLOUR if self.marked else palette.color(QPalette.WindowText))
            line_h = self.fontMetrics().height()
            top = self.height() - caption_h
            for i, line in enumerate(self.caption.split("\n")):
                rect = self.rect().adjusted(4, 0, -4, 0)
                rect.setTop(top + i * line_h)
                rect.setHeight(line_h)
                text = self.fontMetrics().elidedText(line, Qt.ElideMiddle, rect.width())
                painter.drawText(rect, Qt.AlignCenter, text)

    def _caption_height(self) -> int:
        return (self.caption.count("\n") + 1) * self.fontMetrics().height() + 2 if self.caption else 0

    @staticmethod
    def _checkerboard(painter: QPainter, rect: QRectF, cell: int = 8) -> None:
        painter.save()
        painter.setClipRect(rect)
        painter.fillRect(rect, QColor(250, 250, 250))
        light = QColor(214, 214, 214)
        for j, y in enumerate(range(int(rect.top()), int(rect.bottom()) + 1, cell)):
            for i, x in enumerate(range(int(rect.left()), int(rect.right()) + 1, cell)):
                if (i + j) % 2:
                    painter.fillRect(x, y, cell, cell, light)
        painter.restore()

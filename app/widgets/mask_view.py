"""An RGB frame with a soft mask on top: the one image view the panels share.

`MaskView` draws a frame (H x W x 3 uint8 RGB), a soft mask (float in [0, 1], any size: it
is stretched over the frame) as a coloured overlay with an adjustable opacity, and optionally
the outline of a ground-truth mask (bool, any size). In "side_by_side" mode it shows
frame | mask | overlay. The picture is scaled to fit the widget, keeping its aspect ratio.

The numpy -> QImage conversions wrap the arrays' memory without copying; the view keeps the
arrays alive for as long as their images are in use.
"""

from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPainterPath, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

MODES = ("overlay", "side_by_side")
OVERLAY_COLOUR = (255, 64, 48)          # warm red: the soft mask
OUTLINE_COLOUR = QColor(64, 224, 255)   # cyan: the ground truth's outline
GAP = 4                                 # pixels between the side-by-side panels
MARGIN = 2


def rgb_image(frame: np.ndarray) -> tuple[QImage, np.ndarray]:
    """A QImage over an RGB uint8 array and the array it wraps (keep both alive together)."""
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W x 3 RGB frame, got shape {frame.shape}")
    buffer = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
    height, width = buffer.shape[:2]
    image = QImage(buffer.data, width, height, buffer.strides[0], QImage.Format_RGB888)
    return image, buffer


def mask_images(mask: np.ndarray) -> tuple[QImage, QImage, tuple[np.ndarray, np.ndarray]]:
    """(coloured overlay with alpha = mask, grey mask) QImages of a soft mask, and their buffers."""
    if mask.ndim != 2:
        raise ValueError(f"expected an H x W soft mask, got shape {mask.shape}")
    soft = np.clip(np.nan_to_num(np.asarray(mask, dtype=np.float32)), 0.0, 1.0)
    grey = np.ascontiguousarray((soft * 255 + 0.5).astype(np.uint8))
    height, width = grey.shape
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., :3] = OVERLAY_COLOUR
    rgba[..., 3] = grey
    overlay = QImage(rgba.data, width, height, rgba.strides[0], QImage.Format_RGBA8888)
    grey_image = QImage(grey.data, width, height, grey.strides[0], QImage.Format_Grayscale8)
    return overlay, grey_image, (rgba, grey)


def outline_path(mask: np.ndarray) -> QPainterPath:
    """The outer and inner boundaries of a bool mask as a path in its pixel coordinates."""
    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    path = QPainterPath()
    for contour in contours:
        points = contour[:, 0, :].astype(np.float64) + 0.5  # pixel centres
        path.moveTo(QPointF(*points[0]))
        for x, y in points[1:]:
            path.lineTo(QPointF(x, y))
        path.closeSubpath()
    return path


class MaskView(QWidget):
    """A frame with a soft-mask overlay, an optional ground-truth outline, two layouts."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(120, 90)
        self._frame: QImage | None = None
        self._frame_buffer: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._mask_overlay: QImage | None = None
        self._mask_grey: QImage | None = None
        self._mask_buffers: tuple | None = None
        self._gt_size: tuple[int, int] | None = None
        self._gt_path: QPainterPath | None = None
        self._opacity = 0.5
        self._mode = "overlay"
        # Each panel is composed once per change or size (smooth scaling and the antialiased
        # outline cost ~100 ms for three 854x480 panels); paints then only copy pixmaps.
        self._version = 0
        self._composed: dict[str, QPixmap] = {}
        self._composed_key: tuple | None = None
        self._placeholder = "No frame"

    # ------------------------------------------------------------------ state
    def set_frame(self, frame: np.ndarray | None) -> None:
        if frame is None:
            self._frame, self._frame_buffer = None, None
        else:
            self._frame, self._frame_buffer = rgb_image(frame)
        self._version += 1
        self.update()

    def set_mask(self, mask: np.ndarray | None) -> None:
        if mask is None:
            self._mask = self._mask_overlay = self._mask_grey = self._mask_buffers = None
        else:
            self._mask = mask
            self._mask_overlay, self._mask_grey, self._mask_buffers = mask_images(mask)
        self._version += 1
        self.update()

    def set_ground_truth(self, gt: np.ndarray | None) -> None:
        if gt is None:
            self._gt_path, self._gt_size = None, None
        else:
            gt = np.asarray(gt).astype(bool)
            self._gt_path = outline_path(gt)
            self._gt_size = (gt.shape[1], gt.shape[0])
        self._version += 1
        self.update()

    def set_opacity(self, opacity: float) -> None:
        self._opacity = float(min(max(opacity, 0.0), 1.0))
        self._version += 1
        self.update()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._mode = mode
        self._version += 1
        self.update()

    def set_placeholder(self, text: str) -> None:
        """What the view says while it has no frame (e.g. 'Loading...', an error)."""
        self._placeholder = text
        if self._frame is None:
            self.update()

    @property
    def opacity(self) -> float:
        return self._opacity

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def mask(self) -> np.ndarray | None:
        return self._mask

    @property
    def frame(self) -> np.ndarray | None:
        return self._frame_buffer

    def has_frame(self) -> bool:
        return self._frame is not None

    def has_mask(self) -> bool:
        return self._mask is not None

    def has_ground_truth(self) -> bool:
        return self._gt_path is not None

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt naming)
        return QSize(480, 360)

    # ------------------------------------------------------------------ drawing
    def panel_rects(self) -> list[tuple[str, QRectF]]:
        """Where each panel ("frame", "mask", "overlay") is drawn, in widget coordinates."""
        if self._frame is None:
            return []
        kinds = ["overlay"] if self._mode == "overlay" else ["frame", "mask", "overlay"]
        n = len(kinds)
        area = QRectF(self.rect()).adjusted(MARGIN, MARGIN, -MARGIN, -MARGIN)
        fw, fh = self._frame.width(), self._frame.height()
        scale = min((area.width() - GAP * (n - 1)) / (n * fw), area.height() / fh)
        scale = max(scale, 1e-6)
        w, h = fw * scale, fh * scale
        x0 = area.x() + (area.width() - (n * w + GAP * (n - 1))) / 2
        y0 = area.y() + (area.height() - h) / 2
        return [(kind, QRectF(x0 + k * (w + GAP), y0, w, h)) for k, kind in enumerate(kinds)]

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        painter = QPainter(self)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.color(QPalette.Window).darker(108))
        if self._frame is None:
            painter.setPen(palette.color(QPalette.PlaceholderText))
            painter.drawText(self.rect(), Qt.AlignCenter | Qt.TextWordWrap, self._placeholder)
            return
        side_by_side = self._mode == "side_by_side"
        rects = self.panel_rects()
        key = (self._version, tuple((kind, rect.toRect().size().toTuple()) for kind, rect in rects))
        if key != self._composed_key:
            self._composed = {kind: self._compose(kind, rect.toRect().size()) for kind, rect in rects}
            self._composed_key = key
        for kind, rect in rects:
            painter.drawPixmap(rect.toRect().topLeft(), self._composed[kind])
            if side_by_side:
                self._draw_caption(painter, rect, kind)

    def _compose(self, kind: str, size: QSize) -> QPixmap:
        """One panel ("frame", "mask" or "overlay") at its on-screen size."""
        pixmap = QPixmap(size.expandedTo(QSize(1, 1)))
        pixmap.fill(Qt.black)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.SmoothPixmapTransform)
        painter.setRenderHint(QPainter.Antialiasing)
        rect = QRectF(0, 0, size.width(), size.height())
        if kind == "frame":
            painter.drawImage(rect, self._frame)
        elif kind == "mask":
            if self._mask_grey is not None:
                painter.drawImage(rect, self._mask_grey)
            else:
                painter.setPen(QColor(150, 150, 150))
                painter.drawText(rect, Qt.AlignCenter, "no mask")
        else:
            painter.drawImage(rect, self._frame)
            if self._mask_overlay is not None and self._opacity > 0:
                painter.setOpacity(self._opacity)
                painter.drawImage(rect, self._mask_overlay)
                painter.setOpacity(1.0)
        if kind != "frame":
            self._draw_outline(painter, rect)
        painter.end()
        return pixmap

    def _draw_outline(self, painter: QPainter, rect: QRectF) -> None:
        if self._gt_path is None or self._gt_size is None:
            return
        painter.save()
        painter.translate(rect.topLeft())
        painter.scale(rect.width() / self._gt_size[0], rect.height() / self._gt_size[1])
        pen = QPen(OUTLINE_COLOUR, 1.5)
        pen.setCosmetic(True)
        painter.setPen(pen)
        painter.setBrush(Qt.NoBrush)
        painter.drawPath(self._gt_path)
        painter.restore()

    @staticmethod
    def _draw_caption(painter: QPainter, rect: QRectF, text: str) -> None:
        metrics = painter.fontMetrics()
        box = QRectF(rect.x() + 3, rect.y() + 3, metrics.horizontalAdvance(text) + 8,
                     metrics.height() + 2)
        painter.fillRect(box, QColor(0, 0, 0, 120))
        painter.setPen(QColor(235, 235, 235))
        painter.drawText(box, Qt.AlignCenter, text)

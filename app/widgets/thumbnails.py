"""A virtualised thumbnail grid for very many items (100,000 masks and more).

The pieces, each usable alone:

- `ThumbnailGrid`: a QListView laid out as a wrapping grid of uniform cells, batched layout,
  per-pixel scrolling, and key signals (decide, open, undo/redo) instead of type-ahead search.
- `ThumbnailDelegate`: paints one cell from the model's roles — the cached pixmap (or a
  placeholder while it is being made), a caption, a decision badge, dimmed when outside the
  current cut-off — and asks the loader for missing pixmaps. Only visible cells are painted,
  so only visible cells are ever requested.
- `ThumbnailLoader`: makes images in one background thread, newest request first, with a
  bounded queue (requests for cells that scrolled away long ago are dropped). The rendering
  function is given by the caller; it returns an RGB uint8 array and reads the store itself.
- `ThumbnailCache`: a least-recently-used cache of QPixmaps.

The model provides `CellRole` -> (key, caption, badge, dim): a hashable cache key, the caption
text, "approve" / "reject" / "" and whether the cell is dimmed; and `PayloadRole`, what the
render function needs to make the thumbnail. `KeyRole`, `BadgeRole`, `DimRole` and
`RecordRole` are there for callers that want one of them.
Models should not answer None for these roles when read through `QModelIndex.data` from
Python: PySide6 6.12 drops a reference to None each time an empty QVariant comes back.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QRect, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeySequence, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate

log = logging.getLogger(__name__)


KeyRole = Qt.UserRole + 1
PayloadRole = Qt.UserRole + 2
BadgeRole = Qt.UserRole + 3
DimRole = Qt.UserRole + 4
RecordRole = Qt.UserRole + 5
CellRole = Qt.UserRole + 6    # (key, caption, badge, dim): what the delegate paints, in one call

BADGE_COLORS = {"approve": QColor("#2e9d57"), "reject": QColor("#d0453a")}
BROKEN = object()   # cached for a key whose image could not be made (missing shard, ...)


# ---------------------------------------------------------------------------- cache
def fit_size(width: int, height: int, box: QSize) -> tuple[int, int]:
    """(width, height) of the source's aspect ratio fitted into a box (the box if unknown)."""
    if width <= 0 or height <= 0:
        return box.width(), box.height()
    scale = min(box.width() / width, box.height() / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class ThumbnailCache:
    """Least-recently-used QPixmaps by key (the GUI thread only)."""

    def __init__(self, capacity: int = 2000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, object] = OrderedDict()

    def get(self, key: Hashable):
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, pixmap) -> None:
        self._items[key] = pixmap
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


def qimage_from_rgb(array: np.ndarray) -> QImage:
    """An RGB (H x W x 3) or grey (H x W) uint8 array as a QImage that owns its pixels."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 2:
        h, w = array.shape
        return QImage(array.data, w, h, array.strides[0], QImage.Format_Grayscale8).copy()
    h, w = array.shape[:2]
    return QImage(array.data, w, h, array.strides[0], QImage.Format_RGB888).copy()


# ---------------------------------------------------------------------------- loader
class ThumbnailLoader(QObject):
    """Makes thumbnails in one background thread; emits `ready(key, QImage or None)`.

    Requests are served newest first; at most `max_pending` wait, the oldest are dropped
    (they belong to cells the user has scrolled past). `reset()` forgets every waiting request
    and ignores results of earlier ones (another project or producer).
    """

    ready = Signal(object, object)   # key, QImage (None when the image could not be made)

    def __init__(self, render: Callable[[object], np.ndarray], max_pending: int = 256,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._render = render
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._pending: OrderedDict[Hashable, tuple[int, object]] = OrderedDict()
        self._in_flight: set[Hashable] = set()
        self._generation = 0
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.rendered = 0
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)

    def request(self, key: Hashable, payload: object) -> None:
        with self._cond:
            if self._stopped or key in self._in_flight:
                return
            if key in self._pending:
                self._pending.move_to_end(key)
                return
            self._pending[key] = (self._generation, payload)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
            if self._thread is None:
                # A daemon thread: it never holds up the application's exit.
                self._thread = threading.Thread(target=self._run, name="thumbnails", daemon=True)
                self._thread.start()
            self._cond.notify()

    def is_waiting(self, key: Hashable) -> bool:
        with self._cond:
            return key in self._pending or key in self._in_flight

    def reset(self) -> None:
        with self._cond:
            self._pending.clear()
            self._generation += 1

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopped = True
            self._pending.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                key, (generation, payload) = self._pending.popitem(last=True)
                self._in_flight.add(key)
            try:
                image = qimage_from_rgb(self._render(payload))
            except Exception as exc:  # a missing or unreadable shard: show it as broken
                log.warning("thumbnail %s: %s", key, exc)
                image = None
            with self._cond:
                self._in_flight.discard(key)
                current = generation == self._generation and not self._stopped
            if current:
                self.rendered += 1
                try:
                    self.ready.emit(key, image)
                except RuntimeError:  # the loader was deleted while we rendered
                    return


# ---------------------------------------------------------------------------- delegate
class ThumbnailDelegate(QStyledItemDelegate):
    """Paints cells: thumbnail (or placeholder), caption, badge; requests missing thumbnails.

    A cell whose thumbnail is ready is composed once (thumbnail, badge, caption, dimming) into
    a pixmap kept in a small LRU keyed by what it shows; painting it again — every frame of a
    scroll — is then one drawPixmap. The model answers `CellRole` with
    (key, caption, badge, dim) in one call.
    """

    def __init__(self, cache: ThumbnailCache, loader: ThumbnailLoader,
                 thumb_size: QSize = QSize(96, 72), parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cache = cache
        self.loader = loader
        self.thumb_size = thumb_size
        self.caption_height = 16
        self.margin = 3
        self.painted = 0
        self.composed = 0
        self.cells = ThumbnailCache(500)   # a few screens of composed cells
        self._caption_font = QFont()
        self._caption_font.setPointSizeF(max(self._caption_font.pointSizeF() - 1.5, 6.5))
        self._badge_font = QFont(self._caption_font)
        self._badge_font.setBold(True)
        self._placeholder = QColor("#e4e6e8")
        self._broken = QColor("#f3dcda")
        self._text = QColor("#3c3f42")
        self._dim_text = QColor("#9a9ea3")
        self._views: list[QAbstractItemView] = []
        self._update_timer = QTimer(self)
        self._update_timer.setSingleShot(True)
        self._update_timer.setInterval(16)
        self._update_timer.timeout.connect(self._update_views)
        loader.ready.connect(self._thumbnail_ready)

    def cell_size(self) -> QSize:
        return QSize(self.thumb_size.width() + 2 * self.margin,
                     self.thumb_size.height() + self.caption_height + 2 * self.margin)

    def sizeHint(self, option, index) -> QSize:  # noqa: N802 (Qt naming)
        return self.cell_size()

    def attach(self, view: QAbstractItemView) -> None:
        self._views.append(view)
        view.setItemDelegate(self)

    def clear(self) -> None:
        """Forget composed cells (the thumbnails' cache is the caller's)."""
        self.cells.clear()

    # -- thumbnails arrive from the loader thread (queued to the GUI thread)
    def _thumbnail_ready(self, key, image) -> None:
        self.cache.put(key, BROKEN if image is None else QPixmap.fromImage(image))
        if not self._update_timer.isActive():
            self._update_timer.start()

    def _update_views(self) -> None:
        for view in self._views:
            view.viewport().update()

    # -- painting
    def paint(self, painter: QPainter, option, index) -> None:
        self.painted += 1
        # The model's own data(), not index.data(): no QVariant round trip (faster), and
        # PySide6 6.12 loses a reference to None when an empty QVariant comes back to Python.
        key, caption, badge, dim = index.model().data(index, CellRole)
        rect = option.rect
        selected = bool(option.state & QStyle.State_Selected)
        if selected:
            fill = QColor(option.palette.highlight().color())
            fill.setAlpha(40)
            painter.fillRect(rect.adjusted(1, 1, -1, -1), fill)
        ratio = painter.device().devicePixelRatioF()
        cell_key = (key, caption, badge, dim, ratio)
        cell = self.cells.get(cell_key)
        if cell is None:
            thumb = self.cache.get(key)
            if thumb is None:
                self.loader.request(key, index.model().data(index, PayloadRole))
            cell = self._compose(thumb, caption, badge, dim, ratio)
            if thumb is not None:   # placeholders are not kept: the thumbnail is on its way
                self.cells.put(cell_key, cell)
        painter.drawPixmap(rect.topLeft(), cell)
        if selected:
            painter.save()
            painter.setPen(QPen(option.palette.highlight().color(), 2))
            painter.setBrush(Qt.NoBrush)
            painter.drawRect(rect.adjusted(1, 1, -1, -1))
            painter.restore()

    def _compose(self, thumbnail, caption: str, badge: str, dim: bool, ratio: float) -> QPixmap:
        """One cell as a transparent pixmap: thumbnail (or placeholder), badge, caption."""
        self.composed += 1
        size = self.cell_size()
        cell = QPixmap(round(size.width() * ratio), round(size.height() * ratio))
        cell.setDevicePixelRatio(ratio)
        cell.fill(Qt.transparent)
        m = self.margin
        thumb = QRect(m, m, self.thumb_size.width(), self.thumb_size.height())
        painter = QPainter(cell)
        painter.setRenderHint(QPainter.SmoothPixmapTransform, True)
        if thumbnail is None:
            painter.fillRect(thumb, self._placeholder)
        elif thumbnail is BROKEN:
            painter.fillRect(thumb, self._broken)
            painter.setPen(self._dim_text)
            painter.setFont(self._caption_font)
            painter.drawText(thumb, Qt.AlignCenter, "unreadable")
        else:
            fitted = thumbnail.size().scaled(thumb.size(), Qt.KeepAspectRatio)
            target = QRect(0, 0, fitted.width(), fitted.height())
            target.moveCenter(thumb.center())
            if dim:
                painter.setOpacity(0.42)
            painter.drawPixmap(target, thumbnail)
            painter.setOpacity(1.0)
        if badge in BADGE_COLORS:
            d = 15
            circle = QRectF(thumb.right() - d - 2, thumb.top() + 3, d, d)
            painter.setRenderHint(QPainter.Antialiasing, True)
            painter.setPen(QPen(QColor(255, 255, 255), 1.4))
            painter.setBrush(BADGE_COLORS[badge])
            painter.drawEllipse(circle)
            painter.setPen(QColor(255, 255, 255))
            painter.setFont(self._badge_font)
            painter.drawText(circle, Qt.AlignCenter, "\u2713" if badge == "approve" else "\u2715")
        if caption:
            text_rect = QRect(thumb.left() + 1, thumb.bottom() + 1, thumb.width() - 2,
                              self.caption_height)
            painter.setFont(self._caption_font)
            painter.setPen(self._dim_text if dim else self._text)
            painter.drawText(text_rect, Qt.AlignLeft | Qt.AlignVCenter, caption)
            if badge in BADGE_COLORS:
                painter.setPen(BADGE_COLORS[badge])
                painter.drawText(text_rect, Qt.AlignRight | Qt.AlignVCenter,
                                 "approved" if badge == "approve" else "rejected")
        painter.end()
        return cell


# ---------------------------------------------------------------------------- grid
class ThumbnailGrid(QListView):
    """A wrapping grid of uniform cells that stays smooth with 100,000 items.

    Keys: arrows move (QListView), A / R / U emit `decide("approve" | "reject" | "clear")`,
    Space emits `open_requested`, Ctrl+Z / Ctrl+Shift+Z emit `undo_requested` / `redo_requested`
    (when no shortcut took them first). Letters do not jump by type-ahead.
    """

    decide = Signal(str)
    open_requested = Signal()
    undo_requested = Signal()
    redo_requested = Signal()

    KEYS = {Qt.Key_A: "approve", Qt.Key_R: "reject", Qt.Key_U: "clear"}

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        # IconMode with Static movement: a wrapping left-to-right grid without free item
        # positions; uniform sizes and batched layout keep 100,000 items cheap.
        self.setViewMode(QListView.IconMode)
        self.setMovement(QListView.Static)
        self.setFlow(QListView.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.Adjust)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.Batched)
        self.setBatchSize(4000)
        self.setSpacing(0)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.setSelectionRectVisible(True)
        self.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setDragEnabled(False)
        self.setMouseTracking(False)
        self.setFocusPolicy(Qt.StrongFocus)

    def set_cell_size(self, size: QSize) -> None:
        self.setGridSize(size)
        self.verticalScrollBar().setSingleStep(max(8, size.height() // 3))

    def keyboardSearch(self, search: str) -> None:  # noqa: N802 (Qt naming)
        pass  # letters are commands here, not type-ahead

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        key = event.key()
        modifiers = event.modifiers() & ~Qt.KeypadModifier
        if event.matches(QKeySequence.Undo) or (key == Qt.Key_Z and modifiers == Qt.ControlModifier):
            self.undo_requested.emit()
            return
        if event.matches(QKeySequence.Redo) or (
                key == Qt.Key_Z and modifiers == (Qt.ControlModifier | Qt.ShiftModifier)):
            self.redo_requested.emit()
            return
        if modifiers in (Qt.NoModifier, Qt.ShiftModifier) and key in self.KEYS:
            self.decide.emit(self.KEYS[key])
            return
        if modifiers == Qt.NoModifier and key == Qt.Key_Space:
            self.open_requested.emit()
            return
        super().keyPressEvent(event)

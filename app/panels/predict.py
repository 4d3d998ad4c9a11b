"""Predict: drop images (or folders of them), see masks, boxes and cut-outs, export them.

The models are the open project's latest generation (`Segmenter.from_project`), loaded once in
a thread and reloaded when the project's models change. Each dropped image is read and
segmented in a thread, one image per task, current image first: every student's mask and its
EvalSeg-Net score are kept for every image (small), while the full-size views of a method (the
soft mask, boxes, GrabCut cut-out) are made for the shown image and its neighbours and kept in
a small cache. Export writes what `ussl segment` writes (<stem>.png, an 8-bit soft mask at the
input's size; boxes.json) plus boxes.csv and <stem>.cutout.png (RGBA), also in a thread.

Every thread job is a run_light generator that never raises: it yields one event whose metrics
carry the result or an error line, so a bad file is one message naming it, never a dead panel.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QFrame,
                               QGridLayout, QHBoxLayout, QLabel, QListView, QListWidget,
                               QListWidgetItem, QPushButton, QScrollArea, QSizePolicy, QToolButton,
                               QVBoxLayout, QWidget)

from app.context import StoreChange
from app.gc_policy import freeze_after_import
from app.style import MUTED, THUMB, WARNING
from app.widgets.drops import dropped_paths
from app.widgets.mask_view import mask_images
from app.widgets.thumbnails import qimage_from_rgb
from app.workers import never_raising
from ussl_core.builtin import builtin_available, builtin_fingerprint
from ussl_core.ensemble import ENSEMBLES, ensemble_mask, resize_mask
from ussl_core.errors import MediaError, NoModelsError, UsslError
from ussl_core.export import soft_to_uint8, write_png
from ussl_core.media import is_image_file, list_image_files, read_image, resize_rgb
from ussl_core.postprocess import BoxSettings, boxes_from_mask, grabcut_cutout
from ussl_core.progress import CancelToken, Progress
from ussl_core.segment import SegmentSettings, output_stems, write_boxes
from ussl_core.store import model_files

METHOD_LABELS = {"multi": "Multi-Net", "mean": "Mean-Net", "multiselect": "MultiSelect-Net"}
METHOD_TIPS = {"multi": "Multi-Net: the pixel-wise product of every student's mask",
               "mean": "Mean-Net: the pixel-wise mean of every student's mask",
               "multiselect": "MultiSelect-Net: per image, the student EvalSeg-Net rates best"}
DEFAULT_METHOD = SegmentSettings().method
STUDENT_TILE = QSize(140, 116)
RENDER_CACHE = 12           # full-size views kept: the shown image, its neighbours, a few more
BOX_COLOUR = QColor(255, 214, 0)
PICK_COLOUR = QColor("#2e7dd1")

BUILTIN_HINT = ("{why}: segmenting with the models shipped with ussl (compact students and "
                "EvalSeg-Net that ussl trained on unlabeled video; their card is in "
                "ussl_core/builtin/card.json). A project's own trained models take over when it has them.")

# Model states
NO_PROJECT, LOADING, READY, NO_MODELS, FAILED = "no_project", "loading", "ready", "no_models", "failed"


# ============================================================================ pure work (threads)
@dataclass(frozen=True)
class ImageResult:
    """What segmenting one image leaves (small): every student's mask and its score."""
    path: Path
    size: tuple[int, int]                       # (width, height) of the input
    student_masks: dict[str, np.ndarray]        # at ensemble.COMMON_SIZE
    scores: dict[str, float]                    # EvalSeg-Net's, {} without one
    thumbnail: np.ndarray                       # RGB, fits THUMB

    @property
    def pick(self) -> str | None:
        """MultiSelect-Net's choice: the student EvalSeg-Net rates best."""
        return max(self.scores, key=self.scores.get) if self.scores else None


@dataclass(frozen=True)
class Rendered:
    """One method's full-size views of one image."""
    path: Path
    method: str
    image: np.ndarray                           # RGB input
    mask: np.ndarray                            # float32 soft mask at the input's size
    boxes: list[tuple[int, int, int, int]]      # (x0, y0, x1, y1), largest first
    cutout: np.ndarray | None = None            # RGBA, alpha from GrabCut (None: not made)


def expand_paths(paths: list[Path]) -> tuple[list[Path], dict[Path, str]]:
    """Image files from dropped files and folders (a folder's images in natural order), and a
    message for each path that is neither."""
    images: list[Path] = []
    problems: dict[Path, str] = {}
    for path in map(Path, paths):
        try:
            if path.is_dir():
                images += list_image_files(path)
            elif not path.exists():
                raise MediaError(path, "does not exist")
            elif is_image_file(path):
                images.append(path)
            else:
                raise MediaError(path, "not an image file")
        except MediaError as exc:
            problems[path] = str(exc)
    return images, problems


def thumbnail(image: np.ndarray, size: QSize = THUMB) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(size.width() / w, size.height() / h, 1.0)
    return resize_rgb(image, (max(1, round(w * scale)), max(1, round(h * scale))))


def segment_image(segmenter, path: Path) -> tuple[ImageResult, np.ndarray]:
    """Read one image and run every student (and EvalSeg-Net) on it."""
    image = read_image(path)
    masks = segmenter.student_masks([image])[0]
    scores = segmenter.evalseg_scores(image, masks)
    result = ImageResult(path, (image.shape[1], image.shape[0]), masks, scores, thumbnail(image))
    return result, image


def render(result: ImageResult, image: np.ndarray, method: str, cutout: bool = True) -> Rendered:
    """A method's soft mask at the input's size, its boxes and GrabCut cut-out, as `ussl segment
    --boxes --grabcut` makes them."""
    soft, _ = ensemble_mask(result.student_masks, result.scores, method)
    mask = np.clip(resize_mask(soft, result.size), 0.0, 1.0).astype(np.float32)
    boxes = boxes_from_mask(mask, None, BoxSettings(mode="all"))
    return Rendered(result.path, method, image, mask, boxes, grabcut_cutout(image, mask) if cutout else None)


@dataclass
class ExportJob:
    folder: Path
    method: str
    items: list[tuple[ImageResult, Rendered | None]]   # a cached view is reused when it has all
    stems: dict[Path, str]
    masks: bool = True
    boxes: bool = True
    cutouts: bool = True
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def run(self, cancel: CancelToken) -> "ExportJob":
        self.folder.mkdir(parents=True, exist_ok=True)
        all_boxes: dict[str, list] = {}
        for result, view in self.items:
            cancel.raise_if_cancelled()
            try:
                if view is None or (self.cutouts and view.cutout is None):
                    view = render(result, read_image(result.path), self.method, self.cutouts)
            except MediaError as exc:   # the file changed or went away since it was segmented
                self.skipped.append(str(exc))
                continue
            stem = self.stems[result.path]
            if self.masks:
                self.written.append(self.folder / f"{stem}.png")
                write_png(self.written[-1], soft_to_uint8(view.mask))
            if self.cutouts:
                self.written.append(self.folder / f"{stem}.cutout.png")
                write_png(self.written[-1], view.cutout)
            all_boxes[stem] = view.boxes
        if self.boxes and all_boxes:
            self.written += write_boxes(self.folder, all_boxes)
        return self


def models_fingerprint(root: Path | None) -> tuple:
    """What the loaded models depend on: the project's model files (the shipped models' when
    there is no project)."""
    return builtin_fingerprint() if root is None else model_files.revision(root)




# ============================================================================ widgets
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
    over a checkerboard. `marked` draws a coloured frame (MultiSelect-Net's pick)."""

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
                painter.setPen(QPen(PICK_COLOUR, 3))
                painter.drawRect(target.adjusted(-1, -1, 1, 1))
        if self.caption:
            painter.setPen(PICK_COLOUR if self.marked else palette.color(QPalette.WindowText))
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


class FilmStrip(QListWidget):
    """A horizontal row of thumbnails, one per dropped image."""

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

    def keyboardSearch(self, search: str) -> None:  # noqa: N802 (Qt naming)
        pass


# ============================================================================ the panel
class PredictPanel(QWidget):
    """Masks, boxes and cut-outs of dropped images from the project's trained students.

    Drive it without dialogs: `add_paths`, `set_method`, `select`, `move`, `export`. State for
    tests and callers: `paths` (film strip order), `results` (path -> ImageResult), `errors`
    (path -> message), `rendered(path)`, `method`, `models_state`, `segmenter`.
    """

    title = "Predict"
    image_done = Signal(object)     # Path: segmented, or failed (then it is in `errors`)
    models_loaded = Signal(str)     # the models' state after a (re)load
    exported = Signal(object)       # list[Path] written

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.StrongFocus)
        self.paths: list[Path] = []
        self.results: dict[Path, ImageResult] = {}
        self.errors: dict[Path, str] = {}
        self.segmenter = None
        self.models_state = NO_PROJECT
        self.models_source = None         # "project" or "builtin" once models are loaded
        self.models_message = ""
        self._method = DEFAULT_METHOD
        self._views: OrderedDict[tuple[Path, str], Rendered] = OrderedDict()
        self._token = 0                   # bumped when other models are loaded
        self._fingerprint: tuple | None = None
        self._loader = None               # the running model load, if any
        self._reload_again = False
        self._task = None                 # the running segment / render task, if any
        self._exporting = None
        self._export_note = ""
        self._build()
        self._models_stale = False
        context.project_changed.connect(self._project_changed)
        context.changed.connect(self._store_changed)
        self._project_changed()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.setSpacing(4)

        bar = QHBoxLayout()
        bar.setSpacing(4)
        self.open_button = QPushButton("Open images\u2026")
        self.open_button.setToolTip("Add image files (or drop images and folders onto this panel)")
        self.open_button.clicked.connect(self.open_images_dialog)
        self.open_folder_button = QPushButton("Open folder\u2026")
        self.open_folder_button.setToolTip("Add every image of a folder, in natural order")
        self.open_folder_button.clicked.connect(self.open_folder_dialog)
        self.clear_button = QToolButton()
        self.clear_button.setText("Clear")
        self.clear_button.setToolTip("Remove every image from the film strip")
        self.clear_button.clicked.connect(self.clear)
        self.method_combo = QComboBox()
        self.method_combo.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.method_combo.currentIndexChanged.connect(self._method_chosen)
        self.progress_label = QLabel("")
        self.progress_label.setStyleSheet(MUTED)
        for widget in (self.open_button, self.open_folder_button, self.clear_button,
                       QLabel("  Method"), self.method_combo):
            bar.addWidget(widget)
        bar.addStretch(1)
        bar.addWidget(self.progress_label)
        bar.addSpacing(12)
        self.masks_check = QCheckBox("Masks")
        self.masks_check.setToolTip("<stem>.png: the soft mask, 8-bit, at the input's size "
                                    "(as `ussl segment` writes it)")
        self.boxes_check = QCheckBox("Boxes")
        self.boxes_check.setToolTip("boxes.json and boxes.csv: one box per connected region "
                                    "of the mask above 0.5, in input pixels (x0, y0, x1, y1)")
        self.cutouts_check = QCheckBox("Cut-outs")
        self.cutouts_check.setToolTip("<stem>.cutout.png: the input with the GrabCut-refined "
                                      "mask as alpha")
        self.export_current_button = QPushButton("Export current\u2026")
        self.export_current_button.clicked.connect(lambda: self.export_dialog("current"))
        self.export_all_button = QPushButton("Export all\u2026")
        self.export_all_button.clicked.connect(lambda: self.export_dialog("all"))
        for check in (self.masks_check, self.boxes_check, self.cutouts_check):
            check.setChecked(True)
            check.toggled.connect(self._update_actions)
            bar.addWidget(check)
        bar.addWidget(self.export_current_button)
        bar.addWidget(self.export_all_button)
        outer.addLayout(bar)

        self.hint_label = QLabel("")
        self.hint_label.setWordWrap(True)
        self.hint_label.setFrameShape(QFrame.StyledPanel)
        self.hint_label.setStyleSheet("QLabel { background: #fff6e0; color: #5c4300; padding: 6px; }")
        self.hint_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        outer.addWidget(self.hint_label)

        message_row = QHBoxLayout()
        message_row.setSpacing(4)
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.dismiss_button = QToolButton()
        self.dismiss_button.setText("\u00d7")
        self.dismiss_button.setAutoRaise(True)
        self.dismiss_button.setToolTip("Dismiss these messages")
        self.dismiss_button.clicked.connect(lambda: self._set_message(""))
        message_row.addWidget(self.message_label, 1)
        message_row.addWidget(self.dismiss_button, 0, Qt.AlignTop)
        self.message_row = QWidget()
        self.message_row.setLayout(message_row)
        message_row.setContentsMargins(0, 0, 0, 0)
        self.message_row.hide()
        outer.addWidget(self.message_row)

        grid = QGridLayout()
        grid.setSpacing(4)
        self.input_tile = ImageTile("Input", "Drop images or folders here, or use Open")
        self.mask_tile = ImageTile("Soft mask")
        self.overlay_tile = ImageTile("Overlay and boxes")
        self.cutout_tile = ImageTile("GrabCut cut-out")
        for i, tile in enumerate((self.input_tile, self.mask_tile, self.overlay_tile, self.cutout_tile)):
            grid.addWidget(tile, i // 2, i % 2)
        outer.addLayout(grid, 1)
        self.info_label = QLabel("")
        self.info_label.setStyleSheet(MUTED)
        self.info_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        outer.addWidget(self.info_label)

        self.students_label = QLabel("Students")
        self.students_label.setStyleSheet(MUTED)
        outer.addWidget(self.students_label)
        self.students_row = QWidget()
        self.students_layout = QHBoxLayout(self.students_row)
        self.students_layout.setContentsMargins(0, 0, 0, 0)
        self.students_layout.setSpacing(4)
        self.students_layout.addStretch(1)
        self.student_tiles: dict[str, ImageTile] = {}
        scroll = QScrollArea()
        scroll.setWidget(self.students_row)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setFixedHeight(STUDENT_TILE.height() + 18)
        outer.addWidget(scroll)

        self.strip = FilmStrip()
        self.strip.currentRowChanged.connect(self._show_current)
        outer.addWidget(self.strip)

    # ------------------------------------------------------------------ state
    @property
    def method(self) -> str:
        return self._method

    @property
    def current_path(self) -> Path | None:
        row = self.strip.currentRow()
        return self.paths[row] if 0 <= row < len(self.paths) else None

    def rendered(self, path: Path | None = None) -> Rendered | None:
        """The current method's full-size views of `path` (default: the shown image), if made."""
        path = path if path is not None else self.current_path
        return self._views.get((Path(path), self._method)) if path is not None else None

    def is_idle(self) -> bool:
        """Nothing left to segment or render for the shown image, and no thread running."""
        return self._loader is None and self._task is None and self._next_task() is None

    def method_names(self) -> list[str]:
        """The methods the combo box offers (enabled or not): multi, multiselect, students."""
        return [self.method_combo.itemData(i) for i in range(self.method_combo.count())]

    # ------------------------------------------------------------------ models
    def _project_changed(self) -> None:
        self._set_models(LOADING, None, "", None)   # another project (or none): its models, from scratch
        self.reload_models()

    def _store_changed(self, change: StoreChange) -> None:
        if not change.live and change.touches({"models"}):
            self.reload_models()

    def reload_models(self) -> None:
        """(Re)load the project's latest generation in a thread, when its model files changed;
        the models shipped with ussl when no project is open or it has no trained models."""
        root = self.context.root
        if root is None and not builtin_available():
            self._set_models(NO_PROJECT, None, "", None)
            return
        if not (self.isVisible() or self.paths):
            # Loading imports TensorFlow into the GUI process: wait until the panel is
            # shown or given images, so that jobs finishing elsewhere do not cost a stall.
            self._models_stale = True
            return
        self._models_stale = False
        if self._loader is not None:
            self._reload_again = True
            return
        known = self._fingerprint
        if known is None:
            self.models_state = LOADING
            self._update_hint()

        def work(cancel):
            from ussl_core.predict import Segmenter

            out = {"root": str(root), "fingerprint": models_fingerprint(root)}
            if out["fingerprint"] == known:
                return {**out, "unchanged": True}
            missing = ""
            if root is not None:
                try:
                    segmenter = Segmenter.from_project(root)
                    freeze_after_import("tensorflow")
                    return {**out, "segmenter": segmenter, "source": "project"}
                except NoModelsError as exc:
                    if not builtin_available():
                        return {**out, "missing": str(exc)}
                    missing = str(exc)
            segmenter = Segmenter.builtin()
            freeze_after_import("tensorflow")
            return {**out, "segmenter": segmenter, "source": "builtin", "missing": missing}

        self._loader = self.context.run_light(never_raising(work, stage="models"), self._models_done)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if self._models_stale:
            self.reload_models()

    def _models_done(self, event: Progress | None) -> None:
        self._loader = None
        metrics = event.metrics if event is not None else {"error": "loading the models stopped"}
        value = metrics.get("value", {})
        if self._reload_again or value.get("root") != str(self.context.root):
            self._reload_again = False
            self.reload_models()   # the project or its models changed while these loaded
            return
        if "error" in metrics:
            self._set_models(FAILED, None, metrics["error"], None)
        elif "segmenter" in value:
            self._set_models(READY, value["segmenter"], value.get("missing", ""), value["fingerprint"],
                             value["source"])
        elif "missing" in value:
            self._set_models(NO_MODELS, None, value["missing"], value["fingerprint"])
        self.models_loaded.emit(self.models_state)
        self._pump()

    def _set_models(self, state: str, segmenter, message: str, fingerprint: tuple | None,
                    source: str | None = None) -> None:
        self.models_state, self.segmenter, self.models_message = state, segmenter, message
        self.models_source = source
        self._fingerprint = fingerprint
        self._token += 1
        self.results.clear()
        self._views.clear()
        for row in range(self.strip.count()):
            self.strip.item(row).setIcon(self.strip.placeholder)
        self._fill_methods()
        self._update_hint()
        self._show_current()

    def _fill_methods(self) -> None:
        combo = self.method_combo
        combo.blockSignals(True)
        combo.clear()
        for method in ENSEMBLES:
            combo.addItem(METHOD_LABELS[method], method)
            combo.setItemData(combo.count() - 1, METHOD_TIPS[method], Qt.ToolTipRole)
        segmenter = self.segmenter
        multiselect = ENSEMBLES.index("multiselect")
        if segmenter is not None:
            if segmenter.evalseg is None:
                combo.model().item(multiselect).setEnabled(False)
                combo.setItemData(multiselect, "Needs an EvalSeg-Net: train one in the Training panel",
                                  Qt.ToolTipRole)
            for student in segmenter.students:
                combo.addItem(student.name, student.name)
                combo.setItemData(combo.count() - 1, f"Only {student.name} ({student.architecture})",
                                  Qt.ToolTipRole)
        if self._method not in self.method_names() or (
                self._method == "multiselect" and segmenter is not None and segmenter.evalseg is None):
            self._method = DEFAULT_METHOD if DEFAULT_METHOD != "multiselect" or (
                segmenter is not None and segmenter.evalseg is not None) else "multi"
        combo.setCurrentIndex(self.method_names().index(self._method))
        combo.setEnabled(segmenter is not None)
        combo.setToolTip("" if segmenter is not None else "Available once the project has trained models")
        combo.blockSignals(False)

    def _update_hint(self) -> None:
        state = self.models_state
        text = {
            NO_PROJECT: "Open a project that has trained models (File \u25b8 Open project) to "
                        "segment images.",
            READY: BUILTIN_HINT.format(why="No project is open" if self.context.root is None
                                       else "This project has no trained models yet")
                   if self.models_source == "builtin" else "",
            LOADING: "Loading the models\u2026",
            NO_MODELS: "This project has no trained models yet, so images cannot be segmented. "
                       "Train students (and EvalSeg-Net) in the Training panel, or with "
                       "`ussl train`; dropped images are segmented as soon as models exist.",
            FAILED: f"The project's models could not be loaded: {self.models_message}",
        }.get(state, "")
        self.hint_label.setText(text)
        self.hint_label.setVisible(bool(text))
        self._update_actions()

    # ------------------------------------------------------------------ adding images
    def open_images_dialog(self) -> None:
        patterns = "*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp"
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images", "",
                                                f"Images ({patterns});;All files (*)")
        if paths:
            self.add_paths([Path(p) for p in paths])

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if path:
            self.add_paths([Path(path)])

    def add_paths(self, paths: list[Path]) -> list[Path]:
        """Add image files and folders of images to the film strip; returns the images added
        (images already there are not added twice). Paths that are not images are reported."""
        images, problems = expand_paths(paths)
        added = []
        for path in images:
            if path in self.paths:
                continue
            self.errors.pop(path, None)
            self.paths.append(path)
            item = QListWidgetItem(self.strip.placeholder, path.name)
            item.setToolTip(str(path))
            self.strip.addItem(item)
            added.append(path)
        self.errors.update(problems)
        if problems:
            self._show_errors(list(problems))
        if added and self.strip.currentRow() < 0:
            self.strip.setCurrentRow(self.paths.index(added[0]))
        self._update_actions()
        if self._models_stale:
            self.reload_models()
        self._pump()
        return added

    def clear(self) -> None:
        """Remove every image (results from a running task are then ignored)."""
        self._token += 1
        self.paths.clear()
        self.results.clear()
        self._views.clear()
        self.strip.clear()
        self._set_message("")
        self._show_current()
        self._update_actions()

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if dropped_paths(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = dropped_paths(event)
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.add_paths(paths)

    # ------------------------------------------------------------------ choosing
    def set_method(self, name: str) -> None:
        """Show masks by "multi", "multiselect" or a student (its name or architecture)."""
        names = self.method_names()
        if self.segmenter is not None and name not in names:
            by_arch = [s.name for s in self.segmenter.students if s.architecture == name]
            if not by_arch:
                raise ValueError(f"unknown method {name!r}; choose from {', '.join(names)}")
            name = by_arch[0]
        if name not in names or not self.method_combo.model().item(names.index(name)).isEnabled():
            raise ValueError(f"{name!r} is not available with this project's models")
        self.method_combo.setCurrentIndex(names.index(name))   # -> _method_chosen

    def _method_chosen(self, index: int) -> None:
        method = self.method_combo.itemData(index)
        if method and method != self._method:
            self._method = method
            self._show_current()
            self._pump()

    def select(self, path: Path) -> None:
        self.strip.setCurrentRow(self.paths.index(Path(path)))

    def move(self, step: int) -> None:
        """Show the previous (-1) or next (+1) image of the film strip."""
        if self.paths:
            row = min(max(self.strip.currentRow() + step, 0), len(self.paths) - 1)
            self.strip.setCurrentRow(row)

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if event.key() in (Qt.Key_Left, Qt.Key_Right) and not event.modifiers() & ~Qt.KeypadModifier:
            self.move(-1 if event.key() == Qt.Key_Left else 1)
            return
        super().keyPressEvent(event)

    # ------------------------------------------------------------------ segmenting (threads)
    def _next_task(self) -> tuple[str, Path] | None:
        """What to compute next: the shown image first, then every unsegmented image in strip
        order, then the shown image's neighbours' views."""
        if self.models_state != READY:
            return None
        current = self.current_path
        if current is not None:
            if current not in self.results:
                return "segment", current
            if (current, self._method) not in self._views:
                return "render", current
        for path in self.paths:
            if path not in self.results:
                return "segment", path
        row = self.strip.currentRow()
        for neighbour in (row + 1, row - 1):
            if 0 <= neighbour < len(self.paths) and (self.paths[neighbour], self._method) not in self._views:
                return "render", self.paths[neighbour]
        return None

    def _pump(self) -> None:
        """Start the next task unless one runs (one at a time: the models are not shared)."""
        self._update_progress()
        if self._task is not None:
            return
        task = self._next_task()
        if task is None:
            return
        kind, path = task
        segmenter, method, token = self.segmenter, self._method, self._token
        row = self.strip.currentRow()
        near = {self.paths[r] for r in (row - 1, row, row + 1) if 0 <= r < len(self.paths)}
        known = self.results.get(path)

        def work(cancel):
            out = {"path": path, "token": token, "method": method}
            try:
                if kind == "segment":
                    result, image = segment_image(segmenter, path)
                    out["result"] = result
                else:
                    result, image = known, read_image(path)
                if path in near:
                    out["view"] = render(result, image, method)
            except UsslError as exc:
                out["error"] = str(exc)
            except Exception as exc:   # e.g. OpenCV on a strange image: name the file
                out["error"] = f"{path}: {type(exc).__name__}: {exc}"
            return out

        self._task = self.context.run_light(never_raising(work, stage="predict"), self._task_done)

    def _task_done(self, event: Progress | None) -> None:
        self._task = None
        value = event.metrics.get("value") if event is not None else None
        if value is not None and value["token"] == self._token and value["path"] in self.paths:
            path = value["path"]
            if "error" in value:
                self._drop_bad(path, value["error"])
            else:
                if "result" in value:
                    self.results[path] = value["result"]
                    self._set_icon(path, value["result"].thumbnail)
                if "view" in value:
                    self._views[(path, value["method"])] = value["view"]
                    self._views.move_to_end((path, value["method"]))
                    while len(self._views) > RENDER_CACHE:
                        self._views.popitem(last=False)
                if path == self.current_path:
                    self._show_current()
            self.image_done.emit(path)
        elif event is not None and "error" in event.metrics:
            self._show_errors([event.metrics["error"]], raw=True)
        self._pump()

    def _drop_bad(self, path: Path, message: str) -> None:
        """A file that could not be read or segmented: one message, and off the film strip."""
        row = self.paths.index(path)
        was_current = row == self.strip.currentRow()
        self.paths.pop(row)
        self.strip.blockSignals(True)
        self.strip.takeItem(row)
        if was_current and self.paths:
            self.strip.setCurrentRow(min(row, len(self.paths) - 1))
        self.strip.blockSignals(False)
        self.errors[path] = message
        self._show_errors([path])
        self._show_current()
        self._update_actions()

    def _set_icon(self, path: Path, thumb: np.ndarray) -> None:
        item = self.strip.item(self.paths.index(path))
        item.setIcon(QPixmap.fromImage(qimage_from_rgb(thumb)))

    # ------------------------------------------------------------------ showing
    def _show_current(self, *_args) -> None:
        path = self.current_path
        result = self.results.get(path) if path is not None else None
        view = self.rendered(path)
        tiles = (self.input_tile, self.mask_tile, self.overlay_tile, self.cutout_tile)
        if view is None:
            waiting = ("Drop images or folders here, or use Open" if path is None else
                       "Segmenting\u2026" if self.models_state in (READY, LOADING) else
                       "Waiting for trained models")
            for tile in tiles:
                tile.set_content(None)
                tile.placeholder = waiting
            self.info_label.setText(path.name if path is not None else "")
            if path is not None:
                self._pump()   # another image was chosen: make its views now
        else:
            self.input_tile.set_content(view.image)
            self.mask_tile.set_content(view.mask)
            self.overlay_tile.set_content(view.image, view.mask, view.boxes)
            self.cutout_tile.set_content(view.cutout)
            w, h = result.size if result else (view.image.shape[1], view.image.shape[0])
            label = METHOD_LABELS.get(view.method, view.method)
            if view.method == "multiselect" and result and result.pick:
                label += f" (picked {result.pick})"
            n = len(view.boxes)
            self.info_label.setText(f"{path.name}  \u00b7  {w}\u00d7{h}  \u00b7  {label}  \u00b7  "
                                    f"{n} box{'es' if n != 1 else ''}  \u00b7  "
                                    f"{self.strip.currentRow() + 1} of {len(self.paths)}")
        self._show_students(result)
        self._update_actions()

    def _show_students(self, result: ImageResult | None) -> None:
        """Every student's mask with its EvalSeg-Net score (as in the paper's Figure 4)."""
        names = [s.name for s in self.segmenter.students] if self.segmenter is not None else []
        if list(self.student_tiles) != names:
            for tile in self.student_tiles.values():
                self.students_layout.removeWidget(tile)
                tile.deleteLater()
            self.student_tiles = {}
            for i, name in enumerate(names):
                tile = ImageTile(name)
                tile.setFixedSize(STUDENT_TILE)
                self.students_layout.insertWidget(i, tile)
                self.student_tiles[name] = tile
        pick = result.pick if result else None
        aspect = result.size[0] / result.size[1] if result else None
        for name, tile in self.student_tiles.items():
            score = result.scores.get(name) if result else None
            tile.set_content(result.student_masks[name] if result else None, aspect=aspect)
            star = "\u2605 " if name == pick else ""
            tile.set_caption(f"{name}\n{star}{score:.3f}" if score is not None else name)
            tile.set_marked(name == pick)
            tile.setToolTip(f"{name}: " + (f"EvalSeg-Net score {score:.3f}" if score is not None
                                           else "no EvalSeg-Net score (no EvalSeg-Net)")
                            + ("; MultiSelect-Net's pick" if name == pick else "")
                            + ("; shown above" if name == self._method else ""))
        if not names:
            self.students_label.setText("Students: none loaded")
        elif result is not None and not result.scores:
            self.students_label.setText("Students (no EvalSeg-Net in this generation: no scores)")
        else:
            self.students_label.setText("Students, with EvalSeg-Net's score "
                                        "(\u2605 MultiSelect-Net's pick)")

    def _update_progress(self) -> None:
        total = len(self.paths)
        done = sum(1 for p in self.paths if p in self.results)
        if self.models_state == READY and done < total:
            self.progress_label.setText(f"Segmenting {done + 1} of {total}\u2026")
        elif total:
            self.progress_label.setText(f"{total} image{'s' if total != 1 else ''}")
        else:
            self.progress_label.setText("")

    def _show_errors(self, items: list, raw: bool = False) -> None:
        lines = items if raw else [f"Skipped {Path(p).name}: {self._short(p)}" for p in items]
        previous = [line for line in self.message_label.text().split("\n") if line]
        details = "\n".join(list(self.errors.values())[-20:])   # full paths
        self._set_message("\n".join((previous + lines)[-6:]), details)

    def _short(self, path: Path) -> str:
        """An error without the path it starts with (the full one is in the tooltip)."""
        message = self.errors[path]
        return message[len(str(path)) + 2:] if message.startswith(f"{path}: ") else message

    def _set_message(self, text: str, details: str = "") -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet(WARNING)
        self.message_label.setToolTip(details or text)
        self.message_row.setVisible(bool(text))

    def _update_actions(self, *_args) -> None:
        parts = self.masks_check.isChecked() or self.boxes_check.isChecked() or self.cutouts_check.isChecked()
        exporting = self._exporting is not None
        for button, ready, normal in (
                (self.export_current_button, self.current_path in self.results,
                 "Write the shown image's mask, boxes and cut-out to a folder"),
                (self.export_all_button, any(p in self.results for p in self.paths),
                 "Write every segmented image's mask, boxes and cut-out to a folder")):
            why = ("An export is running" if exporting else
                   "Tick what to export: masks, boxes or cut-outs" if not parts else
                   "" if ready else
                   "Nothing segmented yet" + ("" if self.models_state == READY
                                              else ": the project has no models loaded"))
            button.setEnabled(not why)
            button.setToolTip(why or normal)
        self.clear_button.setEnabled(bool(self.paths))

    # ------------------------------------------------------------------ export
    def export_dialog(self, which: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder")
        if folder:
            self.export(Path(folder), which)

    def export(self, folder: Path, which: str = "current", masks: bool | None = None,
               boxes: bool | None = None, cutouts: bool | None = None):
        """Write masks (<stem>.png), boxes (boxes.json, boxes.csv) and cut-outs
        (<stem>.cutout.png) of the current image or of "all" segmented images to `folder`, in
        a thread; `exported` carries the written paths. Parts default to the check boxes.
        Returns the worker, or None when there is nothing to export or an export runs."""
        if which not in ("current", "all"):
            raise ValueError(f"which must be 'current' or 'all', not {which!r}")
        parts = [self.masks_check.isChecked() if masks is None else masks,
                 self.boxes_check.isChecked() if boxes is None else boxes,
                 self.cutouts_check.isChecked() if cutouts is None else cutouts]
        paths = [self.current_path] if which == "current" else list(self.paths)
        ready = [p for p in paths if p in self.results]
        if self._exporting is not None or not ready or not any(parts):
            self._set_message("An export is already running" if self._exporting is not None else
                              "Nothing to export: tick masks, boxes or cut-outs" if ready else
                              "Nothing segmented to export yet")
            return None
        job = ExportJob(Path(folder), self._method,
                        [(self.results[p], self._views.get((p, self._method))) for p in ready],
                        output_stems(self.paths), *parts)
        waiting = len(paths) - len(ready)
        self._export_note = f"; {waiting} not segmented yet were left out" if waiting else ""
        self.progress_label.setText(f"Exporting {len(ready)} image{'s' if len(ready) != 1 else ''}\u2026")
        self._exporting = self.context.run_light(never_raising(job.run, stage="export"), self._export_done)
        self._update_actions()
        return self._exporting

    def _export_done(self, event: Progress | None) -> None:
        self._exporting = None
        self._update_progress()
        self._update_actions()
        metrics = event.metrics if event is not None else {"error": "the export was cancelled"}
        if "error" in metrics:
            self._set_message(f"Export failed: {metrics['error']}")
            return
        job: ExportJob = metrics["value"]
        n = len(job.items) - len(job.skipped)
        self.progress_label.setText(f"Exported {n} image{'s' if n != 1 else ''} to "
                                    f"{job.folder}{self._export_note}")
        if job.skipped:
            self._set_message("Not exported: " + "; ".join(job.skipped))
        self.exported.emit(job.written)

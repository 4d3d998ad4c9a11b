"""Per-image: the project's frames and added images, one row each, teacher against students.

Each row shows the frame, its ground truth (where it exists), the teacher's soft mask with its
selection score, each student's mask of the chosen generation with its EvalSeg-Net score,
Multi-Net and MultiSelect-Net (the student it picked is outlined, as in the paper's Figure 7),
IoU against ground truth under every mask, and two numbers to sort by: the disagreement
between teacher and students and the IoU gain of Multi-Net over the teacher. Sorting by any
score (the header or "Sort by") finds where the students improved on their teacher and where
they failed; rows can be limited to one video; double-click opens a large side-by-side view.

The GUI thread never computes: the rows' catalog facts are read with a short-lived read-only
Project in a thread, and the students' predictions are made in batches through
`context.run_light` (the generation's models loaded once, see ussl_core.browse.StudentPredictor),
visible rows first, only while the panel is shown. Results are kept in memory per teacher and
generation, so switching back is instant; rows fill in as batches land. The table is
virtualised: thumbnails are made on demand by a background loader (app.widgets.thumbnails).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QGridLayout, QHBoxLayout,
                               QHeaderView, QLabel, QSizePolicy, QStyledItemDelegate, QTableView,
                               QToolButton, QVBoxLayout, QWidget)

from app.context import StoreChange
from app.gc_policy import freeze_after_import
from app.style import MUTED, THUMB
from app.widgets.thumbnails import (CellRole, PayloadRole, ThumbnailCache, ThumbnailDelegate,
                                    ThumbnailLoader, fit_size, qimage_from_rgb)
from app.workers import is_alive, never_raising
from ussl_core.browse import (DISAGREEMENT, FRAME_ORDER, IOU_GAIN, MULTI_IOU, SELECT_SCORE,
                              TEACHER_SCORE, BrowseFrame, FrameResult, GenerationInfo, SourceCache,
                              StudentPredictor, compute_batch, fmt, generation_info, key_value,
                              list_frames, read_gt, read_images,
                              read_teacher_mask, sort_keys, sort_order, teacher_producers)
from ussl_core.ensemble import multi_net
from ussl_core.progress import Progress
from ussl_core.store import Project
from ussl_core.store.model_files import model_generations

BATCH = 16                 # frames per background batch
KEPT_RESULTS = 4           # (teacher, generation) result sets kept in memory
KEPT_PREDICTORS = 2        # generations whose models stay loaded
BROWSED_AREAS = frozenset({"videos", "masks", "models"})   # what the rows show
PICKED = QColor("#e08a00")
NO_MODELS_HINT = ("No trained students yet: the students' masks, Multi-Net and MultiSelect-Net "
                  "appear here after training (train students, and an EvalSeg-Net for "
                  "MultiSelect-Net). Until then: the frame, its ground truth and the teacher.")
IOU_TIP = ("IoU with ground truth: the soft mask upsampled to the ground truth's size and "
           "thresholded at 0.5 (as the purity curve computes it)")
DISAGREEMENT_TIP = ("Disagreement = 1 \u2212 IoU between the teacher's mask and the Multi-Net mask, "
                    "both thresholded at 0.5 at Multi-Net's resolution (128 \u00d7 128). "
                    "High: the students see something else than their teacher.")
GAIN_TIP = ("IoU gain = Multi-Net IoU \u2212 teacher IoU (ground truth only). Positive: the "
            "students improved on their teacher; negative: they did worse.\n" + IOU_TIP)


# ============================================================================ reading (threads)
@dataclass
class BrowseState:
    """What the panel lists, as one read of the store and the models folder."""
    root: Path
    working_size: tuple[int, int]
    teachers: list[str]
    teacher: str | None
    teacher_id: int | None
    teacher_signature: tuple
    frames: list[BrowseFrame]
    videos: list[tuple[int, str, int, int]]          # id, name, width, height
    generations: dict[int, GenerationInfo]


def read_state(root: Path, teacher: str | None) -> BrowseState:
    """The rows' catalog facts with a read-only Project (any thread)."""
    with Project.open(root) as project:
        teachers = teacher_producers(project)
        chosen = next((p for p in teachers if p.name == teacher), teachers[0] if teachers else None)
        frames = list_frames(project, chosen.id if chosen else None)
        videos = [(v.id, v.name, v.width, v.height) for v in project.videos()]
        size = project.working_size
    models = Path(root) / "models"
    generations = {g: generation_info(models, g) for g in model_generations(models)}
    # A teacher run with --replace rewrites its shards: their times tell cached scores apart.
    shards = sorted({f.teacher_shard for f in frames if f.teacher_shard})
    signature = tuple((s, Path(s).stat().st_mtime_ns) for s in shards if Path(s).exists())
    return BrowseState(Path(root), size, [p.name for p in teachers], chosen.name if chosen else None,
                       chosen.id if chosen else None, signature, frames, videos, generations)






def _grey(soft: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return (np.clip(cv2.resize(np.asarray(soft, np.float32), size, interpolation=cv2.INTER_AREA),
                    0, 1) * 255 + 0.5).astype(np.uint8)


def make_renderer() -> Callable[[tuple], np.ndarray]:
    """The loader thread's work: one cell's picture (frame in colour, masks in grey)."""
    sources = SourceCache()

    def render(payload: tuple) -> np.ndarray:
        kind, what, size = payload
        if kind == "frame":
            return read_images([what], size, sources)[0]
        if kind == "teacher":
            return _grey(read_teacher_mask(what), size)
        if kind == "gt":
            return _grey(read_gt(what).astype(np.float32), size)
        if kind == "student":
            return _grey(what.astype(np.float32) / 255.0, size)
        if kind == "multi":
            return _grey(multi_net([m.astype(np.float32) / 255.0 for m in what]), size)
        raise ValueError(f"unknown cell kind {kind!r}")
    return render


# ============================================================================ model
@dataclass(frozen=True)
class Column:
    kind: str              # frame, gt, teacher, student, multi, select, disagreement, gain
    title: str
    tip: str
    key: str | None        # the sort key a click on its header uses
    student: str | None = None

    @property
    def image(self) -> bool:
        return self.kind not in ("disagreement", "gain")


def make_columns(info: GenerationInfo | None) -> list[Column]:
    columns = [Column("frame", "Frame", "The frame (or added image); sorts in project order",
                      FRAME_ORDER),
               Column("gt", "Ground truth", "Ground-truth mask, where the source has one", None),
               Column("teacher", "Teacher", "The teacher's soft mask and its selection score "
                      "(\u201csel\u201d).\n" + IOU_TIP, TEACHER_SCORE)]
    if info is None or not info.students:
        return columns
    es = info.has_evalseg
    for name in info.students:
        columns.append(Column("student", name, f"Student {name}: its soft mask"
                              + (" and EvalSeg-Net's score of it (\u201cES\u201d)" if es else "")
                              + ". Outlined: the student MultiSelect-Net picked.\n" + IOU_TIP,
                              f"{name} EvalSeg" if es else f"{name} IoU", name))
    columns.append(Column("multi", "Multi-Net", "Multi-Net: the pixel-wise product of the "
                          "students' masks.\n" + IOU_TIP, MULTI_IOU))
    columns.append(Column("select", "MultiSelect-Net",
                          "MultiSelect-Net: the student mask EvalSeg-Net scores highest (its "
                          "score, \u201cES\u201d).\n" + IOU_TIP if es else
                          "MultiSelect-Net needs an EvalSeg-Net for this generation",
                          SELECT_SCORE if es else None))
    columns.append(Column("disagreement", "Disagreement", DISAGREEMENT_TIP, DISAGREEMENT))
    columns.append(Column("gain", "IoU gain", GAIN_TIP, IOU_GAIN))
    return columns


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
            return self.cell(column, frame, result) if column.image else None
        if role == PayloadRole:
            return self.payload(column, frame, result)
        if role == Qt.DisplayRole and not column.image:
            value = result.disagreement if column.kind == "disagreement" and result else (
                result.iou_gain if result else math.nan)
            text = fmt(value, 3)
            return text if column.kind != "gain" or text == "\u2014" else f"{value:+.3f}"
        if role == Qt.TextAlignmentRole and not column.image:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ToolTipRole:
            return self.tooltip(column, frame, result)
        return None

    def _student_key(self, name: str, frame_id: int) -> tuple:
        return ("student", self.generation, name, frame_id)

    def cell(self, column: Column, frame: BrowseFrame, result: FrameResult | None) -> tuple:
        """(thumbnail key or None when there is nothing to show, caption, badge, dim)."""
        kind, computed = column.kind, result is not None and bool(result.student_masks)
        if kind == "frame":
            return ("frame", frame.frame_id), f"{frame.video} \u00b7 {frame.idx}", "", False
        if kind == "gt":
            return ((("gt", frame.frame_id), "", "", False) if frame.has_gt
                    else (None, "no ground truth", "", True))
        if kind == "teacher":
            if not frame.has_teacher:
                return None, "no teacher mask", "", True
            caption = f"sel {frame.teacher_score:.3f}"
            if frame.has_gt and result is not None:
                caption += f" \u00b7 IoU {fmt(result.teacher_iou)}"
            return ("teacher", self.teacher_id, frame.frame_id), caption, "", False
        if not computed:   # on its way, or its batch failed (the hint says why)
            return None, "computing\u2026" if result is None else "not available", "", True
        if kind == "student":
            name = column.student
            parts = ([f"ES {fmt(result.evalseg[name])}"] if name in result.evalseg else []) + \
                    ([f"IoU {fmt(result.iou.get(name, math.nan))}"] if frame.has_gt else [])
            return (self._student_key(name, frame.frame_id), " \u00b7 ".join(parts),
                    "picked" if result.chosen == name else "", False)
        if kind == "multi":
            caption = f"IoU {fmt(result.multi_net_iou)}" if frame.has_gt else ""
            return ("multi", self.generation, frame.frame_id), caption, "", False
        if kind == "select":
            if result.chosen is None:
                return None, "needs EvalSeg-Net", "", True
            parts = [f"ES {fmt(result.selected_score)}"] + \
                    ([f"IoU {fmt(result.multiselect_iou)}"] if frame.has_gt else [])
            return self._student_key(result.chosen, frame.frame_id), " \u00b7 ".join(parts), "", False
        return None, "", "", False

    def payload(self, column: Column, frame: BrowseFrame, result: FrameResult | None) -> tuple:
        size = self.thumb_sizes.get(frame.video_id, (THUMB.width(), THUMB.height()))
        kind = column.kind
        if kind in ("frame", "gt", "teacher"):
            return kind, frame, size
        if result is None or not result.student_masks:
            return "none", None, size
        if kind == "student":
            return "student", result.student_masks[column.student], size
        if kind == "select" and result.chosen:
            return "student", result.student_masks[result.chosen], size
        if kind == "multi":
            return "multi", tuple(result.student_masks.values()), size
        return "none", None, size

    def tooltip(self, column: Column, frame: BrowseFrame, result: FrameResult | None) -> str:
        lines = [f"{frame.video}, frame {frame.idx} ({frame.name})"]
        if column.kind == "select" and result is not None and result.chosen:
            lines.append(f"MultiSelect-Net picked {result.chosen}")
        elif column.kind == "student" and result is not None and result.chosen == column.student:
            lines.append("MultiSelect-Net picked this student")
        lines.append(column.tip)
        return "\n".join(lines)


# ============================================================================ delegate
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


# ============================================================================ large view
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
    predicted again at full resolution (the table keeps small copies)."""

    loaded = Signal()

    def __init__(self, panel: "BrowserPanel", row: int) -> None:
        super().__init__(panel)
        self.panel = panel
        self.setAttribute(Qt.WA_DeleteOnClose, False)
        model = panel.model
        self.frame, self.result = model.frame_at(row), model.result_at(row)
        self.columns = [c for c in model.columns if c.image]
        self.setWindowTitle(f"{self.frame.video}, frame {self.frame.idx}")
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
        self._load()

    def _load(self) -> None:
        frame, panel = self.frame, self.panel
        size, display = panel.working_size(), panel.display_size(frame)
        predictor = panel.predictor() if any(c.kind == "student" for c in self.columns) else None

        def work(cancel):
            image = read_images([frame], size)[0]
            teacher, gt = read_teacher_mask(frame), read_gt(frame)
            students, scores = ({}, {})
            if predictor is not None:
                masks, rated = predictor.predict([image])
                students, scores = masks[0], rated[0]
                freeze_after_import("tensorflow")
            return image, teacher, gt, students, scores, display

        self.panel.context.run_light(never_raising(work, "images", "browse"),
                                     lambda event: is_alive(self) and self._loaded(event))

    def _loaded(self, event: Progress) -> None:
        if "error" in event.metrics:
            self.info.setText(event.metrics["error"])
            return
        image, teacher, gt, students, scores, (w, h) = event.metrics["images"]
        result, frame = self.result, self.frame
        chosen = max(scores, key=scores.get) if scores else None

        def grey(soft):
            return _grey(soft, (w, h))

        def iou_text(value):
            return f"IoU {fmt(value)}" if frame.has_gt and result is not None else ""

        for column, tile in self.tiles.items():
            kind = column.kind
            if kind == "frame":
                tile.set_image(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR),
                               f"{frame.name}")
            elif kind == "gt":
                tile.set_image(grey(gt.astype(np.float32)) if gt is not None else None,
                               "" if gt is not None else "no ground truth")
            elif kind == "teacher":
                tile.set_image(grey(teacher) if teacher is not None else None,
                               " \u00b7 ".join(filter(None, [
                                   f"sel {frame.teacher_score:.3f}" if frame.has_teacher
                                   else "no teacher mask",
                                   iou_text(result.teacher_iou) if result else ""])))
            elif kind == "student" and column.student in students:
                name = column.student
                es = f"ES {scores[name]:.3f}" if name in scores else ""
                tile.set_image(grey(students[name]), " \u00b7 ".join(filter(None, [
                    es, iou_text(result.iou.get(name, math.nan)) if result else ""])),
                    picked=name == chosen)
            elif kind == "multi" and students:
                tile.set_image(grey(multi_net(list(students.values()))),
                               iou_text(result.multi_net_iou) if result else "")
            elif kind == "select" and chosen is not None:
                tile.set_image(grey(students[chosen]), " \u00b7 ".join(filter(None, [
                    chosen, f"ES {scores[chosen]:.3f}",
                    iou_text(result.multiselect_iou) if result else ""])))
        text = f"{frame.video}, frame {frame.idx} ({frame.name})"
        if result is not None and result.student_masks:
            text += (f"   \u00b7   disagreement {fmt(result.disagreement, 3)}"
                     f"   \u00b7   IoU gain {fmt(result.iou_gain, 3)}")
        self.info.setText(text)
        self.is_loaded = True
        self.loaded.emit()


# ============================================================================ panel
class BrowserPanel(QWidget):
    """The per-image predictions browser (see the module's docstring)."""

    title = "Per-image"
    state_loaded = Signal()     # the rows' catalog facts were (re)read
    rows_complete = Signal()    # every row of the current teacher and generation is computed

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.state: BrowseState | None = None
        self.dialog: RowDialog | None = None
        self.batches_computed = 0
        self._generation: int | None = None
        self._video_id: int | None = None
        self._sort: tuple[str, bool] = (FRAME_ORDER, False)
        self._results: OrderedDict[tuple, dict[int, FrameResult]] = OrderedDict()
        self._predictors: OrderedDict[tuple, StudentPredictor] = OrderedDict()
        self._sources = SourceCache()       # used by one batch at a time
        self._computing = False
        self._complete = False
        self._warning = ""
        self._state_loading = False
        self._state_dirty = False
        self._refresh_when_shown = False
        self._token = 0                     # bumped when another project opens
        self.cache = ThumbnailCache(3000)
        self.loader = ThumbnailLoader(make_renderer(), parent=self)
        self._build()
        context.project_changed.connect(self._project_changed)
        context.changed.connect(self._store_changed)
        self._project_changed()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 4)
        outer.setSpacing(4)
        bar = QHBoxLayout()
        bar.setSpacing(6)
        self.generation_combo = QComboBox()
        self.generation_combo.setToolTip("Whose students to compare with the teacher")
        self.teacher_combo = QComboBox()
        for combo in (self.generation_combo, self.teacher_combo):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.teacher_combo.setToolTip("The teacher whose masks and selection scores are shown")
        self.video_combo = QComboBox()
        self.video_combo.setMinimumContentsLength(12)
        self.video_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.sort_combo = QComboBox()
        self.sort_combo.setMinimumContentsLength(18)
        self.sort_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.sort_combo.setToolTip("Sort the rows by a score (rows without one go last)\n"
                                   + DISAGREEMENT_TIP + "\n" + IOU_TIP)
        self.descending_button = QToolButton()
        self.descending_button.setCheckable(True)
        self.descending_button.setToolTip("Highest first (checked) or lowest first")
        self.descending_button.toggled.connect(self._descending_toggled)
        self._show_direction(False)
        for caption, widget in (("Generation", self.generation_combo), ("Teacher", self.teacher_combo),
                                ("Video", self.video_combo), ("Sort by", self.sort_combo)):
            label = QLabel(caption)
            label.setStyleSheet(MUTED)
            bar.addWidget(label)
            bar.addWidget(widget)
        bar.addWidget(self.descending_button)
        bar.addStretch(1)
        self.progress_label = QLabel("")
        self.progress_label.setStyleSheet(MUTED)
        bar.addWidget(self.progress_label)
        outer.addLayout(bar)

        self.hint_label = QLabel("")
        self.hint_label.setWordWrap(True)
        self.hint_label.setStyleSheet("color: #8a5a00; background: #fff6e0; padding: 4px;")
        self.hint_label.hide()
        outer.addWidget(self.hint_label)

        self.model = BrowserModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.delegate = CellDelegate(self.cache, self.loader, THUMB, self.table)
        self.delegate.attach(self.table)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.table.setHorizontalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        vertical = self.table.verticalHeader()
        vertical.setSectionResizeMode(QHeaderView.Fixed)
        vertical.setDefaultSectionSize(self.delegate.cell_size().height())
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Fixed)
        header.setHighlightSections(False)
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.sectionClicked.connect(self._header_clicked)
        self.table.doubleClicked.connect(lambda index: self.open_row(index.row()))
        self.table.verticalScrollBar().valueChanged.connect(lambda _: self._schedule())
        outer.addWidget(self.table, 1)

        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet(MUTED)
        outer.addWidget(self.status_label)

        self.generation_combo.currentIndexChanged.connect(lambda _: self._generation_changed())
        self.teacher_combo.currentIndexChanged.connect(lambda _: self._teacher_changed())
        self.video_combo.currentIndexChanged.connect(lambda _: self._video_changed())
        self.sort_combo.currentIndexChanged.connect(lambda _: self._sort_combo_changed())

    def _show_direction(self, descending: bool) -> None:
        self.descending_button.blockSignals(True)
        self.descending_button.setChecked(descending)
        self.descending_button.setText("\u2193 high first" if descending else "\u2191 low first")
        self.descending_button.blockSignals(False)

    # ------------------------------------------------------------------ public API
    def rows(self) -> list[dict]:
        """The visible rows in their current order, as plain data."""
        out = []
        for row in range(self.model.rowCount()):
            f, r = self.model.frame_at(row), self.model.result_at(row)
            out.append({
                "frame_id": f.frame_id, "video_id": f.video_id, "video": f.video, "idx": f.idx,
                "name": f.name, "has_gt": f.has_gt, "teacher_score": f.teacher_score,
                "computed": r is not None,
                "teacher_iou": r.teacher_iou if r else math.nan,
                "evalseg": dict(r.evalseg) if r else {}, "iou": dict(r.iou) if r else {},
                "multi_net_iou": r.multi_net_iou if r else math.nan,
                "multiselect_iou": r.multiselect_iou if r else math.nan,
                "chosen": r.chosen if r else None,
                "disagreement": r.disagreement if r else math.nan,
                "iou_gain": r.iou_gain if r else math.nan})
        return out

    def sort_keys(self) -> list[str]:
        info = self.generation_info()
        return sort_keys(info.students if info else (), bool(info and info.has_evalseg))

    def sort_by(self, key: str, descending: bool | None = None) -> None:
        """Order the rows by a key of `sort_keys()` (highest first by default, except the
        frame order); rows without a value go last."""
        if key not in self.sort_keys():
            raise KeyError(f"unknown sort key {key!r}; one of {', '.join(self.sort_keys())}")
        self._sort = (key, key != FRAME_ORDER if descending is None else bool(descending))
        self._sync_sort_widgets()
        self._apply_sort()

    @property
    def sort_key(self) -> tuple[str, bool]:
        return self._sort

    def generations(self) -> list[int]:
        return sorted(self.state.generations) if self.state else []

    @property
    def generation(self) -> int | None:
        return self._generation

    def generation_info(self) -> GenerationInfo | None:
        if self.state is None or self._generation is None:
            return None
        return self.state.generations.get(self._generation)

    def set_generation(self, generation: int) -> None:
        index = self.generation_combo.findData(generation)
        if index < 0:
            raise KeyError(f"no trained students of generation {generation}")
        self.generation_combo.setCurrentIndex(index)

    def set_video(self, video_id: int | None) -> None:
        """Show one video's rows (None: all)."""
        index = self.video_combo.findData(video_id if video_id is not None else -1)
        if index < 0:
            raise KeyError(f"no video {video_id}")
        self.video_combo.setCurrentIndex(index)

    def is_complete(self) -> bool:
        """True when every row of the current teacher and generation has its scores."""
        return self._complete

    def open_row(self, row: int) -> RowDialog:
        """The large side-by-side view of a row (its `loaded` signal fires when it is filled)."""
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
        self.dialog = RowDialog(self, row)
        self.dialog.show()
        return self.dialog

    def shutdown(self) -> None:
        """Stop the thumbnail thread and further batches."""
        self._token += 1
        self.state = None
        self.loader.stop()

    # -- used by the large view
    def working_size(self) -> tuple[int, int]:
        return self.state.working_size if self.state else (256, 256)

    def display_size(self, frame: BrowseFrame) -> tuple[int, int]:
        for video_id, _, width, height in (self.state.videos if self.state else []):
            if video_id == frame.video_id:
                return fit_size(width, height, QSize(480, 360))
        return 480, 360

    def predictor(self) -> StudentPredictor | None:
        info = self.generation_info()
        if info is None or not info.students or self.state is None:
            return None
        key = (str(self.state.root), info.generation, info.signature)
        if key not in self._predictors:
            self._predictors[key] = StudentPredictor(self.state.root / "models", info.generation)
            while len(self._predictors) > KEPT_PREDICTORS:
                self._predictors.popitem(last=False)
        self._predictors.move_to_end(key)
        return self._predictors[key]

    # ------------------------------------------------------------------ state
    def _project_changed(self) -> None:
        self._token += 1
        self.state = None
        self._results.clear()
        self._predictors.clear()
        self._sources = SourceCache()
        self._generation, self._video_id = None, None
        self._warning = ""
        self._complete = False
        self.loader.reset()
        self.cache.clear()
        self.delegate.clear()
        self.model.set_contents([], {}, make_columns(None), None, None, {}, np.empty(0, np.int64))
        for combo in (self.generation_combo, self.teacher_combo, self.video_combo, self.sort_combo):
            combo.blockSignals(True)
            combo.clear()
            combo.blockSignals(False)
        self.hint_label.hide()
        self.progress_label.setText("")
        self.status_label.setText("" if self.context.project else "No project")
        self.request_state()

    def _store_changed(self, change: StoreChange) -> None:
        """A job or a panel wrote the store: re-read, once the job has ended, only when frames,
        masks or models changed (an applied selection or a decision changes nothing shown here,
        and the re-read would compete with the window for the GIL just as the next job starts)."""
        if change.live or not change.touches(BROWSED_AREAS):
            return
        if not self.isVisible():
            self._refresh_when_shown = True   # one re-read when shown, not one per job meanwhile
            return
        self.request_state()

    def request_state(self) -> None:
        """Re-read the rows' catalog facts and the models folder in a thread (coalesced)."""
        if self.context.project is None:
            return
        if self._state_loading:
            self._state_dirty = True
            return
        self._state_loading, self._state_dirty = True, False
        root, teacher, token = self.context.root, self.teacher_combo.currentData(), self._token
        self.context.run_light(never_raising(lambda cancel: read_state(root, teacher), "state", "browse"),
                               lambda event: is_alive(self) and self._state_read(token, event))

    def _state_read(self, token: int, event: Progress) -> None:
        self._state_loading = False
        if token == self._token:
            if "error" in event.metrics:
                self.status_label.setText(f"Cannot read the project: {event.metrics['error']}")
            else:
                self._apply_state(event.metrics["state"])
        if self._state_dirty:
            self.request_state()

    def _apply_state(self, state: BrowseState) -> None:
        previous = self.state
        self.state = state
        if previous is not None and (previous.generations != state.generations or
                                     previous.teacher_signature != state.teacher_signature):
            self.loader.reset()      # a model was retrained or the teacher ran again
            self.cache.clear()
            self.delegate.clear()
        self._fill_combo(self.teacher_combo, [(name, name) for name in state.teachers],
                         state.teacher, "(no teacher masks yet)")
        generations = sorted(state.generations)
        wanted = self._generation if self._generation in state.generations else (
            generations[-1] if generations else None)
        self._fill_combo(self.generation_combo,
                         [(f"{g} ({len(state.generations[g].students)} students"
                           f"{'' if state.generations[g].has_evalseg else ', no EvalSeg-Net'})", g)
                          for g in generations], wanted, "(no trained students)")
        self._generation = wanted
        videos = [("All videos", -1)] + [(name, vid) for vid, name, _, _ in state.videos]
        video = self._video_id if any(v == self._video_id for _, v in videos[1:]) else None
        self._fill_combo(self.video_combo, videos, video if video is not None else -1, "")
        self._video_id = video
        self._rebuild()
        self.state_loaded.emit()

    @staticmethod
    def _fill_combo(combo: QComboBox, items: list[tuple[str, object]], current, empty: str) -> None:
        combo.blockSignals(True)
        combo.clear()
        for text, data in items:
            combo.addItem(text, data)
        if not items and empty:
            combo.addItem(empty, None)
        combo.setEnabled(bool(items))
        index = combo.findData(current) if current is not None else -1
        combo.setCurrentIndex(max(index, 0))
        combo.blockSignals(False)

    # ------------------------------------------------------------------ rows
    def _cache_key(self) -> tuple:
        state, info = self.state, self.generation_info()
        return (str(state.root), state.teacher_id, state.teacher_signature,
                info.generation if info else None, info.signature if info else ())

    def _current_results(self) -> dict[int, FrameResult]:
        key = self._cache_key()
        if key not in self._results:
            self._results[key] = {}
            while len(self._results) > KEPT_RESULTS:
                self._results.popitem(last=False)
        self._results.move_to_end(key)
        return self._results[key]

    def _rebuild(self) -> None:
        """Columns, rows and order for the current state, teacher, generation and video."""
        state, info = self.state, self.generation_info()
        if state is None:
            return
        columns = make_columns(info)
        thumbs = {vid: fit_size(w, h, THUMB) for vid, _, w, h in state.videos}
        keys = self.sort_keys()
        if self._sort[0] not in keys:
            self._sort = (FRAME_ORDER, False)
        anchor = self._view_anchor()
        self.model.set_contents(state.frames, self._current_results(), columns,
                                info.generation if info else None, state.teacher_id, thumbs,
                                self._ordered_view(state.frames))
        self._restore_view(anchor)
        cell = self.delegate.cell_size().width()
        for i, column in enumerate(columns):
            self.table.setColumnWidth(i, cell if column.image else 96)
        self.sort_combo.blockSignals(True)
        self.sort_combo.clear()
        self.sort_combo.addItems(keys)
        self.sort_combo.blockSignals(False)
        self._sync_sort_widgets()
        self._update_hint()
        self._complete = False
        self._update_progress()
        self._schedule()

    def _view_anchor(self) -> tuple[int | None, int | None, int]:
        """The current row's frame, the frame at the top of the view and how many pixels of it
        are scrolled past: what a rebuild (a job wrote the store) must not lose."""
        if not len(self.model.view):
            return None, None, 0
        current = self.table.currentIndex()
        current_id = self.model.frame_at(current.row()).frame_id if current.isValid() else None
        top = self.table.rowAt(0)
        if top < 0:
            return current_id, None, 0
        return current_id, self.model.frame_at(top).frame_id, -self.table.rowViewportPosition(top)

    def _restore_view(self, anchor: tuple[int | None, int | None, int]) -> None:
        current_id, top_id, offset = anchor
        current_row, top_row = self.model.row_of(current_id), self.model.row_of(top_id)
        if current_row is not None:
            selection = self.table.selectionModel()
            selection.blockSignals(True)
            self.table.setCurrentIndex(self.model.index(current_row, 0))
            selection.blockSignals(False)
        if top_row is not None:
            row_height = self.table.verticalHeader().defaultSectionSize()
            self.table.verticalScrollBar().setValue(top_row * row_height + offset)

    def _update_hint(self) -> None:
        state, info = self.state, self.generation_info()
        text = ""
        if state is not None and not state.frames:
            text = "No frames yet: add videos or images and run the teacher (Videos panel)."
        elif info is None or not info.students:
            text = NO_MODELS_HINT
        elif not info.has_evalseg:
            text = (f"Generation {info.generation} has no EvalSeg-Net: the students' EvalSeg "
                    "scores and MultiSelect-Net appear once one is trained.")
        if self._warning:
            text = (text + "\n" if text else "") + self._warning
        self.hint_label.setText(text)
        self.hint_label.setVisible(bool(text))

    def hint_text(self) -> str:
        return self.hint_label.text() if not self.hint_label.isHidden() else ""

    def _filtered_positions(self, frames: list[BrowseFrame]) -> np.ndarray:
        if self._video_id is None:
            return np.arange(len(frames), dtype=np.int64)
        return np.array([i for i, f in enumerate(frames) if f.video_id == self._video_id], np.int64)

    def _ordered_view(self, frames: list[BrowseFrame]) -> np.ndarray:
        positions = self._filtered_positions(frames)
        key, descending = self._sort
        if key == FRAME_ORDER:
            return positions[::-1].copy() if descending else positions
        results = self.model.results if frames is self.model.frames else self._current_results()
        values = np.array([key_value(key, frames[i], results.get(frames[i].frame_id), int(i))
                           for i in positions], np.float64)
        return positions[sort_order(values, descending)]

    def _apply_sort(self) -> None:
        if self.state is not None:
            self.model.reorder(self._ordered_view(self.model.frames))

    def _sync_sort_widgets(self) -> None:
        key, descending = self._sort
        self.sort_combo.blockSignals(True)
        self.sort_combo.setCurrentIndex(max(self.sort_combo.findText(key), 0))
        self.sort_combo.blockSignals(False)
        self._show_direction(descending)
        header = self.table.horizontalHeader()
        column = next((i for i, c in enumerate(self.model.columns) if c.key == key), -1)
        header.setSortIndicator(column, Qt.DescendingOrder if descending else Qt.AscendingOrder)

    # ------------------------------------------------------------------ controls
    def _generation_changed(self) -> None:
        self._generation = self.generation_combo.currentData()
        self._rebuild()

    def _teacher_changed(self) -> None:
        self.request_state()

    def _video_changed(self) -> None:
        data = self.video_combo.currentData()
        self._video_id = None if data in (None, -1) else data
        if self.state is not None:
            self.model.beginResetModel()
            self.model.view = self._ordered_view(self.model.frames)
            self.model.endResetModel()
            self._update_progress()
            self._schedule()

    def _sort_combo_changed(self) -> None:
        key = self.sort_combo.currentText()
        if key:
            self.sort_by(key)

    def _descending_toggled(self, descending: bool) -> None:
        self.sort_by(self._sort[0], descending)

    def _header_clicked(self, section: int) -> None:
        key = self.model.columns[section].key if 0 <= section < len(self.model.columns) else None
        if key is None:
            self._sync_sort_widgets()   # not sortable: keep the indicator where it was
            return
        self.sort_by(key, not self._sort[1] if key == self._sort[0] else None)

    # ------------------------------------------------------------------ computing
    def _next_batch(self, results: dict[int, FrameResult]) -> list[BrowseFrame]:
        """Missing rows, the visible ones first, then the rest of the view, then other videos."""
        frames, view = self.model.frames, self.model.view
        top = max(self.table.rowAt(0), 0)
        order = np.concatenate([view[top:], view[:top]]).tolist()
        batch = [frames[p] for p in order if frames[p].frame_id not in results][:BATCH]
        if len(batch) < BATCH and len(view) < len(frames):
            batch += [f for f in frames if f.frame_id not in results and f not in batch][
                :BATCH - len(batch)]
        return batch

    def _schedule(self) -> None:
        """Start the next batch if none runs (only while the panel is shown)."""
        if self._computing or self.state is None or not self.isVisible():
            return
        results = self._current_results()
        batch = self._next_batch(results)
        if not batch:
            self._update_progress()
            if not self._complete:
                self._complete = True
                self.rows_complete.emit()
            return
        self._computing = True
        key, predictor, size, sources = (self._cache_key(), self.predictor(),
                                         self.state.working_size, self._sources)

        def work(cancel):
            computed = compute_batch(batch, size, predictor, sources)
            freeze_after_import("tensorflow")   # the students loaded it: see app.gc_policy
            return computed

        self.context.run_light(never_raising(work, "batch", "browse"),
                               lambda event: is_alive(self) and self._batch_done(key, batch, event))

    def _batch_done(self, key: tuple, batch: list[BrowseFrame], event: Progress) -> None:
        self._computing = False
        if "error" in event.metrics:   # keep going: these rows stay empty, the panel says why
            results, warning = [FrameResult(f.frame_id) for f in batch], event.metrics["error"]
        else:
            results, warning = event.metrics["batch"]
        if warning and warning != self._warning:
            self._warning = warning
            self._update_hint()
        self.batches_computed += 1
        store = self._results.get(key)
        if store is not None:
            for result in results:
                store[result.frame_id] = result
        if self.state is not None and key == self._cache_key():
            self.model.frames_updated({r.frame_id for r in results})
            if self._sort[0] not in (FRAME_ORDER, TEACHER_SCORE):
                self._apply_sort()   # computed rows take their place (rows without values last)
            self._update_progress()
        self._schedule()

    def _update_progress(self) -> None:
        if self.state is None:
            self.progress_label.setText("")
            return
        results = self.model.results
        frames = [self.model.frames[p] for p in self.model.view.tolist()]
        done = sum(f.frame_id in results for f in frames)
        what = "students' masks" if self.generation_info() else "scores"
        self.progress_label.setText(f"{len(frames):,} rows" if done == len(frames) else
                                    f"computing {what}: {done:,} / {len(frames):,} rows")

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if self._refresh_when_shown:
            self._refresh_when_shown = False
            self.request_state()
        self._schedule()

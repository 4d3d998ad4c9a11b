"""The Videos panel: the project's sources, adding more, running the teacher, and a frame viewer.

Everything that writes goes through `context.run_job` (a child process); everything that reads
more than a row or two (the table's counts, frames, masks, ground truth) goes through
`context.run_light` with its own short-lived read-only `Project.open`, so the GUI thread only
ever applies finished results.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QFrame,
                               QGroupBox, QHBoxLayout, QHeaderView, QLabel, QMessageBox,
                               QProgressBar, QPushButton, QScrollArea, QSlider,
                               QSpinBox, QSplitter, QStyle, QTableView, QToolButton, QVBoxLayout,
                               QWidget)

from app.context import StoreChange
from app.style import BUSY_TIP, NO_PROJECT_TIP
from app.widgets.drops import dropped_paths
from app.widgets.job_progress import EtaEstimator, eta_text, format_duration
from app.widgets.mask_view import MaskView
from app.widgets.settings_form import SettingsForm
from ussl_core.ingest import is_davis_root
from ussl_core.media import VIDEO_EXTENSIONS, MediaSource, is_video_file, open_source, resize_rgb
from ussl_core.progress import Progress
from ussl_core.purity import read_ground_truth
from ussl_core.steps import AddStep, TeacherStep
from ussl_core.store import Project
from ussl_core.store.project import Frame, Mask, Producer, Shot, Video
from ussl_core.teacher import TEACHERS
from ussl_core.teacher.runner import producer_name

DASH = "—"
MAX_DISPLAY_SIDE = 640      # frames are shown at the source's aspect ratio, at most this large
CHUNK = 8                   # frames decoded per background read
PREFETCH = 12               # frames ahead of the shown one kept ready (playback, scrubbing)
CACHE_FRAMES = 64
PLAY_INTERVAL_MS = 100      # ~10 frames/s


# ----------------------------------------------------------------------------- reading (threads)


@dataclass(frozen=True)
class VideoRow:
    id: int
    name: str
    kind: str
    source: str
    frames: int
    shots: int
    width: int
    height: int
    masks: int            # frames with masks of the teacher producer shown in the table
    has_gt: bool

    @property
    def teacher_status(self) -> str:
        if self.kind == "images" or self.masks == 0:
            return DASH
        if self.masks >= self.frames:
            return "done"
        return f"{self.masks}/{self.frames}"


@dataclass
class VideoDetail:
    video: Video
    frames: list[Frame]
    shots: dict[int, Shot]
    producer_id: int | None
    masks: dict[int, Mask]   # frame id -> mask of the viewer's producer


@dataclass
class PanelState:
    root: Path
    rows: list[VideoRow]
    producers: list[Producer]
    detail: VideoDetail | None


def read_state(root: Path, teacher_producer: str, video_id: int | None,
               viewer_producer: str | None) -> PanelState:
    """The table's rows and the selected video's frames and masks, from a read-only view."""
    with Project.open(root) as project:
        videos = project.videos()
        shot_counts = Counter(s.video_id for s in project.shots())
        producers = project.producers()
        by_name = {p.name: p for p in producers}
        counts: Counter = Counter()
        if teacher_producer in by_name:
            counts = Counter(m.video_id for m in project.masks(by_name[teacher_producer].id))
        rows = [VideoRow(v.id, v.name, v.kind, v.source, v.frame_count, shot_counts[v.id], v.width,
                         v.height, counts[v.id], v.gt_source is not None) for v in videos]
        detail = None
        if video_id is not None and any(v.id == video_id for v in videos):
            producer = by_name.get(viewer_producer) if viewer_producer else None
            masks = {m.frame_id: m for m in project.masks(producer.id, video_id)} if producer else {}
            detail = VideoDetail(project.video(video_id), project.frames(video_id),
                                 {s.id: s for s in project.shots(video_id)},
                                 producer.id if producer else None, masks)
    return PanelState(Path(root), rows, producers, detail)


def display_size(video: Video) -> tuple[int, int]:
    """(width, height) the viewer decodes frames at: the source's aspect, at most 640 px."""
    scale = min(1.0, MAX_DISPLAY_SIDE / max(video.width, video.height, 1))
    return max(1, round(video.width * scale)), max(1, round(video.height * scale))


@dataclass
class ChunkRequest:
    token: int
    root: Path
    video: Video
    size: tuple[int, int]
    frames: list[Frame]                      # frames whose pixels are wanted
    shots: dict[int, Shot]
    masks: list[Mask] = field(default_factory=list)
    ground_truth: list[Frame] = field(default_factory=list)


@dataclass
class ChunkResult:
    token: int
    video_id: int
    frames: dict[int, np.ndarray]            # frame idx -> RGB at the display size
    masks: dict[tuple[int, int], np.ndarray]  # (producer id, frame id) -> soft mask
    ground_truth: dict[int, np.ndarray]      # frame id -> bool


class _Sources:
    """Opened media sources, reused across chunk reads (only one chunk is read at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, MediaSource] = {}

    def get(self, path: Path) -> MediaSource:
        with self._lock:
            if path not in self._open:
                self._open[path] = open_source(path)
            return self._open[path]

    def clear(self) -> None:
        with self._lock:
            self._open.clear()


def read_chunk(request: ChunkRequest, sources: _Sources) -> ChunkResult:
    """Frames (stored shards, else the source), masks and ground truth of a few frames."""
    frames: dict[int, np.ndarray] = {}
    masks: dict[tuple[int, int], np.ndarray] = {}
    gts: dict[int, np.ndarray] = {}
    with Project.open(request.root) as project:
        from_source: list[Frame] = []
        by_shot: dict[int, list[Frame]] = {}
        for frame in request.frames:
            by_shot.setdefault(frame.shot_id, []).append(frame)
        for shot_id, group in by_shot.items():
            shot = request.shots.get(shot_id)
            if shot is None or not shot.frames_shard:
                from_source += group
                continue
            stored = project.read_frames(shot, [f.idx - shot.start for f in group])
            for frame, pixels in zip(group, stored):
                frames[frame.idx] = resize_rgb(pixels, request.size)
        if from_source:
            source = sources.get(project.abspath(request.video.source))
            wanted = {f.idx for f in from_source}
            start, stop = min(wanted), max(wanted) + 1
            for idx, pixels in zip(range(start, stop), source.iter_frames(start, stop, request.size)):
                if idx in wanted:
                    frames[idx] = pixels
        for mask, soft in project.read_masks(request.masks):
            masks[(mask.producer_id, mask.frame_id)] = soft
        for frame in request.ground_truth:
            gts[frame.id] = read_ground_truth(project.abspath(frame.gt_path))
    return ChunkResult(request.token, request.video.id, frames, masks, gts)


class LRU:
    """A small least-recently-used cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict = OrderedDict()

    def get(self, key):
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def __contains__(self, key) -> bool:
        return key in self._items

    def put(self, key, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


# ----------------------------------------------------------------------------- the table


class VideosModel(QAbstractTableModel):
    COLUMNS = ("Name", "Frames", "Shots", "Size", "Teacher", "Ground truth")
    NUMERIC = {1, 2}

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
            self.rows, self.texts = rows, [self._texts(row) for row in rows]
            for i in changed:
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(self.COLUMNS) - 1))
        else:
            self.beginResetModel()
            self.rows, self.texts = rows, [self._texts(row) for row in rows]
            self.endResetModel()
        if header_changed:
            self.headerDataChanged.emit(Qt.Horizontal, 4, 4)

    @staticmethod
    def _texts(row: VideoRow) -> tuple[str, ...]:
        return (row.name, str(row.frames), str(row.shots), f"{row.width}\u00d7{row.height}",
                row.teacher_status, "yes" if row.has_gt else "no")

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt naming)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if orientation != Qt.Horizontal:
            return None
        if role == Qt.DisplayRole:
            return self.COLUMNS[section]
        if role == Qt.ToolTipRole and section == 4:
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
            return (row.name.lower(), row.frames, row.shots, row.width * row.height,
                    row.masks / max(row.frames, 1), row.has_gt)[col]
        if role == Qt.TextAlignmentRole and col in self.NUMERIC:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ToolTipRole:
            if col == 4:
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


# ----------------------------------------------------------------------------- the panel


class VideosPanel(QWidget):
    title = "Videos"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.setAcceptDrops(True)
        self._root: Path | None = None
        self._rows: list[VideoRow] = []
        self._producers: list[Producer] = []
        self._video_id: int | None = None        # the selected video
        self._detail: VideoDetail | None = None  # its frames and masks, as last read
        self._index = 0
        self._frames = LRU(CACHE_FRAMES)         # (video id, idx) -> RGB
        self._masks = LRU(CACHE_FRAMES * 2)      # (producer id, frame id) -> soft mask
        self._gts = LRU(CACHE_FRAMES * 2)        # frame id -> bool
        self._sources = _Sources()
        self._state_loading = False
        self._state_dirty = False
        self._chunk_loading = False
        self._token = 0                          # bumped when the project changes
        self._failed: set[tuple[int, int]] = set()
        self._chunk_key: tuple[int, int] = (-1, -1)
        self._queue: list[AddStep] = []          # add steps waiting for the running one
        self._job_kind: str | None = None        # a job this panel started, while it runs
        self._job_started = 0.0
        self._eta = EtaEstimator()
        self._form_synced: tuple | None = None
        self.form: SettingsForm | None = None

        self._build()
        self._player = QTimer(self)
        self._player.setInterval(PLAY_INTERVAL_MS)
        self._player.timeout.connect(self._play_tick)

        context.project_changed.connect(self._project_changed)
        context.changed.connect(self._store_changed)
        context.busy_changed.connect(self._update_actions)
        context.job_progress.connect(self._job_progress)
        context.job_finished.connect(self._job_finished)
        self._project_changed()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.setSpacing(4)

        bar = QHBoxLayout()
        bar.setSpacing(4)
        self.add_videos_button = QPushButton("Add videos\u2026")
        self.add_videos_button.clicked.connect(self.add_videos_dialog)
        self.add_folder_button = QPushButton("Add folder\u2026")
        self.add_folder_button.clicked.connect(self.add_folder_dialog)
        self.images_check = QCheckBox("Folder holds unrelated images")
        self.images_check.setToolTip("Checked: each image of an added folder is its own item "
                                     "(an image collection), not a frame of a video")
        self.busy_label = QLabel("")
        self.busy_label.setStyleSheet("color: #b07000;")
        hint = QLabel("or drop videos and folders here")
        hint.setStyleSheet("color: gray;")
        for widget in (self.add_videos_button, self.add_folder_button, self.images_check, hint):
            bar.addWidget(widget)
        bar.addStretch(1)
        bar.addWidget(self.busy_label)
        outer.addLayout(bar)

        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self._build_left())
        self.splitter.addWidget(self._build_viewer())
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setSizes([460, 700])
        outer.addWidget(self.splitter, 1)

    def _build_left(self) -> QWidget:
        left = QWidget()
        layout = QVBoxLayout(left)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)

        self.model = VideosModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(Qt.UserRole)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(22)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        # Sized to the contents when the rows are replaced, not on every change (a
        # ResizeToContents header re-measures every cell whenever any cell changes).
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        self.model.modelReset.connect(self._fit_columns)
        self.table.selectionModel().currentRowChanged.connect(self._current_row_changed)
        layout.addWidget(self.table, 1)

        box = QGroupBox("Teacher")
        box_layout = QVBoxLayout(box)
        box_layout.setContentsMargins(6, 4, 6, 6)
        box_layout.setSpacing(4)
        row = QHBoxLayout()
        row.setSpacing(4)
        self.teacher_combo = QComboBox()
        self.teacher_combo.addItems(list(TEACHERS))
        self.teacher_combo.setToolTip("videopca: the paper's generation-1 teacher; "
                                      "mog2: a background-subtraction baseline")
        self.teacher_combo.currentTextChanged.connect(self._teacher_changed)
        self.workers_spin = QSpinBox()
        cpus = os.cpu_count() or 1
        self.workers_spin.setRange(1, max(cpus, 1))
        self.workers_spin.setValue(max(1, cpus - 1))
        self.workers_spin.setToolTip("Worker processes: shots are computed in parallel")
        self.defaults_button = QToolButton()
        self.defaults_button.setText("Defaults")
        self.defaults_button.setToolTip("Reset the settings to the paper's values")
        self.defaults_button.clicked.connect(lambda: self.form and self.form.reset())
        self.run_button = QPushButton("Run teacher")
        self.run_button.setDefault(False)
        self.run_button.clicked.connect(self.run_teacher)
        for widget in (QLabel("Teacher"), self.teacher_combo, QLabel("Workers"), self.workers_spin):
            row.addWidget(widget)
        row.addStretch(1)
        row.addWidget(self.defaults_button)
        row.addWidget(self.run_button)
        box_layout.addLayout(row)

        self.form_area = QScrollArea()
        self.form_area.setWidgetResizable(True)
        self.form_area.setFrameShape(QFrame.NoFrame)
        self.form_area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.form_area.setStyleSheet("QScrollArea, QScrollArea > QWidget > QWidget "
                                     "{ background: transparent; }")
        box_layout.addWidget(self.form_area)

        progress = QHBoxLayout()
        progress.setSpacing(6)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setMaximumHeight(16)
        self.eta_label = QLabel("")
        self.eta_label.setMinimumWidth(90)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_job)
        progress.addWidget(self.progress_bar, 1)
        progress.addWidget(self.eta_label)
        progress.addWidget(self.cancel_button)
        self.progress_row = QWidget()
        self.progress_row.setLayout(progress)
        progress.setContentsMargins(0, 0, 0, 0)
        self.progress_row.hide()
        box_layout.addWidget(self.progress_row)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setStyleSheet("color: gray;")
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        box_layout.addWidget(self.status_label)
        layout.addWidget(box)
        self._teacher_changed(self.teacher_combo.currentText())
        return left

    def _build_viewer(self) -> QWidget:
        right = QWidget()
        layout = QVBoxLayout(right)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.view = MaskView()
        self.view.set_placeholder("Select a video")
        layout.addWidget(self.view, 1)

        scrub = QHBoxLayout()
        scrub.setSpacing(6)
        self.play_button = QToolButton()
        self.play_button.setCheckable(True)
        self.play_button.setIcon(self.style().standardIcon(QStyle.SP_MediaPlay))
        self.play_button.setToolTip("Play / pause (about 10 frames per second)")
        self.play_button.toggled.connect(self.set_playing)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self._show_index)
        self.frame_label = QLabel("")
        self.frame_label.setMinimumWidth(210)
        self.frame_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        scrub.addWidget(self.play_button)
        scrub.addWidget(self.slider, 1)
        scrub.addWidget(self.frame_label)
        layout.addLayout(scrub)

        options = QHBoxLayout()
        options.setSpacing(6)
        self.producer_combo = QComboBox()
        self.producer_combo.setMinimumContentsLength(14)
        self.producer_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.producer_combo.setToolTip("Whose masks to show")
        self.producer_combo.currentIndexChanged.connect(lambda _: self.request_state())
        self.opacity_slider = QSlider(Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setMaximumWidth(110)
        self.opacity_slider.setToolTip("Mask opacity")
        self.opacity_slider.valueChanged.connect(lambda v: self.view.set_opacity(v / 100))
        self.view.set_opacity(0.5)
        self.side_check = QCheckBox("Side by side")
        self.side_check.setToolTip("frame | mask | overlay")
        self.side_check.toggled.connect(
            lambda on: self.view.set_mode("side_by_side" if on else "overlay"))
        self.gt_check = QCheckBox("Ground-truth outline")
        self.gt_check.setChecked(True)
        self.gt_check.toggled.connect(lambda _: self._render())
        for widget in (QLabel("Masks"), self.producer_combo, QLabel("Opacity"), self.opacity_slider,
                       self.side_check, self.gt_check):
            options.addWidget(widget)
        options.addStretch(1)
        layout.addLayout(options)
        return right

    # ------------------------------------------------------------------ project and state
    def _project_changed(self) -> None:
        self.set_playing(False)
        self._root = self.context.root
        self._token += 1
        self._rows, self._producers = [], []
        self._video_id, self._detail, self._index = None, None, 0
        self._frames.clear()
        self._masks.clear()
        self._gts.clear()
        self._sources.clear()
        self._failed.clear()
        self._queue.clear()
        self._form_synced = None
        self.model.set_rows([], self._teacher_producer())
        self._fill_producers([])
        self.slider.setRange(0, 0)
        self.view.set_frame(None)
        self.view.set_mask(None)
        self.view.set_ground_truth(None)
        self.view.set_placeholder("Select a video" if self._root else "No project")
        self.frame_label.setText("")
        self.status_label.setText("")
        self._update_actions()
        self.request_state()

    def _teacher_producer(self) -> str:
        return producer_name(self.teacher_combo.currentText())

    def _viewer_producer(self) -> str | None:
        return self.producer_combo.currentData()

    def request_state(self) -> None:
        """Re-read the table and the selected video's index in a thread (coalesced)."""
        if self._root is None:
            return
        if self._state_loading:
            self._state_dirty = True
            return
        self._state_loading, self._state_dirty = True, False
        root, teacher = self._root, self._teacher_producer()
        video_id, viewer = self._video_id, self._viewer_producer()
        token = self._token

        def events(cancel):
            state = read_state(root, teacher, video_id, viewer)
            yield Progress(1, 1, "read", {"state": state, "token": token,
                                          "request": (teacher, video_id, viewer)})

        worker = self.context.run_light(events, self._state_loaded)
        worker.error.connect(self._state_failed)

    def _state_failed(self, message: str, details: str) -> None:
        self._state_loading = False
        self.status_label.setText(message)
        if self._state_dirty:
            self.request_state()

    def _state_loaded(self, event: Progress) -> None:
        self._state_loading = False
        state: PanelState = event.metrics["state"]
        if event.metrics["token"] == self._token:
            self._apply_state(state, *event.metrics["request"])
        if self._state_dirty:
            self.request_state()

    def _apply_state(self, state: PanelState, teacher: str, video_id: int | None,
                     viewer: str | None) -> None:
        self._rows, self._producers = state.rows, state.producers
        self.model.set_rows(state.rows, teacher)
        self._fill_producers(state.producers)
        self._sync_form()
        current = self._video_id
        if current is None or self.model.row_of(current) < 0:
            current = state.rows[0].id if state.rows else None
        self._select_row(current)
        if current != video_id or viewer != self._viewer_producer() or teacher != self._teacher_producer():
            self.request_state()   # the selection moved on meanwhile
            return
        self._apply_detail(state.detail)
        self._update_actions()

    def _fit_columns(self) -> None:
        """Columns as wide as their texts, measured here: resizeColumnToContents would ask the
        model's data() for every role of every cell (2,400 calls for 20 videos)."""
        metrics = self.table.fontMetrics()
        header = self.table.horizontalHeader()
        for column in range(1, len(VideosModel.COLUMNS)):
            texts = [VideosModel.COLUMNS[column]] + [row[column] for row in self.model.texts]
            if column == 4:   # room for a teacher in progress ("1234/1234") so it does not clip
                texts.append("00000/00000")
            header.resizeSection(column, max(metrics.horizontalAdvance(t) for t in texts) + 24)

    def _select_row(self, video_id: int | None) -> None:
        if video_id is None:
            self._video_id = None
            self._apply_detail(None)
            return
        source_row = self.model.row_of(video_id)
        index = self.proxy.mapFromSource(self.model.index(source_row, 0))
        if self.table.currentIndex().row() != index.row() or self._video_id != video_id:
            self._video_id = video_id
            self.table.selectionModel().blockSignals(True)
            self.table.setCurrentIndex(index)
            self.table.selectRow(index.row())
            self.table.selectionModel().blockSignals(False)
            self.table.viewport().update()

    def _current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            return
        row = self.proxy.mapToSource(current).row()
        video_id = self.model.rows[row].id
        if video_id != self._video_id:
            self._video_id = video_id
            self.set_playing(False)
            self.request_state()

    def _fill_producers(self, producers: list[Producer]) -> None:
        names = [p.name for p in producers]
        combo = self.producer_combo
        if [combo.itemData(i) for i in range(combo.count())] == names and names:
            return
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        if not names:
            combo.addItem("(no masks yet)", None)
            combo.setEnabled(False)
        else:
            for p in producers:
                combo.addItem(p.name, p.name)
            combo.setEnabled(True)
            wanted = current if current in names else (
                self._teacher_producer() if self._teacher_producer() in names else names[0])
            combo.setCurrentIndex(names.index(wanted))
        combo.blockSignals(False)

    def _sync_form(self) -> None:
        """Show the settings the existing masks of the chosen teacher were made with (once)."""
        key = (self._root, self.teacher_combo.currentText())
        if self._form_synced == key or self.form is None:
            return
        self._form_synced = key
        existing = {p.name: p for p in self._producers}.get(self._teacher_producer())
        if existing is not None:
            known = set(self.form.field_names())
            self.form.set_values({k: v for k, v in existing.settings.items() if k in known})

    def _teacher_changed(self, name: str) -> None:
        # (setWidget deletes the previous form)
        self.form = SettingsForm(TEACHERS[name].settings_type, columns=2)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form_area.setWidget(self.form)
        rows = (len(self.form.field_names()) + 1) // 2
        self.form_area.setFixedHeight(min(rows, 6) * 27 + 4)
        self._form_synced = None
        if self._producers:
            self._sync_form()
        self.request_state()

    # ------------------------------------------------------------------ the viewer
    def _apply_detail(self, detail: VideoDetail | None) -> None:
        previous = self._detail
        self._detail = detail
        if detail is None:
            self.slider.setRange(0, 0)
            self.view.set_frame(None)
            self.view.set_mask(None)
            self.view.set_ground_truth(None)
            self.view.set_placeholder("Select a video" if self._rows else
                                      "Add videos: the buttons above, or drop files here")
            self.frame_label.setText("")
            return
        new_video = previous is None or previous.video.id != detail.video.id
        has_gt = any(f.gt_path for f in detail.frames)
        self.gt_check.setEnabled(has_gt)
        self.gt_check.setToolTip("" if has_gt else "This video has no ground truth")
        n = len(detail.frames)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(n - 1, 0))
        if new_video:
            self._index = 0
            self.slider.setValue(0)
            self.view.set_frame(None)
            self.view.set_placeholder("Loading\u2026")
        self.slider.blockSignals(False)
        self._render()

    def _show_index(self, index: int) -> None:
        self._index = index
        self._render()

    def _render(self) -> None:
        detail = self._detail
        if detail is None or not detail.frames:
            return
        self._index = min(max(self._index, 0), len(detail.frames) - 1)
        frame = detail.frames[self._index]
        pixels = self._frames.get((detail.video.id, frame.idx))
        record = detail.masks.get(frame.id)
        text = f"{self._index + 1} / {len(detail.frames)}   {frame.name}"
        if record is not None:
            text += f"   score {record.score:.3f}"
        self.frame_label.setText(text)
        if pixels is not None:
            self.view.set_frame(pixels)
            self.view.set_mask(self._masks.get((record.producer_id, frame.id)) if record else None)
            gt = self._gts.get(frame.id) if (frame.gt_path and self.gt_check.isChecked()) else None
            self.view.set_ground_truth(gt)
        self._ensure_loaded()

    def _missing(self, frame: Frame) -> tuple[bool, bool, bool]:
        """(pixels, mask, ground truth) of a frame still to read."""
        detail = self._detail
        assert detail is not None
        record = detail.masks.get(frame.id)
        return ((detail.video.id, frame.idx) not in self._frames,
                record is not None and (record.producer_id, frame.id) not in self._masks,
                bool(frame.gt_path) and frame.id not in self._gts)

    def _ensure_loaded(self) -> None:
        """Read the next frames the viewer needs (the shown one first), one chunk at a time."""
        detail = self._detail
        if detail is None or self._chunk_loading or self._root is None:
            return
        n = len(detail.frames)
        window = range(self._index, min(n, self._index + PREFETCH))
        start = next((i for i in window if any(self._missing(detail.frames[i]))
                      and (detail.video.id, i // CHUNK) not in self._failed), None)
        if start is None:
            return
        request = ChunkRequest(self._token, self._root, detail.video, display_size(detail.video),
                               [], detail.shots)
        for frame in detail.frames[start:min(n, start + CHUNK)]:
            pixels, mask, gt = self._missing(frame)
            if pixels:
                request.frames.append(frame)
            if mask:
                request.masks.append(detail.masks[frame.id])
            if gt:
                request.ground_truth.append(frame)
        self._chunk_loading = True
        self._chunk_key = (detail.video.id, start // CHUNK)
        sources = self._sources

        def events(cancel):
            yield Progress(1, 1, "chunk", {"chunk": read_chunk(request, sources)})

        worker = self.context.run_light(events, self._chunk_loaded)
        worker.error.connect(self._chunk_failed)

    def _chunk_loaded(self, event: Progress) -> None:
        self._chunk_loading = False
        chunk: ChunkResult = event.metrics["chunk"]
        if chunk.token != self._token:
            return
        for idx, pixels in chunk.frames.items():
            self._frames.put((chunk.video_id, idx), pixels)
        for key, soft in chunk.masks.items():
            self._masks.put(key, soft)
        for frame_id, gt in chunk.ground_truth.items():
            self._gts.put(frame_id, gt)
        if self._detail is not None:
            self._render()

    def _chunk_failed(self, message: str, details: str) -> None:
        self._chunk_loading = False
        self._failed.add(self._chunk_key)
        self.set_playing(False)
        if not self.view.has_frame():
            self.view.set_placeholder(message)
        self.frame_label.setText(message)
        self.frame_label.setToolTip(message)

    def set_playing(self, playing: bool) -> None:
        if playing and (self._detail is None or len(self._detail.frames) < 2):
            playing = False
        if self.play_button.isChecked() != playing:
            self.play_button.blockSignals(True)
            self.play_button.setChecked(playing)
            self.play_button.blockSignals(False)
        self.play_button.setIcon(self.style().standardIcon(
            QStyle.SP_MediaPause if playing else QStyle.SP_MediaPlay))
        if playing:
            self._player.start()
        else:
            self._player.stop()

    def _play_tick(self) -> None:
        detail = self._detail
        if detail is None or not detail.frames:
            self.set_playing(False)
            return
        following = (self._index + 1) % len(detail.frames)
        if (detail.video.id, detail.frames[following].idx) in self._frames:
            self.slider.setValue(following)
        else:
            self._ensure_loaded()   # wait for it rather than skip frames

    # ------------------------------------------------------------------ adding
    def _can_write(self) -> bool:
        return self.context.project is not None and not self.context.busy

    def add_videos_dialog(self) -> None:
        patterns = " ".join(f"*{ext}" for ext in sorted(VIDEO_EXTENSIONS))
        paths, _ = QFileDialog.getOpenFileNames(self, "Add videos", "",
                                                f"Videos ({patterns});;All files (*)")
        if paths:
            self.add_paths([Path(p) for p in paths])

    def add_folder_dialog(self) -> None:
        what = ("image collection" if self.images_check.isChecked()
                else "folder of frames, of videos, or a DAVIS root")
        path = QFileDialog.getExistingDirectory(self, f"Add a {what}")
        if path:
            self.add_paths([Path(path)])

    def add_paths(self, paths: list[Path]) -> list[dict]:
        """Start adding files and folders: videos, frame folders, image folders, DAVIS roots
        and folders of footage (each of their videos and frame folders; the job expands them).

        Returns the steps (the first starts now, the others when it ends)."""
        images = self.images_check.isChecked()
        davis, folders, videos, skipped = [], [], [], []
        for path in paths:
            if path.is_dir():
                (davis if is_davis_root(path) else folders).append(str(path))
            elif path.is_file() and is_video_file(path):
                videos.append(str(path))
            else:
                skipped.append(path.name)
        specs = []
        if davis:
            specs.append(AddStep(tuple(davis), davis=True))
        if folders and images:
            specs.append(AddStep(tuple(folders), images=True))
            folders = []
        if videos or folders:
            specs.append(AddStep(tuple(videos + folders)))
        message = ""
        if skipped:
            message = (f"Skipped {', '.join(skipped[:3])}{'...' if len(skipped) > 3 else ''}: "
                       "not a video file or folder (to add images, add the folder that holds them)")
        if not specs:
            self.status_label.setText(message or "Nothing to add")
            return []
        if not self._can_write():
            self.status_label.setText(BUSY_TIP if self.context.busy else NO_PROJECT_TIP)
            return []
        self._queue = specs[1:]
        self._start_job(specs[0])
        if message:
            self.status_label.setText(message)
        return specs

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if dropped_paths(event) and self._can_write():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = dropped_paths(event)
        if not paths or not self._can_write():
            event.ignore()
            return
        event.acceptProposedAction()
        self.add_paths(paths)

    # ------------------------------------------------------------------ the teacher
    def run_teacher(self) -> dict | None:
        if not self._can_write() or self.form is None:
            return None
        name = self.teacher_combo.currentText()
        settings = self.form.values()
        replace = False
        existing = {p.name: p for p in self._producers}.get(producer_name(name))
        done = sum(r.masks for r in self._rows)
        if existing is not None and existing.settings != settings and done:
            decided = len(self.context.project.decisions(existing.id)) if self.context.project else 0
            also = (f"\n\nThis also discards the {decided} approve/reject decision(s) made on them "
                    f"(to keep a copy first: ussl decisions {self.context.project.root} --export FILE.csv)."
                    if decided else "")
            answer = QMessageBox.question(
                self, "Replace the teacher's masks?",
                f"{existing.name} masks were computed with other settings. Discard them and "
                f"compute all masks again with these settings?{also}",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes:
                return None
            replace = True
        step = TeacherStep(name, settings, self.workers_spin.value(), replace, discard_decisions=replace)
        return step if self._start_job(step) else None

    # ------------------------------------------------------------------ jobs
    def _start_job(self, step) -> bool:
        if self.context.run_job(step) is None:
            self.status_label.setText(BUSY_TIP if self.context.busy else NO_PROJECT_TIP)
            return False
        self._job_kind = step.kind
        self._job_started = time.monotonic()
        self._eta.reset()
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat(f"{step.kind}: starting")
        self.eta_label.setText("")
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Cancel")
        self.progress_row.show()
        self.status_label.setText("")
        return True

    def cancel_job(self) -> None:
        self._queue.clear()
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling\u2026")
        self.context.cancel_job()

    def _job_progress(self, event: Progress) -> None:
        if self._job_kind is None:
            return
        now = time.monotonic()
        total = max(event.total, 1)
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(min(event.done, total))
        unit = "frames" if event.stage in ("teacher", "frames") else ""
        self.progress_bar.setFormat(f"%v / %m {unit}".rstrip())
        fps = event.metrics.get("frames_per_s") if event.metrics else None
        self.status_label.setText(event.message + (f"  \u00b7  {fps:.1f} frames/s" if fps else ""))
        self.eta_label.setText(eta_text(self._eta, event.done, event.total, now))

    def _store_changed(self, change: StoreChange) -> None:
        """Re-read the rows when a job or a panel wrote the store; while a job runs, as its
        videos and masks land (the context looks at most once a second)."""
        if not change.live or change.touches({"videos", "masks"}):
            self.request_state()

    def _job_finished(self, kind: str, outcome: str) -> None:
        # What was on screen may have been rewritten (a teacher run with replace).
        self._masks.clear()
        self._failed.clear()
        if self._job_kind is None:
            return
        elapsed = format_duration(time.monotonic() - self._job_started)
        self._job_kind = None
        self.progress_row.hide()
        self.status_label.setText({
            "done": f"{kind}: done in {elapsed}",
            "cancelled": f"{kind}: cancelled after {elapsed}; completed work is kept, "
                         "run it again to continue",
            "failed": f"{kind}: failed; completed work is kept",
        }.get(outcome, f"{kind}: {outcome}"))
        if outcome == "done" and self._queue:
            self._start_job(self._queue.pop(0))
        else:
            self._queue.clear()
        self._update_actions()

    def _update_actions(self, *_args) -> None:
        has_project = self.context.project is not None
        busy = self.context.busy
        tip = NO_PROJECT_TIP if not has_project else (BUSY_TIP if busy else "")
        for button, normal in ((self.add_videos_button, "Add video files to the project"),
                               (self.add_folder_button, "Add a folder of frames, an image folder "
                                                        "or a DAVIS root"),
                               (self.run_button, "Compute the teacher's soft masks for every shot "
                                                 "without them (a re-run continues)")):
            button.setEnabled(has_project and not busy)
            button.setToolTip(tip or normal)
        self.busy_label.setText("A job is running: adding and the teacher wait for it"
                                if busy else "")

    def closeEvent(self, event) -> None:  # noqa: N802
        self.set_playing(False)
        super().closeEvent(event)

"""The Videos panel's Qt-free state: the table's rows, the selected video's frames and masks, what
to add for dropped paths, and the frame viewer's chunked reading of pixels, masks and ground
truth with the cache that keeps them.

Each reading function opens its own short-lived read-only `Project`, so that it can run in a
thread while the GUI thread keeps its own view of the project.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ussl_core.ingest import is_davis_root
from ussl_core.media import MediaSource, is_video_file, open_source, resize_rgb
from ussl_core.purity import read_ground_truth
from ussl_core.steps import AddStep
from ussl_core.store import Project
from ussl_core.store.project import Frame, Mask, Producer, Shot, Video

DASH = "\u2014"
MAX_DISPLAY_SIDE = 640      # frames are shown at the source's aspect ratio, at most this large
CHUNK = 8                   # frames decoded per background read
PREFETCH = 12               # frames ahead of the shown one kept ready (playback, scrubbing)
CACHE_FRAMES = 64

COLUMNS = ("Name", "Frames", "Shots", "Size", "Teacher", "Ground truth")
TEACHER_COLUMN = COLUMNS.index("Teacher")


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class VideoRow:
    """One video as the table shows it."""
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

    def texts(self) -> tuple[str, ...]:
        """The cells as shown, in the order of COLUMNS."""
        return (self.name, str(self.frames), str(self.shots), f"{self.width}\u00d7{self.height}",
                self.teacher_status, "yes" if self.has_gt else "no")

    def sort_keys(self) -> tuple:
        """What each column sorts by (numbers as numbers, the teacher by its fraction done)."""
        return (self.name.lower(), self.frames, self.shots, self.width * self.height,
                self.masks / max(self.frames, 1), self.has_gt)


@dataclass
class VideoDetail:
    """The selected video's frames, and the masks of the producer the viewer shows."""
    video: Video
    frames: list[Frame]
    shots: dict[int, Shot]
    producer_id: int | None
    masks: dict[int, Mask]   # frame id -> mask of the viewer's producer

    @property
    def has_ground_truth(self) -> bool:
        return any(f.gt_path for f in self.frames)

    def caption(self, index: int) -> str:
        """The line under the viewer: position, frame name and the mask's score."""
        frame = self.frames[index]
        text = f"{index + 1} / {len(self.frames)}   {frame.name}"
        record = self.masks.get(frame.id)
        if record is not None:
            text += f"   score {record.score:.3f}"
        return text


@dataclass(frozen=True)
class StateRequest:
    """What the panel asks to read: the table counts the masks of `teacher_producer`; the
    detail is of `video_id` with the masks of `viewer_producer`."""
    root: Path
    teacher_producer: str
    video_id: int | None
    viewer_producer: str | None


@dataclass
class PanelState:
    """The answer to a StateRequest (kept with it: the panel compares it with what it wants now)."""
    request: StateRequest
    rows: list[VideoRow]
    producers: list[Producer]
    detail: VideoDetail | None


def read_state(request: StateRequest) -> PanelState:
    """The table's rows and the selected video's frames and masks, from a read-only view."""
    with Project.open(request.root) as project:
        videos = project.videos()
        shot_counts = Counter(s.video_id for s in project.shots())
        producers = project.producers()
        by_name = {p.name: p for p in producers}
        counts: Counter = Counter()
        if request.teacher_producer in by_name:
            teacher = by_name[request.teacher_producer]
            counts = Counter(m.video_id for m in project.masks(teacher.id))
        rows = [VideoRow(v.id, v.name, v.kind, v.source, v.frame_count, shot_counts[v.id], v.width,
                         v.height, counts[v.id], v.gt_source is not None) for v in videos]
        detail = None
        video_id = request.video_id
        if video_id is not None and any(v.id == video_id for v in videos):
            viewer = request.viewer_producer
            producer = by_name.get(viewer) if viewer else None
            masks = ({m.frame_id: m for m in project.masks(producer.id, video_id)}
                     if producer else {})
            detail = VideoDetail(project.video(video_id), project.frames(video_id),
                                 {s.id: s for s in project.shots(video_id)},
                                 producer.id if producer else None, masks)
    return PanelState(request, rows, producers, detail)


# ----------------------------------------------------------------------------- adding


@dataclass(frozen=True)
class AddPlan:
    """The add steps for dropped or chosen paths (run one after the other), and what was skipped."""
    steps: list[AddStep]
    skipped: list[str]       # names of paths that are neither a video file nor a folder

    @property
    def message(self) -> str:
        if not self.skipped:
            return ""
        names = ", ".join(self.skipped[:3]) + ("..." if len(self.skipped) > 3 else "")
        return (f"Skipped {names}: not a video file or folder "
                "(to add images, add the folder that holds them)")


def plan_adds(paths: Iterable[Path], images: bool) -> AddPlan:
    """DAVIS roots in one step; folders as image collections when `images`, else with the video
    files as videos and frame folders (the job expands folders of footage)."""
    davis, folders, videos, skipped = [], [], [], []
    for path in paths:
        if path.is_dir():
            (davis if is_davis_root(path) else folders).append(str(path))
        elif path.is_file() and is_video_file(path):
            videos.append(str(path))
        else:
            skipped.append(path.name)
    steps = []
    if davis:
        steps.append(AddStep(tuple(davis), davis=True))
    if folders and images:
        steps.append(AddStep(tuple(folders), images=True))
        folders = []
    if videos or folders:
        steps.append(AddStep(tuple(videos + folders)))
    return AddPlan(steps, skipped)


# ----------------------------------------------------------------------------- the viewer's reads


def display_size(video: Video) -> tuple[int, int]:
    """(width, height) the viewer decodes frames at: the source's aspect, at most 640 px."""
    scale = min(1.0, MAX_DISPLAY_SIDE / max(video.width, video.height, 1))
    return max(1, round(video.width * scale)), max(1, round(video.height * scale))


@dataclass
class ChunkRequest:
    """A few neighbouring frames' missing pixels, masks and ground truth."""
    root: Path
    video: Video
    size: tuple[int, int]
    shots: dict[int, Shot]
    chunk: tuple[int, int]                   # (video id, chunk number): remembered if it fails
    frames: list[Frame] = field(default_factory=list)   # frames whose pixels are wanted
    masks: list[Mask] = field(default_factory=list)
    ground_truth: list[Frame] = field(default_factory=list)


@dataclass
class ChunkResult:
    video_id: int
    frames: dict[int, np.ndarray]            # frame idx -> RGB at the display size
    masks: dict[tuple[int, int], np.ndarray]  # (producer id, frame id) -> soft mask
    ground_truth: dict[int, np.ndarray]      # frame id -> bool


class MediaSources:
    """Opened media sources, reused across chunk reads: decoding a video from its start for
    every chunk would be slow. One instance per project, read by one chunk at a time."""

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


def read_chunk(request: ChunkRequest, sources: MediaSources) -> ChunkResult:
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
            decoded = source.iter_frames(start, stop, request.size)
            for idx, pixels in zip(range(start, stop), decoded):
                if idx in wanted:
                    frames[idx] = pixels
        for mask, soft in project.read_masks(request.masks):
            masks[(mask.producer_id, mask.frame_id)] = soft
        for frame in request.ground_truth:
            gts[frame.id] = read_ground_truth(project.abspath(frame.gt_path))
    return ChunkResult(request.video.id, frames, masks, gts)


class LRU:
    """A small least-recently-used cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict = OrderedDict()

    def get(self, key: Hashable):
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def put(self, key: Hashable, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class ViewerCache:
    """The pixels, masks and ground truth the viewer showed or will show soon, and which chunks
    could not be read (not asked again until a job ends or another project opens)."""

    def __init__(self, size: int = CACHE_FRAMES) -> None:
        self._frames = LRU(size)            # (video id, idx) -> RGB
        self._masks = LRU(size * 2)         # (producer id, frame id) -> soft mask
        self._gts = LRU(size * 2)           # frame id -> bool
        self.failed: set[tuple[int, int]] = set()

    def clear(self) -> None:
        self._frames.clear()
        self._masks.clear()
        self._gts.clear()
        self.failed.clear()

    def forget_masks(self) -> None:
        """After a job: the masks on screen may have been rewritten (a teacher run with replace)."""
        self._masks.clear()
        self.failed.clear()

    def pixels(self, video_id: int, frame: Frame) -> np.ndarray | None:
        return self._frames.get((video_id, frame.idx))

    def has_pixels(self, video_id: int, frame: Frame) -> bool:
        return (video_id, frame.idx) in self._frames

    def mask(self, record: Mask | None) -> np.ndarray | None:
        return self._masks.get((record.producer_id, record.frame_id)) if record else None

    def ground_truth(self, frame: Frame) -> np.ndarray | None:
        return self._gts.get(frame.id)

    def missing(self, detail: VideoDetail, frame: Frame) -> tuple[bool, bool, bool]:
        """(pixels, mask, ground truth) of a frame still to read."""
        record = detail.masks.get(frame.id)
        return ((detail.video.id, frame.idx) not in self._frames,
                record is not None and (record.producer_id, frame.id) not in self._masks,
                bool(frame.gt_path) and frame.id not in self._gts)

    def next_request(self, root: Path, detail: VideoDetail, index: int) -> ChunkRequest | None:
        """The chunk to read next: from the first frame within PREFETCH of the shown one (itself
        first) that misses something and is not in a failed chunk; None when all are ready."""
        n = len(detail.frames)
        window = range(index, min(n, index + PREFETCH))
        start = next((i for i in window if any(self.missing(detail, detail.frames[i]))
                      and (detail.video.id, i // CHUNK) not in self.failed), None)
        if start is None:
            return None
        request = ChunkRequest(root, detail.video, display_size(detail.video), detail.shots,
                               (detail.video.id, start // CHUNK))
        for frame in detail.frames[start:min(n, start + CHUNK)]:
            pixels, mask, gt = self.missing(detail, frame)
            if pixels:
                request.frames.append(frame)
            if mask:
                request.masks.append(detail.masks[frame.id])
            if gt:
                request.ground_truth.append(frame)
        return request

    def add(self, result: ChunkResult) -> None:
        for idx, pixels in result.frames.items():
            self._frames.put((result.video_id, idx), pixels)
        for key, soft in result.masks.items():
            self._masks.put(key, soft)
        for frame_id, gt in result.ground_truth.items():
            self._gts.put(frame_id, gt)

"""The Per-image panel's Qt-free state: teacher, a generation's students and their ensembles,
frame by frame.

For each frame (or added image) of a project: the teacher's soft mask and selection score, each
student's mask with its EvalSeg-Net score, Multi-Net (product of the students), MultiSelect-Net
(the student EvalSeg-Net rates highest), the IoU of each against ground truth where it exists,
and how much teacher and students disagree. This module reads the store for the panel
(`read_state`, `read_row`, `make_renderer`), computes the rows' scores (`compute_batch`) and
shapes what the table shows (columns, cells, sort orders, hints); the panel (app.panels.browser)
keeps only widgets and wiring. It never imports Qt; TensorFlow is imported only when a
generation's students are loaded (`StudentPredictor`).

Definitions (also shown in the panel's header tooltips):
- IoU against ground truth: the soft mask upsampled bilinearly to the ground truth's size and
  thresholded at 0.5, Jaccard with the ground truth (as the purity curve computes it).
- Disagreement: 1 - IoU between the teacher's mask and the Multi-Net mask, both thresholded at
  0.5 at Multi-Net's resolution (COMMON_SIZE); 0 when both are empty.
- IoU gain: Multi-Net IoU minus the teacher's IoU (positive: the students improved on it).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import cv2
import numpy as np

from ussl_core.ensemble import multi_net, resize_mask
from ussl_core.errors import UsslError
from ussl_core.media import open_source, resize_rgb
from ussl_core.metrics import iou
from ussl_core.postprocess import upsample_mask
from ussl_core.purity import read_ground_truth
from ussl_core.store import Project, model_files
from ussl_core.store.project import Producer
from ussl_core.store.shards import read_shard

IOU_THRESHOLD = 0.5
KEEP_SIDE = 64          # student masks kept in memory per frame: KEEP_SIDE^2 uint8 each
NAN = float("nan")

# Sort keys that do not depend on a student's name (students add "<name> EvalSeg/IoU").
FRAME_ORDER = "frame"
TEACHER_SCORE = "teacher score"
TEACHER_IOU = "teacher IoU"
MULTI_IOU = "Multi-Net IoU"
SELECT_SCORE = "MultiSelect-Net EvalSeg"
SELECT_IOU = "MultiSelect-Net IoU"
DISAGREEMENT = "disagreement"
IOU_GAIN = "IoU gain"


# ============================================================================ frames
@dataclass(frozen=True)
class BrowseFrame:
    """One row's catalog facts: where its pixels, teacher mask and ground truth are."""
    frame_id: int
    video_id: int
    video: str
    idx: int                    # index in its video (or image collection)
    name: str
    frames_shard: str | None    # absolute path of its shot's stored frames, if any
    shard_row: int              # its row there (and in the teacher's mask shard)
    source: str                 # absolute path of the video's source (when nothing is stored)
    gt_path: str | None         # absolute path of its ground truth, if any
    teacher_score: float = NAN  # the teacher's selection score; NaN without a teacher mask
    teacher_shard: str | None = None
    teacher_row: int = 0

    @property
    def has_gt(self) -> bool:
        return self.gt_path is not None

    @property
    def has_teacher(self) -> bool:
        return self.teacher_shard is not None


def teacher_producers(project: Project) -> list[Producer]:
    """Teacher producers that have masks, the default (first) one first."""
    return [p for p in project.producers() if p.kind == "teacher" and project.mask_count(p.id)]


def list_frames(project: Project, teacher_id: int | None = None) -> list[BrowseFrame]:
    """Every frame and added image of a project in video order, with its teacher mask."""
    videos = {v.id: v for v in project.videos()}
    shots = {s.id: s for s in project.shots()}
    masks = {m.frame_id: m for m in project.masks(teacher_id)} if teacher_id is not None else {}
    rows = []
    for f in project.frames():
        shot, video, mask = shots[f.shot_id], videos[f.video_id], masks.get(f.id)
        rows.append(BrowseFrame(
            f.id, f.video_id, video.name, f.idx, f.name,
            str(project.abspath(shot.frames_shard)) if shot.frames_shard else None,
            f.idx - shot.start, str(project.abspath(video.source)),
            str(project.abspath(f.gt_path)) if f.gt_path else None,
            float(mask.score) if mask else NAN,
            str(project.abspath(mask.shard)) if mask else None, mask.row if mask else 0))
    return rows


class SourceCache:
    """Opened media sources reused across reads (callers serialise their use of one cache)."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._open: dict[str, object] = {}

    def get(self, path: str):
        if path not in self._open:
            if len(self._open) >= self.capacity:
                self._open.pop(next(iter(self._open)))
            self._open[path] = open_source(path)
        return self._open[path]


def read_images(frames: Sequence[BrowseFrame], size: tuple[int, int],
                sources: SourceCache | None = None) -> list[np.ndarray]:
    """RGB frames at `size` = (width, height): from stored shards, else decoded from the source."""
    sources = sources or SourceCache()
    out: list[np.ndarray | None] = [None] * len(frames)
    by_shard: dict[str, list[int]] = {}
    by_source: dict[str, list[int]] = {}
    for i, f in enumerate(frames):
        if f.frames_shard:
            by_shard.setdefault(f.frames_shard, []).append(i)
        else:
            by_source.setdefault(f.source, []).append(i)
    for shard, positions in by_shard.items():
        pixels = read_shard(Path(shard), "frames", [frames[i].shard_row for i in positions])
        for i, image in zip(positions, pixels):
            out[i] = resize_rgb(image, size)
    for path, positions in by_source.items():
        source = sources.get(path)
        wanted = {frames[i].idx: i for i in positions}
        # Contiguous runs decode sequentially; scattered frames one by one.
        for idx in sorted(wanted):
            out[wanted[idx]] = next(iter(source.iter_frames(idx, idx + 1, size)))
    return out  # type: ignore[return-value]


def read_teacher_mask(frame: BrowseFrame) -> np.ndarray | None:
    """The teacher's soft mask of a frame (float32 in [0, 1]), None without one."""
    if frame.teacher_shard is None:
        return None
    return read_shard(Path(frame.teacher_shard), "masks", frame.teacher_row).astype(np.float32) / 255.0


def read_gt(frame: BrowseFrame) -> np.ndarray | None:
    return read_ground_truth(Path(frame.gt_path)) if frame.gt_path else None


# ============================================================================ models
@dataclass(frozen=True)
class GenerationInfo:
    """A generation's models as their cards describe them (nothing loaded)."""
    generation: int
    students: tuple[str, ...]       # names, as Segmenter reports them
    has_evalseg: bool
    signature: tuple                # changes when a model file is rewritten


def generation_info(models: Path, generation: int) -> GenerationInfo:
    students, evalseg = model_files.generation_models(Path(models), generation)
    names = tuple(model_files.read_card(p).get("name", p.stem) for p in students)
    files = list(students) + ([evalseg] if evalseg else [])
    signature = tuple((p.name, p.stat().st_mtime_ns) for p in files if p.exists())
    return GenerationInfo(generation, names, evalseg is not None, signature)


class Predictor(Protocol):
    def predict(self, images: list[np.ndarray]) -> tuple[list[dict[str, np.ndarray]],
                                                         list[dict[str, float]]]: ...


class StudentPredictor:
    """A generation's students and EvalSeg-Net, loaded once on first use in whichever thread
    calls it, then reused; one call at a time (a lock), so that a batch and a large view can
    share it."""

    def __init__(self, models: Path, generation: int) -> None:
        self.models = Path(models)
        self.generation = generation
        self._segmenter = None
        self._error: str | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._segmenter is not None

    def _load(self):
        if self._error is not None:
            raise UsslError(self._error)
        if self._segmenter is None:
            from ussl_core.predict import Segmenter

            try:
                self._segmenter = Segmenter(*model_files.generation_models(self.models, self.generation))
            except Exception as exc:  # a missing or broken model file: say so once
                self._error = f"cannot load the generation-{self.generation} models: {exc}"
                raise UsslError(self._error) from exc
        return self._segmenter

    def predict(self, images: list[np.ndarray]) -> tuple[list[dict[str, np.ndarray]],
                                                         list[dict[str, float]]]:
        """Each student's mask of each image (at COMMON_SIZE) and their EvalSeg-Net scores
        (empty dicts without an EvalSeg-Net), exactly as Segmenter computes them."""
        with self._lock:
            segmenter = self._load()
            masks = segmenter.student_masks(list(images))
            scores = [segmenter.evalseg_scores(image, m) for image, m in zip(images, masks)]
        return masks, scores


# ============================================================================ scores
def gt_iou(soft: np.ndarray, gt: np.ndarray) -> float:
    """IoU of a soft mask against ground truth: upsampled to its size, thresholded at 0.5."""
    full = upsample_mask(soft, (gt.shape[1], gt.shape[0]))
    return iou(full > IOU_THRESHOLD, gt)


def disagreement(teacher: np.ndarray, multi: np.ndarray) -> float:
    """1 - IoU of the teacher's and Multi-Net's masks thresholded at 0.5 at Multi-Net's size."""
    size = (multi.shape[1], multi.shape[0])
    return 1.0 - iou(resize_mask(teacher, size) > IOU_THRESHOLD, multi > IOU_THRESHOLD)


def small_mask(soft: np.ndarray, side: int = KEEP_SIDE) -> np.ndarray:
    """A soft mask as KEEP_SIDE x KEEP_SIDE uint8 (what the browser keeps in memory)."""
    return (np.clip(cv2.resize(np.asarray(soft, np.float32), (side, side),
                               interpolation=cv2.INTER_AREA), 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class FrameResult:
    """The computed scores of one frame for one (teacher, generation)."""
    frame_id: int
    teacher_iou: float = NAN
    evalseg: dict[str, float] = field(default_factory=dict)
    iou: dict[str, float] = field(default_factory=dict)
    multi_net_iou: float = NAN
    multiselect_iou: float = NAN
    chosen: str | None = None          # MultiSelect-Net's pick
    disagreement: float = NAN
    student_masks: dict[str, np.ndarray] = field(default_factory=dict)  # KEEP_SIDE^2 uint8

    @property
    def iou_gain(self) -> float:
        return self.multi_net_iou - self.teacher_iou

    @property
    def selected_score(self) -> float:
        return self.evalseg[self.chosen] if self.chosen in self.evalseg else NAN


def score_frame(frame_id: int, teacher: np.ndarray | None, gt: np.ndarray | None,
                students: dict[str, np.ndarray] | None = None,
                evalseg: dict[str, float] | None = None) -> FrameResult:
    """One frame's scores from its masks (students at COMMON_SIZE, as Segmenter gives them)."""
    result = FrameResult(frame_id)
    if teacher is not None and gt is not None:
        result.teacher_iou = gt_iou(teacher, gt)
    if not students:
        return result
    multi = multi_net(list(students.values()))
    result.evalseg = dict(evalseg or {})
    result.student_masks = {name: small_mask(m) for name, m in students.items()}
    if result.evalseg:
        result.chosen = max(result.evalseg, key=result.evalseg.get)
    if teacher is not None:
        result.disagreement = disagreement(teacher, multi)
    if gt is not None:
        result.iou = {name: gt_iou(m, gt) for name, m in students.items()}
        result.multi_net_iou = gt_iou(multi, gt)
        if result.chosen is not None:
            result.multiselect_iou = result.iou[result.chosen]
    return result


@dataclass
class BatchScores:
    """The scores of a batch of frames, and why the students' part is missing (if it is)."""
    results: list[FrameResult]
    warning: str = ""


def compute_batch(frames: Sequence[BrowseFrame], size: tuple[int, int],
                  predictor: Predictor | None = None,
                  sources: SourceCache | None = None) -> BatchScores:
    """Scores of a batch of frames. Without a predictor, or when its models cannot be loaded
    (the warning says why), only the teacher's scores are computed."""
    gts = [read_gt(f) for f in frames]
    # The teacher's mask counts against ground truth, or against the students.
    teachers = [read_teacher_mask(f) if (g is not None or predictor is not None) else None
                for f, g in zip(frames, gts)]
    students: list[dict] = [{} for _ in frames]
    scores: list[dict] = [{} for _ in frames]
    warning = ""
    if predictor is not None and frames:
        images = read_images(frames, size, sources)
        try:
            students, scores = predictor.predict(images)
        except UsslError as exc:
            warning = str(exc)
    return BatchScores([score_frame(f.frame_id, t, g, s, e)
                        for f, t, g, s, e in zip(frames, teachers, gts, students, scores)], warning)


# ============================================================================ sorting
def sort_keys(students: Sequence[str], has_evalseg: bool) -> list[str]:
    """Every key the rows can be sorted by, for a generation with these students."""
    keys = [FRAME_ORDER, TEACHER_SCORE, TEACHER_IOU]
    if students:
        keys += [DISAGREEMENT, IOU_GAIN, MULTI_IOU]
        if has_evalseg:
            keys += [SELECT_SCORE, SELECT_IOU]
        for name in students:
            keys += ([f"{name} EvalSeg"] if has_evalseg else []) + [f"{name} IoU"]
    return keys


def key_value(key: str, frame: BrowseFrame, result: FrameResult | None, position: int = 0) -> float:
    """A row's value for a sort key; NaN where it has none (not computed, no ground truth)."""
    if key == FRAME_ORDER:
        return float(position)
    if key == TEACHER_SCORE:
        return frame.teacher_score
    if result is None:
        return NAN
    simple = {TEACHER_IOU: result.teacher_iou, MULTI_IOU: result.multi_net_iou,
              SELECT_SCORE: result.selected_score, SELECT_IOU: result.multiselect_iou,
              DISAGREEMENT: result.disagreement, IOU_GAIN: result.iou_gain}
    if key in simple:
        return simple[key]
    if key.endswith(" EvalSeg"):
        return result.evalseg.get(key[:-len(" EvalSeg")], NAN)
    if key.endswith(" IoU"):
        return result.iou.get(key[:-len(" IoU")], NAN)
    raise KeyError(f"unknown sort key {key!r}")


def sort_order(values: np.ndarray, descending: bool) -> np.ndarray:
    """Positions in order of `values`, stable; NaN (no value) last in either direction."""
    values = np.asarray(values, np.float64)
    known = ~np.isnan(values)
    keyed = np.where(known, -values if descending else values, np.inf)
    return np.argsort(keyed, kind="stable")


def fmt(value: float, digits: int = 2) -> str:
    return "\u2014" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


# ============================================================================ what the panel reads
BATCH = 16                 # frames per background batch
NO_MODELS_HINT = ("No trained students yet: the students' masks, Multi-Net and MultiSelect-Net "
                  "appear here after training (train students, and an EvalSeg-Net for "
                  "MultiSelect-Net). Until then: the frame, its ground truth and the teacher.")
NO_FRAMES_HINT = "No frames yet: add videos or images and run the teacher (Videos panel)."
IOU_TIP = ("IoU with ground truth: the soft mask upsampled to the ground truth's size and "
           "thresholded at 0.5 (as the purity curve computes it)")
DISAGREEMENT_TIP = ("Disagreement = 1 \u2212 IoU between the teacher's mask and the Multi-Net mask, "
                    "both thresholded at 0.5 at Multi-Net's resolution (128 \u00d7 128). "
                    "High: the students see something else than their teacher.")
GAIN_TIP = ("IoU gain = Multi-Net IoU \u2212 teacher IoU (ground truth only). Positive: the "
            "students improved on their teacher; negative: they did worse.\n" + IOU_TIP)


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
    """The rows' catalog facts with a read-only Project (any thread); `teacher` by name, the
    default one when it is None or gone."""
    with Project.open(root) as project:
        teachers = teacher_producers(project)
        chosen = next((p for p in teachers if p.name == teacher), teachers[0] if teachers else None)
        frames = list_frames(project, chosen.id if chosen else None)
        videos = [(v.id, v.name, v.width, v.height) for v in project.videos()]
        size = project.working_size
    models = Path(root) / "models"
    generations = {g: generation_info(models, g) for g in model_files.model_generations(models)}
    # A teacher run with --replace rewrites its shards: their times tell cached scores apart.
    shards = sorted({f.teacher_shard for f in frames if f.teacher_shard})
    signature = tuple((s, Path(s).stat().st_mtime_ns) for s in shards if Path(s).exists())
    return BrowseState(Path(root), size, [p.name for p in teachers], chosen.name if chosen else None,
                       chosen.id if chosen else None, signature, frames, videos, generations)


def results_key(state: BrowseState, info: GenerationInfo | None) -> tuple:
    """What a row's computed scores depend on: the project, the teacher's masks (and their
    rewrite) and the generation's model files. Scores kept under another key are not shown."""
    return (str(state.root), state.teacher_id, state.teacher_signature,
            info.generation if info else None, info.signature if info else ())


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentlyUsed(Generic[K, V]):
    """A few values by key, the least recently used dropped beyond `capacity`: the scores of
    recent (teacher, generation) pairs and the loaded students of recent generations, so that
    switching back is instant without keeping every generation in memory."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The value of `key`, made (and the oldest dropped) when it is not kept."""
        if key not in self._values:
            self._values[key] = make()
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)
        self._values.move_to_end(key)
        return self._values[key]

    def peek(self, key: K) -> V | None:
        """The value of `key` if it is still kept, without making it recent."""
        return self._values.get(key)

    def clear(self) -> None:
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


# ============================================================================ texts
def generation_label(info: GenerationInfo) -> str:
    """The generation's entry in the panel's list: how many students, and whether MultiSelect-Net
    can be shown."""
    return (f"{info.generation} ({len(info.students)} students"
            f"{'' if info.has_evalseg else ', no EvalSeg-Net'})")


def hint_text(state: BrowseState | None, info: GenerationInfo | None, warning: str = "") -> str:
    """Why columns are missing (no frames, no students, no EvalSeg-Net) and the last batch's
    warning; empty when the table shows everything."""
    text = ""
    if state is not None and not state.frames:
        text = NO_FRAMES_HINT
    elif info is None or not info.students:
        text = NO_MODELS_HINT
    elif not info.has_evalseg:
        text = (f"Generation {info.generation} has no EvalSeg-Net: the students' EvalSeg "
                "scores and MultiSelect-Net appear once one is trained.")
    if warning:
        text = (text + "\n" if text else "") + warning
    return text


def progress_text(shown: Sequence[BrowseFrame], results: dict[int, FrameResult],
                  with_students: bool) -> str:
    """How many of the shown rows are computed, or just how many rows once all are."""
    done = sum(f.frame_id in results for f in shown)
    what = "students' masks" if with_students else "scores"
    return (f"{len(shown):,} rows" if done == len(shown) else
            f"computing {what}: {done:,} / {len(shown):,} rows")


# ============================================================================ rows
def filtered_positions(frames: Sequence[BrowseFrame], video_id: int | None) -> np.ndarray:
    """Positions into `frames` of one video's rows (every row when `video_id` is None)."""
    if video_id is None:
        return np.arange(len(frames), dtype=np.int64)
    return np.array([i for i, f in enumerate(frames) if f.video_id == video_id], np.int64)


def ordered_view(frames: Sequence[BrowseFrame], results: dict[int, FrameResult],
                 video_id: int | None, key: str, descending: bool) -> np.ndarray:
    """The rows shown, as positions into `frames`: filtered to a video, sorted by a key of
    `sort_keys` (stable; rows without a value last)."""
    positions = filtered_positions(frames, video_id)
    if key == FRAME_ORDER:
        return positions[::-1].copy() if descending else positions
    values = np.array([key_value(key, frames[i], results.get(frames[i].frame_id), int(i))
                       for i in positions], np.float64)
    return positions[sort_order(values, descending)]


def next_batch(frames: Sequence[BrowseFrame], view: np.ndarray, top: int,
               results: dict[int, FrameResult], size: int = BATCH) -> list[BrowseFrame]:
    """The next frames to compute: missing rows from the top of the visible part on, then the
    rest of the view, then the rows other videos (filtered out) have."""
    order = np.concatenate([view[top:], view[:top]]).tolist()
    batch = [frames[p] for p in order if frames[p].frame_id not in results][:size]
    if len(batch) < size and len(view) < len(frames):
        batch += [f for f in frames if f.frame_id not in results and f not in batch][
            :size - len(batch)]
    return batch


def row_facts(frame: BrowseFrame, result: FrameResult | None) -> dict:
    """One row as plain data (what the panel's `rows()` reports)."""
    r = result
    return {
        "frame_id": frame.frame_id, "video_id": frame.video_id, "video": frame.video,
        "idx": frame.idx, "name": frame.name, "has_gt": frame.has_gt,
        "teacher_score": frame.teacher_score, "computed": r is not None,
        "teacher_iou": r.teacher_iou if r else NAN,
        "evalseg": dict(r.evalseg) if r else {}, "iou": dict(r.iou) if r else {},
        "multi_net_iou": r.multi_net_iou if r else NAN,
        "multiselect_iou": r.multiselect_iou if r else NAN,
        "chosen": r.chosen if r else None,
        "disagreement": r.disagreement if r else NAN,
        "iou_gain": r.iou_gain if r else NAN}


# ============================================================================ columns and cells
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
    """The table's columns: frame, ground truth and teacher, then (with students) each student,
    the two ensembles and the two numbers."""
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


def student_key(generation: int | None, name: str, frame_id: int) -> tuple:
    """The thumbnail key of a student's mask (MultiSelect-Net shares its pick's)."""
    return ("student", generation, name, frame_id)


def cell_of(column: Column, frame: BrowseFrame, result: FrameResult | None,
            generation: int | None, teacher_id: int | None) -> tuple:
    """An image cell: (thumbnail key or None when there is nothing to show, caption, badge,
    dim), as app.widgets.thumbnails paints it; badge "picked" marks MultiSelect-Net's student."""
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
        return ("teacher", teacher_id, frame.frame_id), caption, "", False
    if not computed:   # on its way, or its batch failed (the hint says why)
        return None, "computing\u2026" if result is None else "not available", "", True
    if kind == "student":
        name = column.student
        parts = ([f"ES {fmt(result.evalseg[name])}"] if name in result.evalseg else []) + \
                ([f"IoU {fmt(result.iou.get(name, NAN))}"] if frame.has_gt else [])
        return (student_key(generation, name, frame.frame_id), " \u00b7 ".join(parts),
                "picked" if result.chosen == name else "", False)
    if kind == "multi":
        caption = f"IoU {fmt(result.multi_net_iou)}" if frame.has_gt else ""
        return ("multi", generation, frame.frame_id), caption, "", False
    if kind == "select":
        if result.chosen is None:
            return None, "needs EvalSeg-Net", "", True
        parts = [f"ES {fmt(result.selected_score)}"] + \
                ([f"IoU {fmt(result.multiselect_iou)}"] if frame.has_gt else [])
        return student_key(generation, result.chosen, frame.frame_id), " \u00b7 ".join(parts), "", False
    return None, "", "", False


def payload_of(column: Column, frame: BrowseFrame, result: FrameResult | None,
               size: tuple[int, int]) -> tuple:
    """What `make_renderer`'s function needs to draw an image cell at `size`: (kind, what, size)."""
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


def number_text(column: Column, result: FrameResult | None) -> str:
    """A number column's text: the disagreement, or the IoU gain with its sign; a dash without."""
    value = result.disagreement if column.kind == "disagreement" and result else (
        result.iou_gain if result else NAN)
    text = fmt(value, 3)
    return text if column.kind != "gain" or text == "\u2014" else f"{value:+.3f}"


def tooltip_of(column: Column, frame: BrowseFrame, result: FrameResult | None) -> str:
    lines = [f"{frame.video}, frame {frame.idx} ({frame.name})"]
    if column.kind == "select" and result is not None and result.chosen:
        lines.append(f"MultiSelect-Net picked {result.chosen}")
    elif column.kind == "student" and result is not None and result.chosen == column.student:
        lines.append("MultiSelect-Net picked this student")
    lines.append(column.tip)
    return "\n".join(lines)


def grey_image(soft: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A soft mask in [0, 1] as a uint8 grey picture of `size` = (width, height)."""
    return (np.clip(cv2.resize(np.asarray(soft, np.float32), size, interpolation=cv2.INTER_AREA),
                    0, 1) * 255 + 0.5).astype(np.uint8)


def make_renderer() -> Callable[[tuple], np.ndarray]:
    """The thumbnail thread's work: one cell's picture from its `payload_of` (frame in colour,
    masks in grey). The renderer keeps its media sources open: one thread uses it."""
    sources = SourceCache()

    def render(payload: tuple) -> np.ndarray:
        kind, what, size = payload
        if kind == "frame":
            return read_images([what], size, sources)[0]
        if kind == "teacher":
            return grey_image(read_teacher_mask(what), size)
        if kind == "gt":
            return grey_image(read_gt(what).astype(np.float32), size)
        if kind == "student":
            return grey_image(what.astype(np.float32) / 255.0, size)
        if kind == "multi":
            return grey_image(multi_net([m.astype(np.float32) / 255.0 for m in what]), size)
        raise ValueError(f"unknown cell kind {kind!r}")
    return render


# ============================================================================ one row, large
@dataclass
class RowImages:
    """One row read again at full resolution for the large view: the frame at the working size,
    the teacher's mask and the ground truth as stored, each student's mask predicted again (the
    table keeps small copies) with its EvalSeg-Net score, and the size to show them at."""
    image: np.ndarray
    teacher: np.ndarray | None
    gt: np.ndarray | None
    students: dict[str, np.ndarray]
    scores: dict[str, float]
    display: tuple[int, int]


def read_row(frame: BrowseFrame, size: tuple[int, int], display: tuple[int, int],
             predictor: Predictor | None = None) -> RowImages:
    """A row's pictures for the large view (any thread; predicts when given a predictor)."""
    image = read_images([frame], size)[0]
    students: dict[str, np.ndarray] = {}
    scores: dict[str, float] = {}
    if predictor is not None:
        masks, rated = predictor.predict([image])
        students, scores = masks[0], rated[0]
    return RowImages(image, read_teacher_mask(frame), read_gt(frame), students, scores, display)


@dataclass(frozen=True)
class Tile:
    """One picture of the large view, its caption, and whether MultiSelect-Net picked it."""
    image: np.ndarray | None
    caption: str = ""
    picked: bool = False


def row_tiles(columns: Sequence[Column], frame: BrowseFrame, result: FrameResult | None,
              images: RowImages) -> dict[Column, Tile]:
    """The large view's tile of each image column that has a picture to show (at the display
    size); the IoU captions come from the table's computed `result`."""
    size = images.display
    scores, students = images.scores, images.students
    chosen = max(scores, key=scores.get) if scores else None

    def iou_text(value: float) -> str:
        return f"IoU {fmt(value)}" if frame.has_gt and result is not None else ""

    def joined(*parts: str) -> str:
        return " \u00b7 ".join(filter(None, parts))

    tiles: dict[Column, Tile] = {}
    for column in columns:
        kind = column.kind
        if kind == "frame":
            tiles[column] = Tile(cv2.resize(images.image, size, interpolation=cv2.INTER_LINEAR),
                                 frame.name)
        elif kind == "gt":
            tiles[column] = (Tile(grey_image(images.gt.astype(np.float32), size))
                             if images.gt is not None else Tile(None, "no ground truth"))
        elif kind == "teacher":
            tiles[column] = Tile(
                grey_image(images.teacher, size) if images.teacher is not None else None,
                joined(f"sel {frame.teacher_score:.3f}" if frame.has_teacher else "no teacher mask",
                       iou_text(result.teacher_iou) if result else ""))
        elif kind == "student" and column.student in students:
            name = column.student
            tiles[column] = Tile(grey_image(students[name], size), joined(
                f"ES {scores[name]:.3f}" if name in scores else "",
                iou_text(result.iou.get(name, NAN)) if result else ""), picked=name == chosen)
        elif kind == "multi" and students:
            tiles[column] = Tile(grey_image(multi_net(list(students.values())), size),
                                 iou_text(result.multi_net_iou) if result else "")
        elif kind == "select" and chosen is not None:
            tiles[column] = Tile(grey_image(students[chosen], size), joined(
                chosen, f"ES {scores[chosen]:.3f}",
                iou_text(result.multiselect_iou) if result else ""))
    return tiles


def row_summary(frame: BrowseFrame, result: FrameResult | None) -> str:
    """The line under the large view: which frame, and its two numbers once computed."""
    text = f"{frame.video}, frame {frame.idx} ({frame.name})"
    if result is not None and result.student_masks:
        text += (f"   \u00b7   disagreement {fmt(result.disagreement, 3)}"
                 f"   \u00b7   IoU gain {fmt(result.iou_gain, 3)}")
    return text

"""Per-image comparison of the teacher, a generation's students and their ensembles.

For each frame (or added image) of a project: the teacher's soft mask and selection score, each
student's mask with its EvalSeg-Net score, Multi-Net (product of the students), MultiSelect-Net
(the student EvalSeg-Net rates highest), the IoU of each against ground truth where it exists,
and how much teacher and students disagree. The GUI's per-image browser shows these rows; this
module computes them and never imports Qt. TensorFlow is imported only when a generation's
students are loaded (`StudentPredictor`).

Definitions (also shown in the browser's header tooltips):
- IoU against ground truth: the soft mask upsampled bilinearly to the ground truth's size and
  thresholded at 0.5, Jaccard with the ground truth (as the purity curve computes it).
- Disagreement: 1 - IoU between the teacher's mask and the Multi-Net mask, both thresholded at
  0.5 at Multi-Net's resolution (COMMON_SIZE); 0 when both are empty.
- IoU gain: Multi-Net IoU minus the teacher's IoU (positive: the students improved on it).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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


def compute_batch(frames: Sequence[BrowseFrame], size: tuple[int, int],
                  predictor: Predictor | None = None,
                  sources: SourceCache | None = None) -> tuple[list[FrameResult], str]:
    """Scores of a batch of frames: (results, a warning). Without a predictor, or when its
    models cannot be loaded (the warning says why), only the teacher's scores are computed."""
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
    return [score_frame(f.frame_id, t, g, s, e)
            for f, t, g, s, e in zip(frames, teachers, gts, students, scores)], warning


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

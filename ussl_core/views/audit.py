"""The Audit panel's Qt-free state: a producer's masks as one table sorted by score (where each
mask and its frame are stored, its decision), the filters over it, the pixels of a thumbnail and
of the large view, the purity curve and the cut-off's figures.

Everything here runs in any thread and never holds images: a table of 100,000 masks is a few
numpy columns, and pixels are read from the shards only for what is on screen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ussl_core.demo import overlay
from ussl_core.progress import CancelToken
from ussl_core.purity import (PurityCurve, decisions_curve, purity_curve, rank_best_first,
                              read_ground_truth)
from ussl_core.selection import SelectionSettings, kept_by_score
from ussl_core.store import Project
from ussl_core.store.shards import read_shard

# Decisions as int8 codes in the table's column; "clear" removes a decision.
NONE, APPROVE, REJECT = 0, 1, 2
CODES = {"approve": APPROVE, "reject": REJECT, "clear": NONE}
NAMES = {APPROVE: "approve", REJECT: "reject"}
DECISION_FILTERS = ("All", "Approved", "Rejected", "Undecided")
FILTER_CODES = {"Approved": APPROVE, "Rejected": REJECT, "Undecided": NONE}
LARGE_VIEW_MIN_HEIGHT = 240    # working frames are small: the large view shows them at least this high
SCORE_SLACK = 1e-9             # a score range typed with 3 decimals still holds its ends


# ============================================================================ records
@dataclass(frozen=True)
class AuditRecord:
    """One row of the grid, as the model hands it out."""
    frame_id: int
    producer_id: int
    score: float
    video_id: int
    decision: str | None


@dataclass(frozen=True)
class ScoredMask:
    """What decisions_curve reads of a mask."""
    frame_id: int
    producer_id: int
    score: float


@dataclass(frozen=True)
class MaskPixels:
    """Where one mask and its frame are stored: all a thumbnail or the large view needs to read
    them (in a thread, without the catalog)."""
    frames_path: str | None       # None when the shot has no stored frames
    frames_row: int
    mask_path: str
    mask_row: int
    source_size: tuple[int, int]  # the video's (width, height); zeros when unknown


@dataclass(frozen=True)
class LargeView:
    """The large view's images: the frame in its source's aspect, the soft mask at the same size
    (float 0..1) and the ground truth (bool, its own size) when the frame has one."""
    frame: np.ndarray
    soft: np.ndarray
    ground_truth: np.ndarray | None


@dataclass
class AuditTable:
    """A producer's masks as columns, sorted by score (best first, ties in catalog order, as
    selection and purity rank them). Images are not held here, only where to read them."""
    producer_id: int
    frame_id: np.ndarray
    score: np.ndarray
    video_id: np.ndarray
    frame_idx: np.ndarray
    decision: np.ndarray          # int8: NONE, APPROVE or REJECT; the GUI updates it after a write
    mask_path: np.ndarray         # int32 index into paths
    mask_row: np.ndarray
    frames_path: np.ndarray       # int32 index into paths, -1 when the shot has no frames
    frames_row: np.ndarray
    shot_id: np.ndarray
    paths: list[str]
    video_sizes: dict[int, tuple[int, int]]
    video_names: dict[int, str]
    _by_frame: np.ndarray = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._by_frame = np.argsort(self.frame_id, kind="stable")

    def __len__(self) -> int:
        return len(self.frame_id)

    def index_of(self, frame_ids) -> np.ndarray:
        """Table positions of frame ids (-1 where absent)."""
        frame_ids = np.atleast_1d(np.asarray(frame_ids, dtype=np.int64))
        if not len(self):
            return np.full(len(frame_ids), -1, np.int64)
        sorted_ids = self.frame_id[self._by_frame]
        pos = np.clip(np.searchsorted(sorted_ids, frame_ids), 0, len(self) - 1)
        found = sorted_ids[pos] == frame_ids
        return np.where(found, self._by_frame[pos], -1)

    def pixels(self, i: int) -> MaskPixels:
        frames = int(self.frames_path[i])
        return MaskPixels(self.paths[frames] if frames >= 0 else None, int(self.frames_row[i]),
                          self.paths[int(self.mask_path[i])], int(self.mask_row[i]),
                          self.video_sizes.get(int(self.video_id[i]), (0, 0)))

    def record(self, i: int) -> AuditRecord:
        return AuditRecord(int(self.frame_id[i]), self.producer_id, float(self.score[i]),
                           int(self.video_id[i]), NAMES.get(int(self.decision[i])))

    def describe(self, i: int) -> str:
        """Two lines on a mask: its video and frame; its score, rank and decision."""
        decision = NAMES.get(int(self.decision[i]), "undecided")
        return (f"{self.video_names.get(int(self.video_id[i]), '?')}, frame {int(self.frame_idx[i])}\n"
                f"score {self.score[i]:.4f} · rank {i + 1:,} of {len(self):,} · {decision}")

    def decisions_at(self, positions: np.ndarray) -> list[str]:
        """The decisions of table positions by name, "clear" where there is none (what undo
        writes back)."""
        return [NAMES.get(int(code), "clear") for code in self.decision[positions]]

    def filtered(self, video_id: int | None, low: float, high: float, decision: str) -> np.ndarray:
        """Table positions (in score order) of one video or all, within a score range, with a
        decision filter (one of DECISION_FILTERS)."""
        keep = (self.score >= low - SCORE_SLACK) & (self.score <= high + SCORE_SLACK)
        if video_id is not None:
            keep &= self.video_id == video_id
        if decision in FILTER_CODES:
            keep &= self.decision == FILTER_CODES[decision]
        return np.flatnonzero(keep)


def is_kept(code: int, by_score: bool) -> bool:
    """Whether a mask is selected: approved always, rejected never, else when the score keeps it."""
    return code == APPROVE or (code != REJECT and by_score)


def decision_codes(decisions: list[str]) -> np.ndarray:
    return np.array([CODES[d] for d in decisions], np.int8)


# ============================================================================ reading
def load_table(root: Path, producer_id: int, cancel: CancelToken | None = None) -> AuditTable:
    """Read a producer's mask records with their own read-only Project (any thread).

    A mask's row in its shot's mask shard is also its frame's row in the shot's frames shard
    (both hold the shot's frames in order: `commit_shot_masks`), so frames are not listed.
    """
    with Project.open(root) as project:
        masks = project.masks(producer_id)
        if cancel:
            cancel.raise_if_cancelled()
        decisions = project.decisions(producer_id)
        shots = {s.id: s for s in project.shots()}
        videos = project.videos()
    if cancel:
        cancel.raise_if_cancelled()
    n = len(masks)
    paths: dict[str, int] = {}

    def path_index(stored: str | None) -> int:
        if not stored:
            return -1
        if stored not in paths:
            paths[stored] = len(paths)
        return paths[stored]

    decided = {f: CODES[d["decision"]] for (f, _), d in decisions.items()
               if d["decision"] in NAMES.values()}
    scores = np.fromiter((m.score for m in masks), np.float64, n)
    frame_id = np.fromiter((m.frame_id for m in masks), np.int64, n)
    shot_id = np.fromiter((m.shot_id for m in masks), np.int64, n)
    row = np.fromiter((m.row for m in masks), np.int32, n)
    # Per shot: where its frames are and where it starts, looked up for every mask at once.
    shot_ids = np.array(sorted(shots), np.int64)
    shot_frames = np.array([path_index(shots[s].frames_shard) for s in shot_ids], np.int32)
    shot_start = np.array([shots[s].start for s in shot_ids], np.int32)
    at = np.searchsorted(shot_ids, shot_id) if len(shot_ids) else np.zeros(n, np.int64)
    order = rank_best_first(scores)
    return AuditTable(
        producer_id=producer_id,
        frame_id=frame_id[order],
        score=scores[order],
        video_id=np.fromiter((m.video_id for m in masks), np.int64, n)[order],
        frame_idx=(shot_start[at] + row)[order] if n else np.empty(0, np.int32),
        decision=np.fromiter((decided.get(f, NONE) for f in frame_id.tolist()), np.int8, n)[order],
        mask_path=np.fromiter((path_index(m.shard) for m in masks), np.int32, n)[order],
        mask_row=row[order],
        frames_path=shot_frames[at][order] if n else np.empty(0, np.int32),
        frames_row=row[order],
        shot_id=shot_id[order],
        paths=[str((Path(root) / p).resolve()) for p in paths],
        video_sizes={v.id: (v.width, v.height) for v in videos},
        video_names={v.id: v.name for v in videos})


def _read_soft_mask(pixels: MaskPixels) -> np.ndarray:
    return read_shard(Path(pixels.mask_path), "masks", pixels.mask_row).astype(np.float32) / 255.0


def render_thumbnail(pixels: MaskPixels, size: tuple[int, int]) -> np.ndarray:
    """A small frame of `size` (width, height) with the soft mask on top (RGB uint8); the mask
    alone, in grey, when the shot has no stored frames. For the grid's loader thread."""
    soft = _read_soft_mask(pixels)
    if pixels.frames_path is None:
        return cv2.resize((soft * 255).astype(np.uint8), size, interpolation=cv2.INTER_AREA)
    frame = read_shard(Path(pixels.frames_path), "frames", pixels.frames_row)
    return overlay(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), soft)


def read_large_view(root: Path, pixels: MaskPixels, frame_id: int, shot_id: int) -> LargeView:
    """The large view of one mask (any thread): frame and mask at least LARGE_VIEW_MIN_HEIGHT
    high in the source's aspect (working frames are stored at a fixed size), and the frame's
    ground truth when it has one."""
    soft = _read_soft_mask(pixels)
    frame = (read_shard(Path(pixels.frames_path), "frames", pixels.frames_row) if pixels.frames_path
             else np.zeros(soft.shape + (3,), np.uint8))
    width, height = pixels.source_size
    if width <= 0 or height <= 0:
        height, width = frame.shape[:2]
    shown_height = max(frame.shape[0], LARGE_VIEW_MIN_HEIGHT)
    size = (max(1, round(shown_height * width / height)), shown_height)
    frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
    soft = cv2.resize(soft, size, interpolation=cv2.INTER_LINEAR)
    ground_truth = None
    with Project.open(root) as project:
        for stored in project.frames(shot_id=shot_id):
            if stored.id == frame_id and stored.gt_path:
                ground_truth = read_ground_truth(project.abspath(stored.gt_path))
    return LargeView(frame, soft, ground_truth)


# ============================================================================ purity
def read_purity_curve(root: Path, producer_id: int) -> PurityCurve:
    """The producer's purity curve with its own read-only Project (any thread)."""
    with Project.open(root) as project:
        return purity_curve(project, producer_id)


def table_decisions_curve(table: AuditTable, decision: np.ndarray | None = None) -> PurityCurve:
    """The decisions curve from the masks and decisions the table holds, without reading the
    store again (100,000 masks). `decision`: a copy of the table's codes taken on the thread
    that changes them."""
    codes = table.decision if decision is None else decision
    producer_id = table.producer_id
    masks = [ScoredMask(f, producer_id, s)
             for f, s in zip(table.frame_id.tolist(), table.score.tolist())]
    decided_at = codes != NONE
    decided = {(int(f), producer_id): {"decision": NAMES[int(c)]}
               for f, c in zip(table.frame_id[decided_at], codes[decided_at])}
    return decisions_curve(masks, decided)


# ============================================================================ cut-off
def threshold_keeping(scores: np.ndarray, k: int) -> float:
    """A score threshold that keeps (about) the best k of scores sorted best first."""
    if k <= 0:
        return float(scores[0])
    if k >= len(scores):
        return float(scores[-1]) - 1e-3
    return float(scores[k])


def percent_above(scores: np.ndarray, threshold: float) -> float:
    """The share of masks above a threshold, in percent (at least the smallest top percent the
    panel offers, 0.1)."""
    kept = int(np.count_nonzero(scores > threshold))
    return max(0.1, 100.0 * kept / len(scores))


@dataclass(frozen=True)
class CurvePoint:
    """The purity curve where the cut-off is: from ground truth (mean IoU, CorLoc) or from
    decisions (approved share of the audited masks above it)."""
    mean_iou: float | None = None
    corloc: float | None = None
    approved_share: float | None = None
    n_audited: int = 0


@dataclass(frozen=True)
class CutoffFigures:
    """What a cut-off keeps of a table: by score alone (`kept`, per table position) and with
    the decisions (approved masks always in, rejected never), where the line sits on the
    curve, and the curve's value there."""
    kept: np.ndarray
    n_masks: int
    n_by_score: int
    n_approved_below: int
    n_rejected_above: int
    percent: float
    whole_ranking: bool          # the kept masks are a prefix of the global order (the curve's)
    point: CurvePoint | None

    @property
    def n_selected(self) -> int:
        return self.n_by_score + self.n_approved_below - self.n_rejected_above


def cutoff_figures(table: AuditTable, settings: SelectionSettings,
                   curve: PurityCurve | None = None) -> CutoffFigures:
    """The figures of a cut-off (selection's own keep rule) on a non-empty table."""
    n = len(table)
    kept = kept_by_score(table.score, table.video_id, settings)
    k = int(np.count_nonzero(kept))
    whole = not settings.per_video and not settings.max_per_video
    percent = settings.top_percent if whole and settings.threshold is None else 100.0 * k / n
    point = curve_point(curve, percent) if whole and curve is not None and k else None
    return CutoffFigures(kept, n, k, int(np.count_nonzero((table.decision == APPROVE) & ~kept)),
                         int(np.count_nonzero((table.decision == REJECT) & kept)), percent, whole, point)


def curve_point(curve: PurityCurve, percent: float) -> CurvePoint | None:
    """The curve at a percent kept (its steps are whole percents, rounded up); None where it
    has no value."""
    p = min(max(int(math.ceil(percent)), 1), 100) - 1
    if curve.source == "ground_truth":
        if curve.mean_iou[p] is None:
            return None
        return CurvePoint(mean_iou=curve.mean_iou[p], corloc=curve.corloc[p])
    if curve.approved_share and curve.approved_share[p] is not None:
        return CurvePoint(approved_share=curve.approved_share[p], n_audited=curve.n_audited[p])
    return None

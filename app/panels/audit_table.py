"""The audit grid's data: one record per mask (score, decision, where its frame and mask are
stored), loaded off the GUI thread, and the thumbnail of a record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from app.style import THUMB
from app.widgets.thumbnails import fit_size
from ussl_core.demo import overlay
from ussl_core.progress import CancelToken
from ussl_core.purity import rank_best_first
from ussl_core.store import Project
from ussl_core.store.shards import read_shard


NONE, APPROVE, REJECT = 0, 1, 2
CODES = {"approve": APPROVE, "reject": REJECT, "clear": NONE}
NAMES = {APPROVE: "approve", REJECT: "reject"}


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


@dataclass
class AuditTable:
    """A producer's masks as columns, sorted by score (best first, ties in catalog order, as
    selection and purity rank them). Images are not held here, only where to read them."""
    producer_id: int
    frame_id: np.ndarray
    score: np.ndarray
    video_id: np.ndarray
    frame_idx: np.ndarray
    decision: np.ndarray          # int8: 0 none, 1 approve, 2 reject
    mask_path: np.ndarray         # int32 index into paths
    mask_row: np.ndarray
    frames_path: np.ndarray       # int32 index into paths, -1 when the shot has no frames
    frames_row: np.ndarray
    shot_id: np.ndarray
    paths: list[str]
    thumb_sizes: dict[int, tuple[int, int]]
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

    def payload(self, i: int) -> tuple:
        frames = int(self.frames_path[i])
        return (self.paths[frames] if frames >= 0 else None, int(self.frames_row[i]),
                self.paths[int(self.mask_path[i])], int(self.mask_row[i]),
                self.thumb_sizes.get(int(self.video_id[i]), (THUMB.width(), THUMB.height())))


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

    code = {"approve": APPROVE, "reject": REJECT}
    decided = {f: code[d["decision"]] for (f, _), d in decisions.items() if d["decision"] in code}
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
        thumb_sizes={v.id: fit_size(v.width, v.height, THUMB) for v in videos},
        video_names={v.id: v.name for v in videos})


def render_thumbnail(payload: tuple) -> np.ndarray:
    """The loader thread's work: a small frame with the soft mask on top (RGB uint8)."""
    frames_path, frames_row, mask_path, mask_row, (w, h) = payload
    soft = read_shard(Path(mask_path), "masks", mask_row).astype(np.float32) / 255.0
    if frames_path is None:  # no stored frames: the mask alone, in grey
        return cv2.resize((soft * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_AREA)
    frame = read_shard(Path(frames_path), "frames", frames_row)
    return overlay(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA), soft)

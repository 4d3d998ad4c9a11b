"""Purity curves: how good the kept masks are as selection gets stricter (the seed's Fig. 3).

With ground truth: for p = 1..100 percent kept (best scores first), the mean IoU of the kept
masks (soft mask > 0.5, at the frame's original size) and the CorLoc of their boxes. Without
it: the share approved among the audited masks in the kept set, from human decisions.
Per-mask IoU against ground truth is computed once and cached in the project's cache/.
"""

from __future__ import annotations

import csv
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ussl_core.atomic import atomic_path
from ussl_core.errors import MediaError
from ussl_core.metrics import box_hit, iou
from ussl_core.postprocess import BoxSettings, boxes_from_mask, mask_box, upsample_mask
from ussl_core.store import Mask, Project
from ussl_core.store.project import slug

PERCENTS = list(range(1, 101))


@dataclass(frozen=True)
class MaskStats:
    frame_id: int
    video_id: int
    score: float
    iou: float
    box_hit: bool


@dataclass
class PurityCurve:
    source: str                       # "ground_truth" or "decisions"
    percent: list[int]
    n_kept: list[int]
    mean_iou: list[float | None]
    corloc: list[float | None]
    approved_share: list[float | None] | None = None
    n_audited: list[int] | None = None
    n_masks: int = 0

    def to_json(self) -> dict:
        data = asdict(self)
        if self.source == "ground_truth":
            data.pop("approved_share")
            data.pop("n_audited")
        return data


# A mask is black and white, grey only at the edges of objects (anti-aliasing, JPEG): more
# grey than this share of its pixels is an image, not a mask.
MAX_GREY_SHARE = 0.25


def read_ground_truth(path: Path) -> np.ndarray:
    """A ground-truth mask as bool (foreground = any channel > 0)."""
    data = np.fromfile(path, np.uint8) if path.exists() else np.zeros(0, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise MediaError(path, "not a readable ground-truth mask")
    grey = image.max(axis=2) if image.ndim == 3 else image
    if grey.dtype == np.uint8 and np.mean((grey > 16) & (grey < 239)) > MAX_GREY_SHARE:
        raise MediaError(path, "not a ground-truth mask: most of its pixels are neither background nor "
                               "foreground (a photograph?)")
    return grey > 0


def _one_mask_stats(project: Project, mask: Mask, soft: np.ndarray, gt_path: str) -> MaskStats:
    gt = read_ground_truth(project.abspath(gt_path))
    full = upsample_mask(soft, (gt.shape[1], gt.shape[0]))
    boxes = boxes_from_mask(full, None, BoxSettings(threshold=0.5, mode="largest"))
    return MaskStats(mask.frame_id, mask.video_id, mask.score, iou(full > 0.5, gt),
                     box_hit(boxes[0] if boxes else None, mask_box(gt)))


def mask_gt_stats(project: Project, producer_id: int) -> list[MaskStats]:
    """IoU and box hit against ground truth of every mask of a producer that has ground truth."""
    gt_of = {f.id: f.gt_path for f in project.frames() if f.gt_path}
    masks = [m for m in project.masks(producer_id) if m.frame_id in gt_of]
    if not masks:
        return []
    # The key changes whenever a mask, its shard file or its ground truth changes.
    shard_times = {s: project.abspath(s).stat().st_mtime_ns for s in {m.shard for m in masks}}
    key = hashlib.sha1(repr([producer_id, sorted(shard_times.items())] +
                            [(m.frame_id, m.shard, m.row, m.score, gt_of[m.frame_id]) for m in masks]
                            ).encode()).hexdigest()[:16]
    name = next(p.name for p in project.producers() if p.id == producer_id)
    cache = project.root / "cache" / f"gt_stats_{slug(name)}_{key}.npz"
    if cache.exists():
        data = np.load(cache)
        return [MaskStats(int(f), int(v), float(s), float(i), bool(h)) for f, v, s, i, h in
                zip(data["frame_id"], data["video_id"], data["score"], data["iou"], data["box_hit"])]
    # Decoding PNGs and resizing release the GIL: two threads use both cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        stats = list(pool.map(lambda pair: _one_mask_stats(project, pair[0], pair[1], gt_of[pair[0].frame_id]),
                              project.read_masks(masks)))
    cache.parent.mkdir(exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, frame_id=[s.frame_id for s in stats], video_id=[s.video_id for s in stats],
             score=[s.score for s in stats], iou=[s.iou for s in stats],
             box_hit=[s.box_hit for s in stats])
    tmp.replace(cache)
    return stats


def n_kept(percent: float, n: int) -> int:
    """How many of n masks the top `percent` keeps (at least one when n > 0 and percent > 0)."""
    return min(n, max(1 if percent > 0 and n else 0, math.ceil(percent * n / 100.0 - 1e-9)))


def rank_best_first(scores: np.ndarray) -> np.ndarray:
    """Indices by score, best first."""
    # Stable, best first: equal scores keep catalog order, so curves are reproducible.
    return np.argsort(-scores, kind="stable")


def ground_truth_curve(stats: list[MaskStats]) -> PurityCurve:
    scores = np.array([s.score for s in stats])
    order = rank_best_first(scores)
    ious = np.cumsum(np.array([s.iou for s in stats])[order])
    hits = np.cumsum(np.array([s.box_hit for s in stats], float)[order])
    kept = [n_kept(p, len(stats)) for p in PERCENTS]
    return PurityCurve("ground_truth", PERCENTS, kept,
                       [float(ious[k - 1] / k) if k else None for k in kept],
                       [float(hits[k - 1] / k) if k else None for k in kept], n_masks=len(stats))


def decisions_curve(masks: list[Mask], decisions: dict[tuple[int, int], dict]) -> PurityCurve:
    scores = np.array([m.score for m in masks])
    order = rank_best_first(scores)
    verdict = np.array([decisions.get((m.frame_id, m.producer_id), {}).get("decision", "")
                        for m in masks])[order]
    approved = np.cumsum(verdict == "approve")
    audited = np.cumsum((verdict == "approve") | (verdict == "reject"))
    kept = [n_kept(p, len(masks)) for p in PERCENTS]
    share = [float(approved[k - 1] / audited[k - 1]) if k and audited[k - 1] else None for k in kept]
    return PurityCurve("decisions", PERCENTS, kept, [None] * len(kept), [None] * len(kept),
                       share, [int(audited[k - 1]) if k else 0 for k in kept], n_masks=len(masks))


def purity_curve(project: Project, producer_id: int, video_id: int | None = None) -> PurityCurve:
    """The curve from ground truth where the producer's masks have it, else from decisions."""
    stats = mask_gt_stats(project, producer_id)
    if video_id is not None:
        stats = [s for s in stats if s.video_id == video_id]
    if stats:
        return ground_truth_curve(stats)
    return decisions_curve(project.masks(producer_id, video_id), project.decisions(producer_id))


def write_per_video_csv(project: Project, producer_id: int, path: Path) -> int:
    """One row per (video, percent): video, percent, n_kept, mean_iou, corloc, source... ."""
    rows = 0
    with atomic_path(path, "csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "percent", "n_kept", "mean_iou", "corloc", "approved_share",
                         "n_audited", "source"])
        for video in project.videos():
            curve = purity_curve(project, producer_id, video.id)
            if curve.n_masks == 0:
                continue
            for i, p in enumerate(curve.percent):
                writer.writerow([video.name, p, curve.n_kept[i], _fmt(curve.mean_iou[i]),
                                 _fmt(curve.corloc[i]),
                                 _fmt(curve.approved_share[i]) if curve.approved_share else "",
                                 curve.n_audited[i] if curve.n_audited else "", curve.source])
                rows += 1
    return rows


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def plot_curve(curve: PurityCurve, path: Path, title: str = "") -> None:
    """Save the curve as a PNG (matplotlib, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if curve.source == "ground_truth":
        ax.plot(curve.percent, curve.mean_iou, label="mean IoU (mask > 0.5)")
        ax.plot(curve.percent, curve.corloc, label="CorLoc (box IoU >= 0.5)")
    else:
        ax.plot(curve.percent, [v if v is not None else np.nan for v in curve.approved_share],
                label="approved share of audited")
    ax.set_xlabel("percent of masks kept (best scores first)")
    ax.set_ylabel("purity")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or f"Purity ({curve.source.replace('_', ' ')}, {curve.n_masks} masks)")
    fig.tight_layout()
    with atomic_path(path, "png") as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)

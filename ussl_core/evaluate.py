"""Evaluating folders of soft masks against folders of ground truth (`ussl evaluate`)."""

from __future__ import annotations

from pathlib import Path

from ussl_core.errors import UsslError
from ussl_core.media import IMAGE_EXTENSIONS, natural_key
from ussl_core.metrics import SegmentationScores
from ussl_core.purity import read_ground_truth


def _masks_by_key(folder: Path) -> dict[str, Path]:
    """Image files under `folder` keyed by their relative path without extension."""
    if not folder.is_dir():
        raise UsslError(f"{folder}: not a folder")
    return {str(p.relative_to(folder).with_suffix("")): p for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


def read_soft_mask(path: Path):
    """A soft map PNG as float32 in [0, 1] (16-bit maps keep their precision)."""
    import cv2
    import numpy as np

    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise UsslError(f"{path}: not a readable mask image")
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    return image.astype(np.float32) / scale


def evaluate_folders(pred_dir: Path, gt_dir: Path, n_thresholds: int = 256) -> dict:
    """All metrics for predictions `<stem>.png` against ground truths `<stem>.png` (nested
    folders matched by relative path). Ground truths without a prediction are counted and
    scored as empty predictions, so a missing output cannot flatter the figures."""
    import numpy as np

    preds, gts = _masks_by_key(pred_dir), _masks_by_key(gt_dir)
    if not gts:
        raise UsslError(f"{gt_dir}: no ground-truth masks (png/jpg) found")
    matched = [k for k in gts if k in preds]
    if not matched:
        raise UsslError(f"{pred_dir}: no prediction is named like a ground-truth mask "
                        f"(expected e.g. {next(iter(gts))}.png)")
    scores = SegmentationScores(n_thresholds)
    for key in sorted(gts, key=natural_key):
        gt = read_ground_truth(gts[key])
        pred = read_soft_mask(preds[key]) if key in preds else np.zeros(gt.shape, np.float32)
        scores.add(pred, gt)
    result = scores.result()
    result["n_missing_predictions"] = len(gts) - len(matched)
    return result

"""The paper's segmentation metrics: max F-beta, MAE, max mean IoU, CorLoc, precision/Jaccard.

Predictions are soft masks (float in [0, 1] or uint8 0..255); ground truths are binary
(foreground = value > 0). A prediction of another size is resized bilinearly to its ground
truth before scoring.

Threshold convention of SegmentationScores: with ``n`` thresholds, ``t_k = k / n`` for
``k = 0 .. n-1`` and a pixel is foreground at ``t_k`` when ``pred > t_k`` (up to 1e-9 of
rounding). With the default ``n = 256`` the grid holds 0.5 exactly, and a uint8 prediction
``v`` is foreground at ``t_k`` exactly when ``v / 255 > k / 256``.

Empty-mask conventions, per image: precision is TP / (TP + FP), or 1.0 when the prediction
is empty and so is the ground truth, 0.0 when only the prediction is empty; recall is
TP / |gt|, or 1.0 when the ground truth is empty; IoU of two empty masks is 1.0; for CorLoc
an image with an empty ground truth is a hit exactly when no box is predicted either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from ussl_core.postprocess import (
    Box,
    BoxSettings,
    as_binary_mask,
    box_iou,
    boxes_from_mask,
    mask_box,
    upsample_mask,
)

FBETA_SQ = 0.3
CORLOC_IOU = 0.5
BINARY_THRESHOLD = 0.5
_ROUNDING = 1e-9
_LARGEST_BOX = BoxSettings(threshold=BINARY_THRESHOLD, mode="largest")


def _soft_like(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Soft prediction at the ground truth's ``shape = (height, width)``."""
    return upsample_mask(pred, (shape[1], shape[0]))


def _binary_like(pred_binary: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    pred = as_binary_mask(pred_binary)
    if pred.shape == shape:
        return pred
    return _soft_like(pred, shape) > BINARY_THRESHOLD


def _ratio(numerator: float, denominator: float, if_zero: float) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else if_zero


def iou(pred_binary: np.ndarray, gt_binary: np.ndarray) -> float:
    """Jaccard index of two binary masks (foreground = value > 0); two empty masks give 1.0."""
    gt = as_binary_mask(gt_binary)
    pred = _binary_like(pred_binary, gt.shape)
    inter = np.count_nonzero(pred & gt)
    union = np.count_nonzero(pred | gt)
    return _ratio(inter, union, 1.0)


def precision_jaccard(pred_binary: np.ndarray, gt_binary: np.ndarray) -> tuple[float, float]:
    """Pixel precision TP / (TP + FP) and Jaccard of a binary prediction.

    An empty prediction has precision 1.0 if the ground truth is empty too, else 0.0.
    """
    gt = as_binary_mask(gt_binary)
    pred = _binary_like(pred_binary, gt.shape)
    tp = np.count_nonzero(pred & gt)
    predicted = np.count_nonzero(pred)
    union = predicted + np.count_nonzero(gt) - tp
    empty_gt = not gt.any()
    return _ratio(tp, predicted, 1.0 if empty_gt else 0.0), _ratio(tp, union, 1.0)


def box_hit(pred_box: Box | None, gt_box: Box | None) -> bool:
    """CorLoc hit: IoU >= 0.5; a missing predicted box misses, unless the ground truth has none."""
    if gt_box is None:
        return pred_box is None
    return pred_box is not None and box_iou(pred_box, gt_box) >= CORLOC_IOU


def corloc(pred_boxes: Sequence[Box | None], gt_boxes: Sequence[Box | None]) -> float:
    """Fraction of images whose predicted box hits the ground-truth box (see box_hit); NaN if none."""
    if len(pred_boxes) != len(gt_boxes):
        raise ValueError(f"{len(pred_boxes)} predicted boxes for {len(gt_boxes)} ground truths")
    if not gt_boxes:
        return math.nan
    hits = sum(box_hit(p, g) for p, g in zip(pred_boxes, gt_boxes))
    return hits / len(gt_boxes)


def mae(pred_soft: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error between a soft prediction and a 0/1 ground truth of one image."""
    gt_binary = as_binary_mask(gt)
    pred = _soft_like(pred_soft, gt_binary.shape)
    return float(np.mean(np.abs(pred - gt_binary, dtype=np.float64)))


def f_beta(precision: np.ndarray | float, recall: np.ndarray | float) -> np.ndarray:
    """(1 + b2) P R / (b2 P + R) with b2 = FBETA_SQ, elementwise; 0 where P = R = 0."""
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    denominator = FBETA_SQ * p + r
    numerator = (1.0 + FBETA_SQ) * p * r
    out = np.zeros(np.broadcast(p, r).shape)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


class SegmentationScores:
    """Accumulates the paper's metrics image by image, so a dataset need not sit in memory.

    Per-image precision, recall and IoU are kept for every threshold ``t_k = k / n`` (see the
    module docstring) as running sums; ``result`` averages them over images and then takes
    the maxima. F-beta is computed from the image-averaged precision and recall, as in the
    paper, not averaged per image.
    """

    def __init__(self, n_thresholds: int = 256) -> None:
        if n_thresholds < 1:
            raise ValueError(f"n_thresholds must be >= 1, got {n_thresholds}")
        self.n_thresholds = int(n_thresholds)
        self._precision_sum = np.zeros(self.n_thresholds)
        self._recall_sum = np.zeros(self.n_thresholds)
        self._iou_sum = np.zeros(self.n_thresholds)
        self._mae_sum = 0.0
        self._hits = 0
        self._precision05_sum = 0.0
        self._jaccard05_sum = 0.0
        self.n_images = 0

    @property
    def thresholds(self) -> np.ndarray:
        """The threshold grid ``t_k = k / n``; foreground at ``t_k`` means ``pred > t_k``."""
        return np.arange(self.n_thresholds) / self.n_thresholds

    def _counts(self, pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """True and false positives at every threshold, from one histogram.

        Level ``q = ceil(pred * n)`` in 0..n, so ``pred > k / n`` iff ``q > k``; the counts
        at threshold k are sums over levels k+1..n, i.e. reversed cumulative sums.
        """
        n = self.n_thresholds
        levels = np.ceil(pred.astype(np.float64) * n - _ROUNDING)
        levels = np.clip(levels, 0, n).astype(np.intp)
        index = levels + (n + 1) * gt  # background levels in 0..n, foreground in n+1..2n+1
        hist = np.bincount(index.ravel(), minlength=2 * (n + 1)).reshape(2, n + 1)
        above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
        return above[1, 1:], above[0, 1:]

    def _add_curves(self, pred: np.ndarray, gt: np.ndarray) -> None:
        tp, fp = self._counts(pred, gt)
        n_gt = int(np.count_nonzero(gt))
        predicted = tp + fp
        empty_precision = 1.0 if n_gt == 0 else 0.0
        self._precision_sum += np.divide(
            tp, predicted, out=np.full(self.n_thresholds, empty_precision), where=predicted > 0
        )
        self._recall_sum += tp / n_gt if n_gt > 0 else 1.0
        union = n_gt + fp  # TP + FP + FN
        self._iou_sum += np.divide(tp, union, out=np.ones(self.n_thresholds), where=union > 0)

    def add(self, pred_soft: np.ndarray, gt: np.ndarray) -> None:
        """Score one image: ``pred_soft`` is resized to ``gt``'s size first."""
        gt_binary = as_binary_mask(gt)
        pred = _soft_like(pred_soft, gt_binary.shape)
        self._add_curves(pred, gt_binary)
        self._mae_sum += float(np.mean(np.abs(pred - gt_binary, dtype=np.float64)))
        pred_boxes = boxes_from_mask(pred, settings=_LARGEST_BOX)
        self._hits += box_hit(pred_boxes[0] if pred_boxes else None, mask_box(gt_binary))
        precision, jaccard = precision_jaccard(pred > BINARY_THRESHOLD, gt_binary)
        self._precision05_sum += precision
        self._jaccard05_sum += jaccard
        self.n_images += 1

    def curves(self) -> dict[str, np.ndarray]:
        """Image-averaged precision, recall, F-beta and IoU at each threshold (for plots)."""
        count = max(self.n_images, 1)
        precision = self._precision_sum / count
        recall = self._recall_sum / count
        return {
            "thresholds": self.thresholds,
            "precision": precision,
            "recall": recall,
            "fbeta": f_beta(precision, recall),
            "iou": self._iou_sum / count,
        }

    def result(self) -> dict:
        """The summary; maxima pick the lowest threshold on ties. All NaN for no images."""
        if self.n_images == 0:
            keys = ("max_fbeta", "max_fbeta_threshold", "mae", "max_mean_iou",
                    "max_mean_iou_threshold", "corloc", "precision", "jaccard")
            return {"n_images": 0, **{key: math.nan for key in keys}}
        curves = self.curves()
        best_f = int(np.argmax(curves["fbeta"]))
        best_iou = int(np.argmax(curves["iou"]))
        count = self.n_images
        return {
            "n_images": count,
            "max_fbeta": float(curves["fbeta"][best_f]),
            "max_fbeta_threshold": float(curves["thresholds"][best_f]),
            "mae": self._mae_sum / count,
            "max_mean_iou": float(curves["iou"][best_iou]),
            "max_mean_iou_threshold": float(curves["thresholds"][best_iou]),
            "corloc": self._hits / count,
            "precision": self._precision05_sum / count,
            "jaccard": self._jaccard05_sum / count,
        }


def evaluate_pairs(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], n_thresholds: int = 256
) -> dict:
    """SegmentationScores.result() over ``(prediction, ground truth)`` pairs, streamed."""
    scores = SegmentationScores(n_thresholds)
    for pred, gt in pairs:
        scores.add(pred, gt)
    return scores.result()

"""Exact checks of ussl_core.metrics: every expected value is worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ussl_core.metrics import (
    FBETA_SQ,
    SegmentationScores,
    corloc,
    evaluate_pairs,
    f_beta,
    iou,
    mae,
    precision_jaccard,
)


def columns(first: int, last: int, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    """Binary mask with columns first..last (inclusive) set."""
    mask = np.zeros(shape, bool)
    mask[:, first : last + 1] = True
    return mask


def fb(p: float, r: float) -> float:
    return (1 + 0.3) * p * r / (0.3 * p + r)


# --- per-image functions ----------------------------------------------------------------


def test_fbeta_constant_and_formula() -> None:
    assert FBETA_SQ == 0.3
    # P = 1, R = 0.5: 1.3 * 0.5 / (0.3 + 0.5) = 0.65 / 0.8 = 0.8125.
    assert float(f_beta(1.0, 0.5)) == pytest.approx(0.8125)
    assert float(f_beta(0.0, 0.0)) == 0.0


def test_iou_perfect_disjoint_half() -> None:
    gt = columns(0, 1)
    assert iou(gt, gt) == 1.0
    assert iou(columns(2, 3), gt) == 0.0
    # columns 1..2 vs 0..1: intersection 4 px (column 1), union 12 px -> 1/3.
    assert iou(columns(1, 2), gt) == pytest.approx(1 / 3)
    # 0/255 uint8 is accepted like bool.
    assert iou(columns(1, 2).astype(np.uint8) * 255, gt.astype(np.uint8)) == pytest.approx(1 / 3)


def test_iou_empty_conventions() -> None:
    empty = np.zeros((4, 4), bool)
    assert iou(empty, empty) == 1.0
    assert iou(empty, columns(0, 0)) == 0.0


def test_precision_jaccard() -> None:
    gt = columns(0, 1)  # 8 px
    # prediction columns 1..3 (12 px): TP = 4, precision 4/12, union 16 -> Jaccard 4/16.
    p, j = precision_jaccard(columns(1, 3), gt)
    assert p == pytest.approx(1 / 3) and j == pytest.approx(0.25)
    empty = np.zeros((4, 4), bool)
    assert precision_jaccard(empty, gt) == (0.0, 0.0)
    assert precision_jaccard(empty, empty) == (1.0, 1.0)


def test_mae() -> None:
    gt = np.zeros((4, 4), np.uint8)
    gt[:2] = 255  # top half foreground (8 px)
    assert mae(gt / 255.0, gt) == 0.0
    # 0.5 everywhere: every pixel is off by 0.5.
    assert mae(np.full((4, 4), 0.5), gt) == pytest.approx(0.5)
    # 0.75 on foreground, 0.25 on background: every pixel is off by 0.25.
    pred = np.where(gt > 0, 0.75, 0.25)
    assert mae(pred, gt) == pytest.approx(0.25)
    # uint8 prediction: 255 everywhere is 1.0 -> wrong on the 8 background pixels: 8/16.
    assert mae(np.full((4, 4), 255, np.uint8), gt) == pytest.approx(0.5)


def test_mae_and_iou_resize_the_prediction() -> None:
    gt = np.zeros((8, 8), bool)
    gt[:4] = True
    pred = np.zeros((4, 4), np.float32)
    pred[:2] = 1.0
    # Bilinear x2 upsampling gives rows 1, 1, 1, 0.75, 0.25, 0, 0, 0: rows 3 and 4 are
    # off by 0.25 on 8 pixels each -> MAE = 16 * 0.25 / 64 = 0.0625.
    assert mae(pred, gt) == pytest.approx(0.0625)
    assert iou(pred > 0.5, gt) == 1.0


def test_corloc() -> None:
    gt = [(0, 0, 4, 4)] * 4
    pred = [
        (0, 0, 4, 4),  # IoU 1: hit
        (2, 2, 6, 6),  # IoU 4/28: miss
        None,  # no box: miss
        (0, 0, 4, 2),  # IoU 8/16 = 0.5 exactly: hit (>= 0.5)
    ]
    assert corloc(pred, gt) == 0.5
    # An image without an object is a hit only when nothing is predicted.
    assert corloc([None, (0, 0, 1, 1)], [None, None]) == 0.5
    assert math.isnan(corloc([], []))
    with pytest.raises(ValueError):
        corloc([None], [])


# --- SegmentationScores -----------------------------------------------------------------


def test_perfect_prediction() -> None:
    gt = columns(1, 2, (6, 6))
    result = evaluate_pairs([(gt.astype(np.float32), gt)])
    assert result["n_images"] == 1
    assert result["max_fbeta"] == pytest.approx(1.0)
    assert result["mae"] == 0.0
    assert result["max_mean_iou"] == pytest.approx(1.0)
    assert result["corloc"] == 1.0
    assert result["precision"] == 1.0 and result["jaccard"] == 1.0


def test_disjoint_prediction() -> None:
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True  # 4 px in the top-left corner
    pred = (~gt).astype(np.float32)
    result = evaluate_pairs([(pred, gt)])
    # No threshold gives a true positive: P = R = 0 -> F = 0, IoU = 0.
    assert result["max_fbeta"] == 0.0 and result["max_mean_iou"] == 0.0
    assert result["mae"] == 1.0
    # The complement's box is the whole image: IoU with the gt box = 4/16 < 0.5.
    assert result["corloc"] == 0.0
    assert result["precision"] == 0.0 and result["jaccard"] == 0.0


def test_fbeta_averages_precision_and_recall_over_images_before_combining() -> None:
    gt = columns(0, 1)  # 8 px, box (0, 0, 2, 4), in both images
    pred_a = np.zeros((4, 4), np.float32)
    pred_a[0, :2] = 1.0  # 2 gt pixels: P = 1, R = 2/8, IoU 2/8, box (0, 0, 2, 1)
    pred_b = np.ones((4, 4), np.float32)  # everything: P = 8/16, R = 1, IoU 8/16
    # Binary predictions give the same counts at every threshold (all t_k < 1 and pred > t_0 = 0
    # only where pred = 1), so the maxima equal these values.
    result = evaluate_pairs([(pred_a, gt), (pred_b, gt)])

    mean_p, mean_r = (1 + 0.5) / 2, (0.25 + 1) / 2  # 0.75, 0.625
    expected = 1.3 * 0.75 * 0.625 / (0.3 * 0.75 + 0.625)  # 0.609375 / 0.85 = 0.716911...
    assert result["max_fbeta"] == pytest.approx(expected)
    assert expected == pytest.approx(fb(mean_p, mean_r))
    # The other orders give other numbers, so the test pins the order down:
    mean_of_f = (fb(1, 0.25) + fb(0.5, 1)) / 2  # (0.5909 + 0.5652) / 2 = 0.5781
    pooled = fb(10 / 18, 10 / 16)  # TP 2+8, predicted 2+16, gt 8+8 -> 0.6048
    assert abs(result["max_fbeta"] - mean_of_f) > 0.1
    assert abs(result["max_fbeta"] - pooled) > 0.1

    assert result["max_mean_iou"] == pytest.approx((0.25 + 0.5) / 2)
    # MAE: A misses 6 of 16 pixels, B is wrong on 8 of 16 -> (0.375 + 0.5) / 2.
    assert result["mae"] == pytest.approx(0.4375)
    # Boxes: A (0,0,2,1) vs (0,0,2,4) IoU 2/8 miss; B (0,0,4,4) IoU 8/16 = 0.5 hit.
    assert result["corloc"] == 0.5
    assert result["precision"] == pytest.approx(0.75)
    assert result["jaccard"] == pytest.approx(0.375)


def test_best_thresholds_of_a_soft_prediction() -> None:
    # One 1x8 image; gt = first four pixels. With n = 10 thresholds t_k = k/10, pred > t_k:
    #   k=4,5 (t 0.4, 0.5): {.95 .85 .75 .55 .65}: TP 4, FP 1 -> IoU 4/5, P .8, R 1, F .8387
    #   k=6   (t 0.6): drops .55 (fg):         TP 3, FP 1 -> IoU 3/5, P .75, R .75, F .75
    #   k=7   (t 0.7): drops .65 (bg):         TP 3, FP 0 -> IoU 3/4, P 1, R .75, F .9286
    #   k=8   (t 0.8): drops .75:              TP 2       -> IoU 2/4, P 1, R .5, F .8125
    #   k<=3 add false positives .35/.25/.15 -> IoU 4/6, 4/7, 4/8; k=9 -> IoU 1/4.
    gt = np.array([[1, 1, 1, 1, 0, 0, 0, 0]], np.uint8)
    pred = np.array([[0.95, 0.85, 0.75, 0.55, 0.65, 0.35, 0.25, 0.15]], np.float32)
    result = evaluate_pairs([(pred, gt)], n_thresholds=10)
    assert result["max_mean_iou"] == pytest.approx(0.8)
    assert result["max_mean_iou_threshold"] == pytest.approx(0.4)  # lowest of the tie 0.4, 0.5
    assert result["max_fbeta"] == pytest.approx(fb(1.0, 0.75))  # 0.975 / 1.05
    assert result["max_fbeta_threshold"] == pytest.approx(0.7)


def test_curves_match_explicit_thresholding() -> None:
    rng = np.random.default_rng(3)
    n = 16
    scores = SegmentationScores(n)
    images = [(rng.random((9, 7)).astype(np.float32), rng.random((9, 7)) > 0.6) for _ in range(3)]
    for pred, gt in images:
        scores.add(pred, gt)
    curves = scores.curves()
    for k, t in enumerate(np.arange(n) / n):
        p = np.mean([precision_jaccard(pred > t, gt)[0] for pred, gt in images])
        r = np.mean([np.count_nonzero((pred > t) & gt) / np.count_nonzero(gt) for pred, gt in images])
        j = np.mean([iou(pred > t, gt) for pred, gt in images])
        assert curves["precision"][k] == pytest.approx(p)
        assert curves["recall"][k] == pytest.approx(r)
        assert curves["iou"][k] == pytest.approx(j)
        assert curves["fbeta"][k] == pytest.approx(fb(p, r) if p + r > 0 else 0.0)


def test_half_size_prediction_is_resized_to_gt() -> None:
    gt = np.zeros((8, 8), np.uint8)
    gt[:4] = 255
    pred = np.zeros((4, 4), np.uint8)
    pred[:2] = 255
    # Upsampled rows 1, 1, 1, .75, .25, 0, 0, 0 (see test_mae_and_iou_resize_the_prediction):
    # > 0.5 is exactly the gt, MAE = 0.0625.
    result = evaluate_pairs([(pred, gt)])
    assert result["mae"] == pytest.approx(0.0625)
    assert result["max_fbeta"] == pytest.approx(1.0)
    assert result["max_mean_iou"] == pytest.approx(1.0)
    assert result["corloc"] == 1.0 and result["precision"] == 1.0 and result["jaccard"] == 1.0


def test_empty_ground_truth_conventions() -> None:
    empty = np.zeros((4, 4), np.uint8)
    # Nothing to find and nothing found: P = R = IoU = 1, CorLoc hit.
    both_empty = evaluate_pairs([(empty.astype(np.float32), empty)])
    assert both_empty["max_fbeta"] == pytest.approx(1.0)
    assert both_empty["max_mean_iou"] == 1.0 and both_empty["corloc"] == 1.0
    assert both_empty["precision"] == 1.0 and both_empty["jaccard"] == 1.0
    # A false detection on an empty gt: P = 0, R = 1 -> F = 0, IoU = 0, CorLoc miss.
    false_alarm = evaluate_pairs([(np.ones((4, 4), np.float32), empty)])
    assert false_alarm["max_fbeta"] == 0.0
    assert false_alarm["max_mean_iou"] == 0.0 and false_alarm["corloc"] == 0.0


def test_accumulator_equals_evaluate_pairs_and_handles_no_images() -> None:
    gt = columns(0, 1)
    pairs = [(columns(1, 2).astype(np.float32), gt), (gt * 0.9, gt)]
    scores = SegmentationScores()
    for pred, g in pairs:
        scores.add(pred, g)
    assert scores.result() == evaluate_pairs(iter(pairs))
    assert scores.result()["n_images"] == 2

    empty = SegmentationScores().result()
    assert empty["n_images"] == 0
    assert math.isnan(empty["max_fbeta"]) and math.isnan(empty["corloc"])
    assert set(empty) == set(scores.result()) == {
        "n_images", "max_fbeta", "max_fbeta_threshold", "mae", "max_mean_iou",
        "max_mean_iou_threshold", "corloc", "precision", "jaccard",
    }

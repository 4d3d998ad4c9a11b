"""Exact checks of ussl_core.postprocess on hand-made masks and a synthetic image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ussl_core.postprocess import (
    BoxSettings,
    box_iou,
    boxes_from_mask,
    cutout_rgba,
    grabcut_refine,
    grabcut_seeds,
    mask_box,
    upsample_mask,
)


def two_components() -> np.ndarray:
    """10x10: a 3x3 block (9 px) at rows/cols 1..3 and a 2x2 block (4 px) at rows/cols 6..7."""
    soft = np.zeros((10, 10), np.float32)
    soft[1:4, 1:4] = 1.0
    soft[6:8, 6:8] = 0.9
    return soft


# --- upsample_mask ----------------------------------------------------------------------


def test_upsample_size_is_width_height_and_float32() -> None:
    out = upsample_mask(np.full((3, 5), 0.25, np.float32), (10, 6))
    assert out.shape == (6, 10)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 0.25)  # bilinear keeps a constant constant


def test_upsample_reads_uint8_as_0_255_and_clips_floats() -> None:
    np.testing.assert_allclose(upsample_mask(np.full((2, 2), 51, np.uint8), (4, 4)), 0.2)
    out = upsample_mask(np.array([[-1.0, 2.0]]), (2, 1))
    np.testing.assert_array_equal(out, [[0.0, 1.0]])


def test_upsample_is_bilinear() -> None:
    # 1x2 [0, 1] -> 1x4: pixel centres map to source x = -0.25, 0.25, 0.75, 1.25
    # (clamped at the border) -> 0, 0.25, 0.75, 1.
    out = upsample_mask(np.array([[0.0, 1.0]], np.float32), (4, 1))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])


def test_upsample_returns_a_copy_at_same_size() -> None:
    soft = np.full((2, 2), 0.5, np.float32)
    out = upsample_mask(soft, (2, 2))
    out[:] = 0
    assert soft[0, 0] == 0.5


# --- boxes_from_mask --------------------------------------------------------------------


def test_boxes_largest_and_all() -> None:
    soft = two_components()
    assert boxes_from_mask(soft) == [(1, 1, 4, 4)]
    assert boxes_from_mask(soft, settings=BoxSettings(mode="all")) == [(1, 1, 4, 4), (6, 6, 8, 8)]


def test_boxes_min_area_drops_small_components() -> None:
    soft = two_components()
    # 4 px < 5 <= 9 px: only the big one is left; 10 > 9 px: nothing is left.
    assert boxes_from_mask(soft, settings=BoxSettings(mode="all", min_area=5)) == [(1, 1, 4, 4)]
    assert boxes_from_mask(soft, settings=BoxSettings(min_area=10)) == []


def test_boxes_threshold_is_strict() -> None:
    soft = two_components()
    # The 0.9 block is not > 0.9, so only the 1.0 block passes.
    assert boxes_from_mask(soft, settings=BoxSettings(threshold=0.9, mode="all")) == [(1, 1, 4, 4)]
    assert boxes_from_mask(np.full((4, 4), 0.5)) == []


def test_boxes_are_8_connected() -> None:
    soft = np.zeros((5, 5), np.uint8)
    soft[1, 1] = soft[2, 2] = soft[3, 3] = 255  # a diagonal line is one component
    assert boxes_from_mask(soft, settings=BoxSettings(mode="all")) == [(1, 1, 4, 4)]


def test_boxes_in_image_coordinates() -> None:
    # 5x5 block at rows/cols 1..2 upsampled x2: destination column 2 samples source 0.75
    # (value 0.75 > 0.5), column 1 samples 0.25 (no), column 5 samples 2.25 (0.75, yes),
    # column 6 samples 2.75 (0.25, no); corner (2, 2) is 0.75 * 0.75 = 0.5625 > 0.5.
    soft = np.zeros((5, 5), np.float32)
    soft[1:3, 1:3] = 1.0
    assert boxes_from_mask(soft, image_size=(10, 10)) == [(2, 2, 6, 6)]


def test_box_settings_validate_mode() -> None:
    with pytest.raises(ValueError):
        BoxSettings(mode="biggest")


# --- mask_box / box_iou -----------------------------------------------------------------


def test_mask_box() -> None:
    binary = np.zeros((6, 8), np.uint8)
    assert mask_box(binary) is None
    binary[2, 3] = 255
    assert mask_box(binary) == (3, 2, 4, 3)
    binary[4, 6] = 1
    assert mask_box(binary) == (3, 2, 7, 5)
    assert mask_box(binary.astype(bool)) == (3, 2, 7, 5)


def test_box_iou_exact() -> None:
    assert box_iou((0, 0, 4, 4), (0, 0, 4, 4)) == 1.0
    # 2x2 overlap = 4; union = 16 + 16 - 4 = 28.
    assert box_iou((0, 0, 4, 4), (2, 2, 6, 6)) == pytest.approx(4 / 28)
    # containment: 4 / 16.
    assert box_iou((0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(0.25)
    # inclusive-exclusive boxes that touch share no pixel.
    assert box_iou((0, 0, 2, 2), (2, 0, 4, 2)) == 0.0
    assert box_iou((0, 0, 2, 2), (5, 5, 7, 7)) == 0.0
    assert box_iou(None, (0, 0, 1, 1)) == 0.0


# --- grabcut ----------------------------------------------------------------------------


def test_grabcut_seed_mapping() -> None:
    soft = np.array([[0.1, 0.2, 0.3, 0.6, 0.8, 0.9]], np.float32)
    expected = [cv2.GC_BGD, cv2.GC_BGD, cv2.GC_PR_BGD, cv2.GC_PR_FGD, cv2.GC_FGD, cv2.GC_FGD]
    np.testing.assert_array_equal(grabcut_seeds(soft, 0.8, 0.2), [expected])


def synthetic_scene() -> tuple[np.ndarray, np.ndarray]:
    """Noisy red square (rows/cols 40..79) on a blue/green striped, noisy background."""
    rng = np.random.default_rng(7)
    image = np.zeros((120, 120, 3), np.float64)
    stripes = (np.arange(120) // 6) % 2 == 0
    image[:, stripes] = (30, 160, 60)
    image[:, ~stripes] = (20, 60, 170)
    image[40:80, 40:80] = (210, 40, 30)
    image += rng.normal(0, 12, image.shape)
    truth = np.zeros((120, 120), bool)
    truth[40:80, 40:80] = True
    return np.clip(image, 0, 255).astype(np.uint8), truth


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def test_grabcut_recovers_square_from_blurry_oversized_mask() -> None:
    image, truth = synthetic_scene()
    # A soft mask at half resolution, too big (rows/cols 34..85 at full size) and blurred
    # (sigma 5 half-res px): its confident core (>= 0.8) lies inside the square, but the
    # 0.5 level set is far too big (Jaccard ~0.68); GrabCut must fix it from the colours.
    rough = np.zeros((60, 60), np.float32)
    rough[17:43, 17:43] = 1.0
    soft = cv2.GaussianBlur(rough, (0, 0), 5)
    assert jaccard(upsample_mask(soft, (120, 120)) > 0.5, truth) < 0.75

    refined = grabcut_refine(image, soft)
    assert refined.dtype == np.uint8 and refined.shape == (120, 120)
    assert set(np.unique(refined)) <= {0, 1}
    assert jaccard(refined > 0, truth) > 0.9


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_grabcut_falls_back_without_both_classes(value: float) -> None:
    image, _ = synthetic_scene()
    refined = grabcut_refine(image, np.full((30, 30), value, np.float32))
    assert refined.shape == (120, 120) and refined.dtype == np.uint8
    assert np.all(refined == int(value > 0.5))


# --- cutout_rgba ------------------------------------------------------------------------


def test_cutout_alpha_from_soft_and_binary_masks() -> None:
    image = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    soft = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    out = cutout_rgba(image, soft)
    assert out.shape == (2, 2, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, :3], image)
    # 0.5 * 255 = 127.5 -> 128, 0.25 * 255 = 63.75 -> 64.
    np.testing.assert_array_equal(out[:, :, 3], [[0, 128], [255, 64]])
    binary01 = np.array([[0, 1], [1, 0]], np.uint8)  # as grabcut_refine returns
    np.testing.assert_array_equal(cutout_rgba(image, binary01)[:, :, 3], [[0, 255], [255, 0]])
    np.testing.assert_array_equal(cutout_rgba(image, binary01 > 0)[:, :, 3], [[0, 255], [255, 0]])
    uint8_soft = np.array([[0, 100], [255, 7]], np.uint8)
    np.testing.assert_array_equal(cutout_rgba(image, uint8_soft)[:, :, 3], uint8_soft)


def test_cutout_resizes_mask_to_image() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    out = cutout_rgba(image, np.ones((2, 3), np.float32))
    assert out.shape == (4, 6, 4)
    assert np.all(out[:, :, 3] == 255)

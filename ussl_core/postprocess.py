"""Turning soft foreground masks into boxes, refined binary masks and cut-outs.

Conventions shared by the whole package:

* a soft mask is HxW float in [0, 1], or uint8 0..255 (divided by 255);
* a binary / ground-truth mask is HxW with foreground = value > 0;
* a box is ``(x0, y0, x1, y1)`` in pixels, inclusive-exclusive (``x1`` = last column + 1);
* sizes are ``(width, height)`` as in OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ussl_core.settings import check, option

Box = tuple[int, int, int, int]

_MODES = ("largest", "all")
# OpenCV's GrabCut fits a 5-component GMM per class; k-means needs at least that many samples.
_GMM_COMPONENTS = 5


@dataclass(frozen=True)
class BoxSettings:
    """How a soft mask becomes boxes.

    threshold: a pixel is foreground when its soft value is strictly greater than this.
    mode: "largest" keeps the box of the largest component, "all" keeps every component.
    min_area: components with fewer pixels than this are ignored.
    """

    threshold: float = option(0.5, "a pixel is foreground above this soft value", low=0, high=1)
    mode: str = option("largest", "largest: the box of the largest component; all: every "
                                  "component's", choices=_MODES)
    min_area: int = option(1, "components with fewer pixels are ignored", low=1)

    def __post_init__(self) -> None:
        check(self)


def _squeeze_2d(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f"{what} must be HxW, got shape {mask.shape}")
    return mask


def as_soft_mask(soft: np.ndarray) -> np.ndarray:
    """Soft mask as float32 HxW in [0, 1]; uint8 is read as 0..255, bool as 0/1."""
    soft = _squeeze_2d(soft, "soft mask")
    if soft.dtype == np.uint8:
        return soft.astype(np.float32) / np.float32(255.0)
    return np.clip(soft.astype(np.float32, copy=False), 0.0, 1.0)


def as_binary_mask(mask: np.ndarray) -> np.ndarray:
    """Binary / ground-truth mask as bool HxW (foreground = value > 0)."""
    return _squeeze_2d(mask, "binary mask") > 0


def upsample_mask(soft: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a soft mask to ``size = (width, height)`` bilinearly; float32 in [0, 1].

    Works for shrinking too; a mask already at ``size`` is only converted.
    """
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive (width, height), got {size}")
    soft = as_soft_mask(soft)  # always a fresh array, so returning it as is is safe
    if soft.shape == (height, width):
        return soft
    resized = cv2.resize(soft, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0)


def _soft_at(soft: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
    return as_soft_mask(soft) if image_size is None else upsample_mask(soft, image_size)


def boxes_from_mask(
    soft: np.ndarray,
    image_size: tuple[int, int] | None = None,
    settings: BoxSettings = BoxSettings(),
) -> list[Box]:
    """Tight boxes of the 8-connected components of ``soft > settings.threshold``.

    The mask is first resized to ``image_size = (width, height)`` when given, so the boxes
    are in that image's pixels. "largest" gives ``[box]`` of the component with most pixels
    (``[]`` if none); "all" gives every component, largest first (ties in label order).
    """
    binary = (_soft_at(soft, image_size) > settings.threshold).astype(np.uint8)
    n_labels, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    stats = stats[1:]  # label 0 is the background
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= settings.min_area)
    order = keep[np.argsort(-areas[keep], kind="stable")]
    if settings.mode == "largest":
        order = order[:1]
    boxes = []
    for x, y, w, h in stats[order, :4]:
        boxes.append((int(x), int(y), int(x + w), int(y + h)))
    return boxes


def mask_box(binary: np.ndarray) -> Box | None:
    """Tight box around every pixel > 0, or None when there is none."""
    binary = as_binary_mask(binary)
    rows = np.flatnonzero(binary.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(binary.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _box_area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def box_iou(a: Box | None, b: Box | None) -> float:
    """Intersection over union of two inclusive-exclusive boxes; 0.0 if either is None or empty."""
    if a is None or b is None:
        return 0.0
    inter = _box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _box_area(a) + _box_area(b) - inter
    return inter / union if union > 0 else 0.0


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from RGB/RGBA/grey, uint8 or float (float in [0, 1] is scaled by 255)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        scale = 255.0 if image.size and float(np.max(image)) <= 1.0 else 1.0
        image = np.clip(np.rint(image.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def _image_size(image: np.ndarray) -> tuple[int, int]:
    return image.shape[1], image.shape[0]


def grabcut_seeds(soft: np.ndarray, fg_threshold: float, bg_threshold: float) -> np.ndarray:
    """GrabCut label map from a soft mask (already at image size).

    soft >= fg_threshold -> GC_FGD (definite foreground)
    soft <= bg_threshold -> GC_BGD (definite background)
    otherwise            -> GC_PR_FGD if soft > 0.5, else GC_PR_BGD (GrabCut may relabel these)
    """
    seeds = np.where(soft > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    seeds[soft <= bg_threshold] = cv2.GC_BGD
    seeds[soft >= fg_threshold] = cv2.GC_FGD
    return seeds


def _both_classes(seeds: np.ndarray) -> bool:
    foreground = np.count_nonzero((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD))
    return _GMM_COMPONENTS <= foreground <= seeds.size - _GMM_COMPONENTS


def grabcut_refine(
    image_rgb: np.ndarray,
    soft: np.ndarray,
    iterations: int = 5,
    fg_threshold: float = 0.8,
    bg_threshold: float = 0.2,
) -> np.ndarray:
    """Binary uint8 0/1 mask at image size from GrabCut seeded by ``soft`` (see grabcut_seeds).

    When the seeds do not give GrabCut enough pixels of both classes to fit its colour models
    (e.g. an all-zero or all-one soft mask), the soft mask thresholded at 0.5 is returned.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not bg_threshold < fg_threshold:
        raise ValueError(f"need bg_threshold < fg_threshold, got {bg_threshold} and {fg_threshold}")
    image = _as_rgb_uint8(image_rgb)
    soft = upsample_mask(soft, _image_size(image))
    fallback = (soft > 0.5).astype(np.uint8)
    seeds = grabcut_seeds(soft, fg_threshold, bg_threshold)
    if not _both_classes(seeds):
        return fallback
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    try:
        # GrabCut's colour models do not care about channel order, so RGB is passed as is.
        seeds, _, _ = cv2.grabCut(
            image, seeds, None, bgd_model, fgd_model, int(iterations), cv2.GC_INIT_WITH_MASK
        )
    except cv2.error:
        return fallback
    return ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.uint8)


GRABCUT_MAX_SIDE = 1024   # GrabCut runs at most this large; its mask is scaled up to the image


def grabcut_cutout(image_rgb: np.ndarray, soft: np.ndarray, max_side: int = GRABCUT_MAX_SIDE) -> np.ndarray:
    """The RGBA cut-out of an image by GrabCut seeded with `soft` (see grabcut_refine). GrabCut
    runs on the image scaled down to at most `max_side` (its cost grows with the pixels), and
    its mask is scaled up to the image."""
    image = _as_rgb_uint8(image_rgb)
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(w, h))
    small = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cutout_rgba(image, grabcut_refine(small, upsample_mask(soft, (w, h))))


def _alpha_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    mask = _squeeze_2d(mask, "mask")
    # A uint8 mask holding only 0/1 is a binary mask (as grabcut_refine returns), not 0..255.
    if mask.dtype == np.uint8 and mask.size and int(mask.max()) <= 1:
        mask = mask.astype(np.float32)
    return upsample_mask(mask, size)


def cutout_rgba(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HxWx4 uint8 image whose alpha is ``mask * 255`` (mask soft or binary, resized to the image).

    A bool mask or a uint8 mask containing only 0 and 1 is taken as binary; any other uint8
    mask as 0..255.
    """
    image = _as_rgb_uint8(image_rgb)
    alpha = np.rint(_alpha_mask(mask, _image_size(image)) * 255.0).astype(np.uint8)
    return np.dstack([image, alpha])

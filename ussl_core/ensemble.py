"""Ensembles of the students (Multi-Net, MultiSelect-Net) and EvalSeg-Net's targets.

Multi-Net is the pixel-wise product of the students' soft masks at a common resolution
(Mean-Net, our addition, their pixel-wise mean);
EvalSeg-Net learns to predict the cosine similarity between a student's mask and the
Multi-Net mask; MultiSelect-Net keeps, per image, the student mask EvalSeg-Net rates highest.
Pure NumPy/OpenCV: the Keras parts live in predict.py and training.py.
"""

from __future__ import annotations

import cv2
import numpy as np

from ussl_core.errors import UsslError

COMMON_SIZE = (128, 128)  # (width, height) at which students' masks are combined
ENSEMBLES = ("multi", "mean", "multiselect")  # the methods that combine several students


def resize_mask(mask: np.ndarray, size) -> np.ndarray:
    """A soft mask resized (bilinear) to size = (width, height) or a square side."""
    if isinstance(size, int):
        size = (size, size)
    mask = np.asarray(mask, np.float32)
    if mask.shape[:2] == (size[1], size[0]):
        return mask
    return cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)


def multi_net(masks: list[np.ndarray]) -> np.ndarray:
    """Pixel-wise product of soft masks of the same size."""
    if not masks:
        raise ValueError("Multi-Net needs at least one mask")
    out = np.ones_like(masks[0], dtype=np.float32)
    for m in masks:
        out *= np.clip(m, 0.0, 1.0)
    return out


def mean_net(masks: list[np.ndarray]) -> np.ndarray:
    """Pixel-wise mean of soft masks of the same size (an ensemble that votes, where Multi-Net's
    product requires every student to agree)."""
    if not masks:
        raise ValueError("Mean-Net needs at least one mask")
    return np.mean([np.clip(m, 0.0, 1.0) for m in masks], axis=0, dtype=np.float32)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two masks seen as vectors; 0 when either is all zero."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


def multiselect(masks: dict[str, np.ndarray], scores: dict[str, float]) -> tuple[str, np.ndarray]:
    """The student mask with the highest EvalSeg-Net score."""
    best = max(scores, key=scores.get)
    return best, masks[best]


def ensemble_mask(masks: dict[str, np.ndarray], scores: dict[str, float],
                  method: str) -> tuple[np.ndarray, str | None]:
    """The soft mask one method makes of every student's mask (all at one size), and the
    student MultiSelect-Net picked (None for the other methods).

    method: "multi" (Multi-Net), "mean" (Mean-Net), "multiselect" (needs EvalSeg-Net `scores`)
    or a student's name.
    """
    if method == "multi":
        return multi_net(list(masks.values())), None
    if method == "mean":
        return mean_net(list(masks.values())), None
    if method == "multiselect":
        if not scores:
            raise UsslError("MultiSelect-Net needs an EvalSeg-Net; train one with `ussl evalseg`")
        chosen, mask = multiselect(masks, scores)
        return mask, chosen
    if method not in masks:
        raise UsslError(f"no student {method!r} among {', '.join(masks)}; "
                        "use multi, mean, multiselect or one of these")
    return masks[method], None

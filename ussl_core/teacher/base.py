"""The small interface every teacher implements: one shot of frames in, soft masks out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict
from typing import Any, ClassVar

import numpy as np


class Teacher(ABC):
    """Turns the frames of one shot (N x H x W x 3 uint8 RGB) into soft masks (N x H x W, [0, 1])."""

    name: ClassVar[str]
    settings_type: ClassVar[type]

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if settings is not None else self.settings_type()

    @abstractmethod
    def shot_masks(self, frames: np.ndarray) -> np.ndarray: ...

    def settings_dict(self) -> dict:
        return asdict(self.settings)


def minmax_per_frame(masks: np.ndarray) -> np.ndarray:
    """Min-max normalise each frame of N x H x W to [0, 1]; a constant frame becomes all zero."""
    flat = masks.reshape(len(masks), -1)
    lo = flat.min(axis=1)[:, None, None]
    span = (flat.max(axis=1)[:, None, None] - lo)
    out = np.zeros_like(masks, dtype=np.float32)
    np.divide(masks - lo, span, out=out, where=span > 0)
    return out


def centre_prior(height: int, width: int, sigma_ratio: float) -> np.ndarray:
    """Centred Gaussian exp(-d^2 / 2 sigma^2) with sigma = min(H, W) * sigma_ratio."""
    sigma = min(height, width) * sigma_ratio
    ys = (np.arange(height, dtype=np.float32) - (height - 1) / 2) ** 2
    xs = (np.arange(width, dtype=np.float32) - (width - 1) / 2) ** 2
    return np.exp(-(ys[:, None] + xs[None, :]) / (2 * sigma * sigma)).astype(np.float32)


def mask_score(mask: np.ndarray) -> float:
    """Generation-1 selection score: mean of the non-zero pixels (0 for an empty mask)."""
    nonzero = mask[mask > 0]
    return float(nonzero.mean()) if nonzero.size else 0.0


def mask_scores(masks: np.ndarray) -> list[float]:
    """`mask_score` of each N x H x W uint8 mask (0..255), read as values in [0, 1]."""
    flat = masks.reshape(len(masks), -1)
    counts = np.count_nonzero(flat, axis=1)
    sums = flat.sum(axis=1, dtype=np.int64) / 255.0
    return [float(s / c) if c else 0.0 for s, c in zip(sums, counts)]

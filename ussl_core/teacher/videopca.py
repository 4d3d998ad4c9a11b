"""VideoPCA (Stretcu & Leordeanu 2015) as the generation-1 teacher of Croitoru et al.

Per shot: PCA over the frames models the background; the reconstruction error marks what
moves; seeds from the blurred error times a centre prior train foreground and background
colour histograms over the whole shot; the per-pixel colour posterior times the centre prior,
cleaned by hysteresis, is the soft mask. Defaults follow the authors' lab's own port.

Speed matters (it should hide behind JPEG decoding): float32 throughout, PCA through the
N x N Gram matrix, OpenCV's separable Gaussian, and a lookup table from OpenCV's 8-bit HSV
to the colour bin instead of trigonometry per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ussl_core.errors import require
from ussl_core.settings import check, option
from ussl_core.teacher.base import Teacher, centre_prior, minmax_per_frame


@dataclass(frozen=True)
class VideoPCASettings:
    n_components: int = option(3, "principal components of the shot's frames that model the "
                                  "background", low=1)
    blur_sigma: float = option(5.0, "Gaussian smoothing of the reconstruction error (pixels)", low=0)
    blur_ksize: int = option(15, "size of that smoothing kernel (an odd number of pixels)", low=1)
    centre_sigma_ratio: float = option(1.0 / 3.0, "the centre prior's sigma as a share of the "
                                                  "frame's shorter side", low=0, low_open=True)
    seed_threshold: float = option(0.5, "soft value above which a pixel seeds the foreground "
                                        "colour model", low=0, high=1, high_open=True)
    x_bins: int = option(100, "colour histogram bins along (S cos H + 1) / 2", low=1)
    y_bins: int = option(25, "colour histogram bins along (S sin H + 1) / 2", low=1)
    value_bins: int = option(10, "colour histogram bins of brightness", low=1)
    hysteresis_high: float = option(0.8, "soft value that starts a foreground region", low=0, high=1)
    hysteresis_low: float = option(0.5, "soft value that continues one (at most the high one)",
                                   low=0, high=1)
    # True: each histogram normalised to sum 1 before p = Hfg / (Hfg + Hbg) (equal priors), as
    # in the lab's port. False (raw counts) drowns the few seeds: mean IoU 0.007 on davis2016-train.
    normalise_histograms: bool = option(True, "equal priors of foreground and background colours")

    def __post_init__(self) -> None:
        check(self)
        require(self.blur_ksize % 2 == 1, f"blur_ksize must be an odd number, not {self.blur_ksize}")
        require(self.hysteresis_low <= self.hysteresis_high,
                f"hysteresis_low must be at most hysteresis_high ({self.hysteresis_high:g}), "
                f"not {self.hysteresis_low:g}")


class VideoPCATeacher(Teacher):
    name = "videopca"
    settings_type = VideoPCASettings

    def shot_masks(self, frames: np.ndarray) -> np.ndarray:
        s = self.settings
        n, h, w, _ = frames.shape
        centre = centre_prior(h, w, s.centre_sigma_ratio)
        error = reconstruction_error(frames, s.n_components)
        _minmax_shot(error)
        # Seeds are relative to each frame: the top of its own blurred, centred error map.
        for i in range(n):
            cv2.GaussianBlur(error[i], (s.blur_ksize, s.blur_ksize), s.blur_sigma, dst=error[i])
        error *= centre
        seeds = above_per_frame(error, s.seed_threshold)
        del error
        n_bins = s.x_bins * s.y_bins * s.value_bins
        bins = colour_bins(frames, s.x_bins, s.y_bins, s.value_bins)
        fg = _histogram(bins, n_bins, seeds)
        bg = _histogram(bins, n_bins) - fg
        if not fg.any():
            return np.zeros((n, h, w), np.float32)
        if s.normalise_histograms:
            fg /= fg.sum()
            bg /= max(bg.sum(), 1.0)
        total = fg + bg
        posterior_of_bin = np.divide(fg, total, out=np.zeros_like(fg), where=total > 0)
        posterior = posterior_of_bin.take(bins)
        centred = posterior * centre
        high = above_per_frame(centred, s.hysteresis_high)
        low = above_per_frame(centred, s.hysteresis_low)
        for i in range(n):
            posterior[i] *= hysteresis_regions(low[i], high[i])
        return minmax_per_frame(posterior)


def above_per_frame(values: np.ndarray, fraction: float) -> np.ndarray:
    """values > fraction once each frame is min-max normalised, without normalising."""
    flat = values.reshape(len(values), -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    cut = (lo + fraction * (hi - lo))[:, None, None]
    return (values > cut) & (hi > lo)[:, None, None]


def reconstruction_error(frames: np.ndarray, n_components: int) -> np.ndarray:
    """Per-pixel L2 (over colour) error of reconstructing each frame from the top PCA components.

    In grey levels: the caller normalises it over the shot, so the scale does not matter.
    """
    n, h, w, c = frames.shape
    x = frames.reshape(n, -1).astype(np.float32)
    x -= x.mean(axis=0)
    k = min(n_components, n - 1)
    if k > 0:
        gram = x @ x.T  # N x N: its eigenvectors span the same subspace as pixel-space PCA
        _, vectors = np.linalg.eigh(gram.astype(np.float64))
        basis = vectors[:, -k:].astype(np.float32)
        x -= basis @ (basis.T @ x)
    residual = x.reshape(n, h * w, c)
    # Per-channel squares added explicitly: numpy's sum over a length-3 last axis is 7x slower.
    squared = residual[:, :, 0] ** 2
    for channel in range(1, c):
        squared += residual[:, :, channel] ** 2
    return np.sqrt(squared, out=squared).reshape(n, h, w)


def _minmax_shot(values: np.ndarray) -> None:
    """Min-max normalise in place over all frames of the shot."""
    lo, hi = float(values.min()), float(values.max())
    values -= lo
    if hi > lo:
        values *= 1.0 / (hi - lo)


@lru_cache(maxsize=8)
def _bin_tables(x_bins: int, y_bins: int, value_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables from OpenCV 8-bit HSV (H 0..179, S 0..255, V 0..255) to the colour bin."""
    hue = np.arange(180, dtype=np.float64)[:, None] * (2 * np.pi / 180)
    sat = np.arange(256, dtype=np.float64)[None, :] / 255.0
    x = np.minimum(((sat * np.cos(hue) + 1) / 2 * x_bins).astype(np.int32), x_bins - 1)
    y = np.minimum(((sat * np.sin(hue) + 1) / 2 * y_bins).astype(np.int32), y_bins - 1)
    dtype = np.uint16 if x_bins * y_bins * value_bins <= 65536 else np.int32
    hue_sat = ((x * y_bins + y) * value_bins).astype(dtype)
    val = np.arange(256, dtype=np.float64) / 255.0
    value = np.minimum((val * value_bins).astype(np.int32), value_bins - 1).astype(dtype)
    return hue_sat, value


def colour_bins(frames: np.ndarray, x_bins: int, y_bins: int, value_bins: int) -> np.ndarray:
    """Colour bin index of every pixel, N x H x W, in the HSV disc quantisation.

    uint16 when the bins fit (25,000 by default), so that OpenCV can histogram them.
    """
    n, h, w, _ = frames.shape
    hsv = cv2.cvtColor(np.ascontiguousarray(frames).reshape(n * h, w, 3), cv2.COLOR_RGB2HSV)
    hue_sat, value = _bin_tables(x_bins, y_bins, value_bins)
    hue_sat_key = (hsv[..., 0].astype(np.int32) << 8) | hsv[..., 1]
    return (hue_sat.ravel().take(hue_sat_key) + value.take(hsv[..., 2])).reshape(n, h, w)


def _histogram(bins: np.ndarray, n_bins: int, where: np.ndarray | None = None) -> np.ndarray:
    """Counts of each bin (where `where` is set); cv2.calcHist is ~10x faster than bincount."""
    if bins.dtype == np.uint16:
        flat = bins.reshape(-1, bins.shape[-1])
        mask = None if where is None else where.reshape(flat.shape).view(np.uint8)
        return cv2.calcHist([flat], [0], mask, [n_bins], [0, n_bins]).ravel()
    selected = bins if where is None else bins[where]
    return np.bincount(selected.ravel(), minlength=n_bins).astype(np.float32)


def hysteresis_regions(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The 8-connected regions of the `low` mask that contain a pixel of the `high` mask."""
    if not high.any():
        return np.zeros(low.shape, bool)
    count, labels = cv2.connectedComponents(low.view(np.uint8), connectivity=8)
    strong = np.zeros(count, bool)
    strong[labels[high]] = True
    strong[0] = False
    return strong.take(labels)

"""Generated videos with known foreground masks: exact tests and the embedded demo.

The repository ships no third-party media. A sample video is a static textured background
with mild lighting flicker and sensor noise, and one textured object moving across it; the
ground-truth mask of every frame is known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class SampleSpec:
    n_frames: int = 40
    width: int = 160
    height: int = 120
    object_scale: float = 0.22  # object radius as a share of the smaller side
    noise: float = 3.0          # sensor noise, grey levels
    seed: int = 0


def _smooth_texture(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency colour texture in 0..255: random coarse grid upsampled smoothly."""
    coarse = rng.uniform(0, 255, size=(cells, max(2, cells * width // height), 3)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255)


def generate_video(spec: SampleSpec = SampleSpec()) -> tuple[np.ndarray, np.ndarray]:
    """Return (frames N x H x W x 3 uint8 RGB, masks N x H x W bool) of one sample shot."""
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    background = 0.6 * _smooth_texture(rng, h, w, 6) + 0.4 * _smooth_texture(rng, h, w, 24)
    radius = spec.object_scale * min(h, w)
    # The object has its own saturated hue, so colour models can tell it from the background.
    hue = rng.uniform(0, 180)
    object_colour = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    object_texture = object_colour * (0.8 + 0.2 * _smooth_texture(rng, h, w, 8) / 255.0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # A path around the image centre, where real objects tend to be.
    t = np.linspace(0, 1, spec.n_frames)
    phase = rng.uniform(0, 2 * np.pi)
    cx = w / 2 + 0.25 * w * np.sin(2 * np.pi * t + phase)
    cy = h / 2 + 0.15 * h * np.sin(4 * np.pi * t + phase)
    frames = np.empty((spec.n_frames, h, w, 3), np.uint8)
    masks = np.empty((spec.n_frames, h, w), bool)
    for i in range(spec.n_frames):
        ax, ay = radius * (1.0 + 0.15 * np.sin(3 * np.pi * t[i])), radius * 0.8
        inside = ((xs - cx[i]) / ax) ** 2 + ((ys - cy[i]) / ay) ** 2 <= 1.0
        gain = 1.0 + 0.03 * np.sin(2 * np.pi * 3 * t[i])  # lighting flicker
        frame = background * gain
        frame[inside] = object_texture[inside]
        frame += rng.normal(0, spec.noise, frame.shape)
        frames[i] = frame.clip(0, 255).astype(np.uint8)
        masks[i] = inside
    return frames, masks


def write_frame_folder(folder: Path, frames: np.ndarray, masks: np.ndarray | None = None,
                       gt_folder: Path | None = None, ext: str = ".jpg") -> None:
    """Write frames as NNNNN<ext> (and masks as NNNNN.png, 0/255) like a DAVIS shot."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}{ext}"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if masks is not None and gt_folder is not None:
        gt_folder.mkdir(parents=True, exist_ok=True)
        for i, mask in enumerate(masks):
            cv2.imwrite(str(gt_folder / f"{i:05d}.png"), mask.astype(np.uint8) * 255)


def write_sample_davis(root: Path, n_videos: int = 3, spec: SampleSpec = SampleSpec()) -> Path:
    """A DAVIS-layout root (JPEGImages/<res>/<shot>, Annotations/<res>/<shot>) of sample videos."""
    res = f"{spec.height}p"
    for v in range(n_videos):
        frames, masks = generate_video(SampleSpec(**{**spec.__dict__, "seed": spec.seed + v}))
        name = f"sample-{v:02d}"
        write_frame_folder(root / "JPEGImages" / res / name, frames, masks,
                           root / "Annotations" / res / name)
    return root

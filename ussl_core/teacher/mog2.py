"""OpenCV's MOG2 background subtractor as a second teacher, to compare teachers on the same videos."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ussl_core.settings import check, option
from ussl_core.teacher.base import Teacher, minmax_per_frame


@dataclass(frozen=True)
class MOG2Settings:
    var_threshold: float = option(16.0, "squared distance from the background model that makes "
                                        "a pixel foreground", low=0, low_open=True)
    learning_passes: int = option(1, "passes over the shot that learn the background before "
                                     "masking", low=1)
    blur_sigma: float = option(3.0, "softens the binary foreground into a soft mask (pixels)", low=0)

    def __post_init__(self) -> None:
        check(self)


class MOG2Teacher(Teacher):
    name = "mog2"
    settings_type = MOG2Settings

    def shot_masks(self, frames: np.ndarray) -> np.ndarray:
        s = self.settings
        subtractor = cv2.createBackgroundSubtractorMOG2(
            history=max(len(frames), 2), varThreshold=s.var_threshold, detectShadows=False)
        bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
        for _ in range(s.learning_passes):
            for frame in bgr:
                subtractor.apply(frame)
        masks = np.empty(frames.shape[:3], np.float32)
        for i, frame in enumerate(bgr):
            foreground = subtractor.apply(frame, learningRate=0).astype(np.float32) / 255.0
            masks[i] = cv2.GaussianBlur(foreground, (0, 0), s.blur_sigma) if s.blur_sigma else foreground
        return minmax_per_frame(masks)

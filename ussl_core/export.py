"""Writing a producer's masks as 8-bit PNGs at each frame's original size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ussl_core.atomic import atomic_path
from ussl_core.diskspace import ensure_space
from ussl_core.errors import UsslError, describe_os_error
from ussl_core.postprocess import upsample_mask
from ussl_core.progress import CancelToken, Progress
from ussl_core.store import Project


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an 8-bit PNG (grey, RGB or RGBA given as RGB order), with a clear error on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise UsslError(f"{path}: could not encode the PNG")
    ensure_space(path.parent, data.nbytes, f"the image {path.name}")
    try:
        with atomic_path(path, "png") as tmp:   # never a half-written PNG under the final name
            data.tofile(tmp)
    except OSError as exc:
        raise UsslError(describe_os_error(exc)) from None


def soft_to_uint8(soft: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(soft, 0.0, 1.0) * 255).astype(np.uint8)


def export_masks(project: Project, producer_id: int, out: Path,
                 cancel: CancelToken | None = None) -> Iterator[Progress]:
    """Every mask of the producer as OUT/<video>/<frame>.png at the frame's original size."""
    videos = {v.id: v for v in project.videos()}
    frames = {f.id: f for f in project.frames()}
    masks = project.masks(producer_id)
    if not masks:
        raise UsslError(f"{project.root}: this producer has no masks to export")
    for done, (mask, soft) in enumerate(project.read_masks(masks), start=1):
        if cancel:
            cancel.raise_if_cancelled()
        video = videos[mask.video_id]
        frame = frames[mask.frame_id]
        full = upsample_mask(soft, (video.width, video.height))
        write_png(out / video.name / f"{frame.name}.png", soft_to_uint8(full))
        yield Progress(done, len(masks), f"{video.name}/{frame.name}", stage="export")

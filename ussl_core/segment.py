"""`ussl segment`: masks (and boxes, GrabCut) for images, image folders and videos."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ussl_core.atomic import atomic_path, write_text_atomic
from ussl_core.cluster import ClusterSpec, open_pool
from ussl_core.diskspace import ensure_space
from ussl_core.errors import MediaError, UsslError, describe_os_error
from ussl_core.export import soft_to_uint8, write_png
from ussl_core.media import is_image_file, is_video_file, list_image_files, open_source, read_image
from ussl_core.postprocess import BoxSettings, boxes_from_mask, grabcut_cutout
from ussl_core.progress import CancelToken, Progress
from ussl_core.settings import check, option
from ussl_core.testhooks import write_fault

BATCH = 16


@dataclass(frozen=True)
class SegmentSettings:
    """How images are segmented, by `ussl segment`, the Predict panel and the demo alike.

    method: "mean" (Mean-Net, the pixel-wise mean of the students), "multi" (Multi-Net, the
    paper's product), "multiselect" (MultiSelect-Net) or one student's name or architecture.
    The default is the method that won on the development data (docs/recipe.md): Mean-Net
    matches Multi-Net's max mean IoU and, at the product's own threshold, finds the object's box
    7 to 11 times as often (a product of five masks rarely exceeds 0.5).
    flip_average: each student also sees the mirrored image. Boxes are the components of the
    soft mask above `threshold` (the product's own 0.5).
    """
    method: str = option("mean", "mean, multi, multiselect, or one student's name or architecture")
    flip_average: bool = option(False, "each student also sees the mirrored image")
    threshold: float = option(0.5, "a pixel is foreground above this soft value", low=0, high=1,
                              high_open=True)

    def __post_init__(self) -> None:
        check(self)


def load_segmenter(model_or_project: Path | None, flip_average: bool = False):
    """A Segmenter from one .keras model, from a project's (or models folder's) latest
    generation, or (None) from the models shipped with ussl."""
    from ussl_core.predict import Segmenter

    if model_or_project is None:
        return Segmenter.builtin(flip_average)
    if model_or_project.suffix == ".keras":
        if not model_or_project.is_file():  # before TensorFlow starts (and prints its banner)
            raise UsslError(f"{model_or_project}: model file does not exist")
        return Segmenter([model_or_project], flip_average=flip_average)
    if model_or_project.is_dir():
        return Segmenter.from_project(model_or_project, flip_average=flip_average)
    raise UsslError(f"{model_or_project}: not a .keras model nor a project folder")


def is_model_or_project(path: Path) -> bool:
    """A .keras file, a project folder or a folder of trained models (what --model names)."""
    path = Path(path)
    if path.suffix == ".keras":
        return True
    return path.is_dir() and ((path / "project.sqlite").is_file() or (path / "models").is_dir()
                              or any(path.glob("*.keras")))


def _expand(inputs: list[Path]) -> tuple[list[Path], list[Path]]:
    images, videos = [], []
    for path in inputs:
        if path.is_dir():
            images += list_image_files(path)
        elif is_video_file(path):
            videos.append(path)
        elif is_image_file(path):
            images.append(path)
        else:
            raise MediaError(path, "not an image, a folder of images or a video file"
                             if path.exists() else "does not exist")
    return images, videos


def output_stems(paths: list[Path]) -> dict[Path, str]:
    """The output name of each input (its stem), with _2, _3 ... added to repeats, so that two
    inputs of the same name (a.png, x/a.jpg) never write over each other's outputs."""
    stems: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        stem, n = path.stem, 1
        while stem in taken:
            n += 1
            stem = f"{path.stem}_{n}"
        taken.add(stem)
        stems[path] = stem
    return stems


def write_boxes(folder: Path, boxes: dict[str, list]) -> list[Path]:
    """folder/boxes.json ({stem: [[x0, y0, x1, y1], ...]}) and boxes.csv, written atomically."""
    json_path, csv_path = folder / "boxes.json", folder / "boxes.csv"
    try:
        write_text_atomic(json_path, json.dumps({k: [list(b) for b in v] for k, v in boxes.items()},
                                                indent=1), point="boxes")
        with atomic_path(csv_path, "boxes") as tmp, tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "x0", "y0", "x1", "y1"])
            for stem, items in boxes.items():
                writer.writerows([stem, *box] for box in items)
    except OSError as exc:
        raise UsslError(describe_os_error(exc)) from None
    return [json_path, csv_path]


def segment_paths(model_or_project: Path | None, inputs: list[Path], out: Path,
                  settings: SegmentSettings = SegmentSettings(), boxes: bool = False,
                  grabcut: bool = False, cancel: CancelToken | None = None,
                  cluster: ClusterSpec | None = None) -> Iterator[Progress]:
    """Write OUT/<stem>.png (8-bit soft mask at the input's size) for every image, with `grabcut`
    its GrabCut cut-out OUT/<stem>.cutout.png, an overlay video OUT/<stem>.overlay.mp4 for every
    video, and with `boxes` OUT/boxes.json and boxes.csv (the Predict panel's export writes the
    same files). Inputs of the same name get _2, _3 ... The models: a .keras file, a project's
    latest generation, or (None) the ones shipped with ussl. `cluster`: batches of images and
    each video are segmented on Dask workers, which write their outputs into OUT (shared)."""
    images, videos = _expand(inputs)
    stems = output_stems(images + videos)
    # Loaded first: a model that does not load is refused before OUT is made.
    segmenter = load_segmenter(model_or_project, settings.flip_average) if cluster is None else None
    model = str(model_or_project.resolve()) if model_or_project is not None else None
    chunk = BATCH if cluster is None else CLUSTER_CHUNK
    target = str(out.resolve())
    tasks = [SegmentTask(model, settings, tuple((str(p.resolve()), stems[p]) for p in images[i:i + chunk]),
                         None, target, boxes, grabcut)
             for i in range(0, len(images), chunk)]
    tasks += [SegmentTask(model, settings, (), (str(v.resolve()), stems[v]), target, boxes, grabcut)
              for v in videos]
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    all_boxes: dict[str, list] = {}
    done, total = 0, len(images) + len(videos)
    shared = [out, *{Path(p).parent for task in tasks for p, _ in task.images}, *videos]
    with open_pool(cluster, shared + ([model_or_project] if model_or_project else [])) as pool:
        if pool:
            yield pool.progress(0, total, "segment")
            results = pool.map_unordered(run_segment_task, tasks, segment_label, cancel)
        else:
            results = (_segment_task(segmenter, task, cancel) for task in tasks)
        for task, found in results:
            all_boxes.update(found)
            done += len(task.images) or 1
            yield Progress(done, total, Path(task.video[0] if task.video else task.images[-1][0]).name,
                           stage="segment")
    if boxes:   # in input order, whatever order the units finished in
        write_boxes(out, {stems[p]: all_boxes[stems[p]] for p in images})


CLUSTER_CHUNK = 4 * BATCH   # images per unit of work on a cluster


@dataclass(frozen=True)
class SegmentTask:
    """A unit of `segment_paths`: some images, or one video."""
    model: str | None   # .keras file, project or models folder; None: the built-in models
    settings: SegmentSettings
    images: tuple[tuple[str, str], ...]   # (path, output stem)
    video: tuple[str, str] | None
    out: str
    boxes: bool
    grabcut: bool


def segment_label(task: SegmentTask) -> str:
    return "segment-" + Path(task.video[0] if task.video else task.images[0][0]).stem


def _segment_task(segmenter, task: SegmentTask, cancel: CancelToken | None = None
                  ) -> tuple[SegmentTask, dict[str, list]]:
    """Outputs of one unit written into its folder; returns it with {stem: boxes} of its images."""
    out, method, found = Path(task.out), task.settings.method, {}
    if task.video:
        _segment_video(segmenter, Path(task.video[0]), out / f"{task.video[1]}.overlay.mp4", method, cancel)
        return task, found
    for start in range(0, len(task.images), BATCH):
        if cancel:
            cancel.raise_if_cancelled()
        batch = task.images[start:start + BATCH]
        pictures = [read_image(Path(p)) for p, _ in batch]
        for (_, stem), picture, result in zip(batch, pictures, segmenter.segment(pictures, method)):
            mask = result.mask
            write_png(out / f"{stem}.png", soft_to_uint8(mask))
            if task.grabcut:
                write_png(out / f"{stem}.cutout.png", grabcut_cutout(picture, mask))
            if task.boxes:
                found[stem] = [list(b) for b in boxes_from_mask(
                    mask, None, BoxSettings(threshold=task.settings.threshold, mode="all"))]
    return task, found


def run_segment_task(task: SegmentTask) -> tuple[SegmentTask, dict[str, list]]:
    """A Dask worker's body."""
    from ussl_core.cluster import worker_models

    segmenter = worker_models((task.model, task.settings.flip_average),
                              lambda: load_segmenter(Path(task.model) if task.model else None,
                                                     task.settings.flip_average))
    return _segment_task(segmenter, task)


def remove_leftovers(out: Path) -> None:
    """Delete what a killed run left under this module's temporary names (a partial overlay
    video, a PNG or box file never renamed into place: ussl_core.atomic's `.<name>.tmp`)."""
    for pattern in (".*.partial.*", ".*.tmp"):
        for path in out.glob(pattern):
            path.unlink(missing_ok=True)


def _segment_video(segmenter, path: Path, target: Path, method: str,
                   cancel: CancelToken | None) -> None:
    """The overlay video, written under a temporary name and renamed when whole: a killed or
    cancelled run never leaves an unplayable file under the final name."""
    source = open_source(path)
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), source.fps or 25.0,
                             (source.width, source.height))
    if not writer.isOpened():
        raise UsslError(f"{target}: cannot write the overlay video")
    finished = False
    try:
        write_fault("video", partial)
        batch: list[np.ndarray] = []
        for frame in source.iter_frames():
            batch.append(frame)
            if len(batch) == BATCH:
                # MPEG-4 part 2 keeps these frames in well under a tenth of their raw size.
                ensure_space(target.parent, BATCH * frame.nbytes // 10, f"the overlay video {target.name}")
                _write_overlays(writer, segmenter, batch, method)
                batch = []
                if cancel:
                    cancel.raise_if_cancelled()
        if batch:
            _write_overlays(writer, segmenter, batch, method)
        finished = True
    finally:
        writer.release()
        if finished:
            os.replace(partial, target)
        else:
            partial.unlink(missing_ok=True)


def _write_overlays(writer, segmenter, frames: list[np.ndarray], method: str) -> None:
    from ussl_core.demo import overlay

    for frame, result in zip(frames, segmenter.segment(frames, method)):
        writer.write(cv2.cvtColor(overlay(frame, result.mask), cv2.COLOR_RGB2BGR))

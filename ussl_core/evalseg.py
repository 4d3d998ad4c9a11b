"""EvalSeg-Net training: learn to predict how good a student's soft mask is, without labels.

Targets (the paper's): the cosine similarity between a student's mask and the Multi-Net mask
(the product of all students' masks) on the project's frames. Validation holds out videos.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ussl_core.ensemble import cosine_similarity, multi_net, resize_mask
from ussl_core.errors import ProjectError
from ussl_core.progress import CancelToken, Progress
from ussl_core.store import Project
from ussl_core.store.model_files import default_model_name, generation_models, model_paths
from ussl_core.training import (TrainingSettings, before_training, build_or_resume, epoch_batches,
                                fit_with_events, held_out_videos, model_card, save_trained)


def evalseg_settings(**overrides) -> TrainingSettings:
    """EvalSeg-Net's training settings: the students' recipe, except its own epochs, batch size,
    learning rate (at 1e-3 its sigmoid saturated in the first epoch once: every score 1.0) and
    loss (L2 on its sigmoid output)."""
    from dataclasses import replace

    return replace(TrainingSettings(), **{"epochs": 15, "batch_size": 32, "learning_rate": 1e-4,
                                          "loss": "mse", **overrides})


@dataclass
class EvalSegData:
    images: list[np.ndarray] = field(default_factory=list)      # frames at the working size
    candidates: list[np.ndarray] = field(default_factory=list)  # student masks, COMMON_SIZE
    targets: list[float] = field(default_factory=list)
    video_ids: list[int] = field(default_factory=list)
    students: list[str] = field(default_factory=list)


def collect_evalseg_data(project: Project, students: list[Path], data: EvalSegData,
                         max_frames: int = 600, seed: int = 0, batch: int = 32,
                         cancel: CancelToken | None = None) -> Iterator[Progress]:
    """Fill `data` with (frame, student mask, cosine to Multi-Net) for up to max_frames frames."""
    from ussl_core.predict import Segmenter

    segmenter = Segmenter(students)
    data.students = [s.name for s in segmenter.students]
    shots = [s for s in project.shots() if s.frames_shard]
    frames = [(shot, f) for shot in shots for f in project.frames(shot_id=shot.id)]
    if not frames:
        raise ProjectError(f"{project.root}: no stored frames; run the teacher first")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.permutation(len(frames))[:max_frames].tolist())
    by_shot: dict[int, list] = {}
    for i in chosen:
        by_shot.setdefault(frames[i][0].id, []).append(frames[i])
    done = 0
    for group in by_shot.values():
        shot = group[0][0]
        images = project.read_frames(shot, [f.idx - shot.start for _, f in group])
        for start in range(0, len(images), batch):
            if cancel:
                cancel.raise_if_cancelled()
            chunk = list(images[start:start + batch])
            for image, masks, (_, frame) in zip(chunk, segmenter.student_masks(chunk),
                                                group[start:start + batch]):
                product = multi_net(list(masks.values()))
                for mask in masks.values():
                    data.images.append(image)
                    data.candidates.append(mask)
                    data.targets.append(cosine_similarity(mask, product))
                    data.video_ids.append(frame.video_id)
            done += len(chunk)
            yield Progress(done, len(chosen), "student masks for EvalSeg-Net", stage="evalseg")


def train_evalseg(project: Project, preset: str = "compact",
                  settings: TrainingSettings | None = None, max_frames: int = 600,
                  resume: bool = False, cancel: CancelToken | None = None,
                  students: list[Path] | None = None, name: str | None = None,
                  replace: bool = False, require_checkpoint: bool = False) -> Iterator[Progress]:
    """Train the current generation's EvalSeg-Net from its students (or the `students` given,
    saved as `name`). In a multi-worker run the chief trains it alone (a few hundred frames)."""
    import tensorflow as tf

    from ussl_core.models import PRESETS, build_model
    from ussl_core.multiworker import worker_role

    role = worker_role()
    if role is not None and not role.chief:
        yield Progress(1, 1, f"EvalSeg-Net: trained by the chief alone (this is worker {role.index} of "
                             f"{role.workers})", {"event": "skipped"}, stage="train")
        return
    project.require_writable()
    settings = settings or evalseg_settings()
    generation = int(project.meta("generation", "1"))
    name = name or default_model_name("evalseg", preset, generation)
    paths = model_paths(project.root, name)
    skipped = before_training(paths, name, resume, replace, require_checkpoint)
    if skipped:
        yield skipped
        return
    students = students if students is not None else generation_models(project, generation)[0]
    if len(students) < 2:
        raise ProjectError(f"{project.root}: EvalSeg-Net learns from at least two students of "
                           f"generation {generation}; {len(students)} trained so far")
    data = EvalSegData()
    yield from collect_evalseg_data(project, students, data, max_frames, settings.seed, cancel=cancel)
    size = PRESETS[preset]["evalseg"]["input_size"]
    images = np.stack([cv2_resize(im, size) for im in data.images]).astype(np.float32)
    candidates = np.stack([resize_mask(m, size)[..., None] for m in data.candidates])
    targets = np.asarray(data.targets, np.float32)[:, None]
    videos = np.asarray(data.video_ids)
    held = held_out_videos(videos, settings.validation_share, settings.seed)
    is_val = np.isin(videos, list(held))

    # One machine's strategy even in a multi-worker run (its chief trains it alone).
    model, state = build_or_resume(paths, resume, lambda: build_model("evalseg", preset), settings,
                                   tf.distribute.get_strategy() if role is not None else None)

    def dataset(mask: np.ndarray, training: bool):
        pairs = [tf.constant(a[mask]) for a in (images, candidates, targets)]
        return epoch_batches(int(mask.sum()), settings.batch_size, settings.seed, training,
                             lambda epoch, i, seed: ((tf.gather(pairs[0], i), tf.gather(pairs[1], i)),
                                                     tf.gather(pairs[2], i)),
                             state["epoch"], endless=training)

    state.update(architecture="evalseg", preset=preset)
    # A fixed batch to watch for collapse: a saturated sigmoid scores every candidate the same.
    watch = np.flatnonzero(~is_val)[:64]
    probe = ((images[watch], candidates[watch]), targets[watch])
    started = time.perf_counter()
    yield from fit_with_events(model, dataset(~is_val, True), dataset(is_val, False) if is_val.any() else None,
                               math.ceil(int((~is_val).sum()) / settings.batch_size), settings, paths,
                               state, name, probe, cancel)
    card = model_card("evalseg", preset, generation, name, model, settings, state,
                      time.perf_counter() - started)
    card["training_data"] = {"students": data.students, "pairs": int(len(targets)),
                             "train_pairs": int((~is_val).sum()), "validation_pairs": int(is_val.sum()),
                             "mean_target": float(targets.mean())}
    yield save_trained(model, paths, card)


def cv2_resize(image: np.ndarray, size: int) -> np.ndarray:
    from ussl_core.media import resize_rgb

    return resize_rgb(image, (size, size))

"""Training students from the selected soft masks (module A of the paper).

The selected (frame, soft mask) pairs come from the project store; tf.data applies the paper's
augmentation (random crops covering 80 percent of the image, scaled back to the input size, and
horizontal flips); L2 loss, Adam at 1e-3. Validation holds out whole videos, never frames of a
video seen in training. Keras `fit` runs in a thread so that this module can be a generator of
progress events like every other long step: per batch, per epoch, and a `collapse` event when
the predictions become constant. A checkpoint after every epoch makes a killed or cancelled run
resumable; the finished model is saved as models/<name>.keras with a JSON card.
"""

from __future__ import annotations

import json
import math
import os
import platform
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ussl_core.errors import ProjectError, SettingsError
from ussl_core.progress import CancelToken, Cancelled, Progress
from ussl_core.store import Project


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    crop_fraction: float = 0.8       # share of the image area each random crop covers
    flip: bool = True
    validation_share: float = 0.15   # share of the videos held out for validation
    seed: int = 0
    tensorboard: bool = False
    # Collapse: the predictions' spread below this share of the targets' spread, two epochs running.
    collapse_ratio: float = 0.05

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise SettingsError("epochs and batch size must be at least 1")
        if not 0 < self.learning_rate < 1:
            raise SettingsError(f"learning rate must be in (0, 1), not {self.learning_rate}")
        if not 0.1 <= self.crop_fraction <= 1:
            raise SettingsError("crop fraction must be in [0.1, 1]")
        if not 0 <= self.validation_share < 1:
            raise SettingsError("validation share must be in [0, 1)")


@dataclass
class TrainingData:
    """Selected pairs in memory: frames (N x H x W x 3 uint8), masks (N x H x W uint8), videos."""
    frames: np.ndarray
    masks: np.ndarray
    video_ids: np.ndarray
    selection_id: int
    producer: str
    frame_ids: list[int] = field(default_factory=list)

    def split(self, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of training and validation pairs, split by whole videos."""
        videos = np.unique(self.video_ids)
        n_val = int(round(share * len(videos))) if len(videos) > 1 else 0
        if share > 0 and len(videos) > 1:
            n_val = max(1, n_val)
        held = set(np.random.default_rng(seed).permutation(videos)[:n_val].tolist())
        is_val = np.array([v in held for v in self.video_ids], bool)
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def load_selection(project: Project, selection_id: int | None = None) -> TrainingData:
    """The (frame, soft mask) pairs of the active selection (or the one given), from the store."""
    selection = project.active_selection() if selection_id is None else next(
        (s for s in [dict(r) for r in project.conn.execute("SELECT * FROM selections WHERE id=?",
                                                            (selection_id,))]), None)
    if selection is None:
        raise ProjectError(f"{project.root}: no selection yet; run `ussl select` first")
    members = set(project.selection_members(selection["id"]))
    producer = next(p for p in project.producers() if p.id == selection["producer_id"])
    masks = [m for m in project.masks(producer.id) if (m.frame_id, m.producer_id) in members]
    if not masks:
        raise ProjectError(f"{project.root}: the selection is empty")
    frames_of = {f.id: f for f in project.frames()}
    shots = {s.id: s for s in project.shots()}
    by_shot: dict[int, list] = {}
    for m in masks:
        by_shot.setdefault(m.shot_id, []).append(m)
    frames, soft, videos, ids = [], [], [], []
    for shot_id, group in by_shot.items():
        shot = shots[shot_id]
        rows = [frames_of[m.frame_id].idx - shot.start for m in group]
        frames.append(project.read_frames(shot, rows))
        soft.extend(np.rint(s * 255).astype(np.uint8) for _, s in project.read_masks(group))
        videos += [m.video_id for m in group]
        ids += [m.frame_id for m in group]
    return TrainingData(np.concatenate(frames), np.stack(soft), np.array(videos), selection["id"],
                        producer.name, ids)


# ----------------------------------------------------------------------------- tf.data
def make_dataset(frames: np.ndarray, masks: np.ndarray, input_size: int, output_size: int,
                 batch_size: int, augment: bool, settings: TrainingSettings, shuffle: bool):
    """Batches of (image float32 0..255 at input size, soft mask float32 0..1 at output size)."""
    import tensorflow as tf

    side = math.sqrt(settings.crop_fraction)

    def prepare(frame, mask):
        image = tf.cast(frame, tf.float32)
        target = tf.cast(mask[..., None], tf.float32) / 255.0
        if augment:
            height = tf.cast(tf.shape(image)[0], tf.float32)
            width = tf.cast(tf.shape(image)[1], tf.float32)
            crop_h = tf.cast(height * side, tf.int32)
            crop_w = tf.cast(width * side, tf.int32)
            top = tf.random.uniform((), 0, tf.shape(image)[0] - crop_h + 1, tf.int32)
            left = tf.random.uniform((), 0, tf.shape(image)[1] - crop_w + 1, tf.int32)
            image = image[top:top + crop_h, left:left + crop_w]
            target = target[top:top + crop_h, left:left + crop_w]
            if settings.flip and tf.random.uniform(()) < 0.5:
                image = image[:, ::-1]
                target = target[:, ::-1]
        image = tf.image.resize(image, (input_size, input_size), antialias=True)
        target = tf.image.resize(target, (output_size, output_size), antialias=True)
        return image, target

    data = tf.data.Dataset.from_tensor_slices((frames, masks))
    if shuffle:
        data = data.shuffle(len(frames), seed=settings.seed, reshuffle_each_iteration=True)
    data = data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def distribution_strategy():
    """MirroredStrategy across several visible GPUs; the default strategy otherwise."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


# ----------------------------------------------------------------------------- training
def model_paths(project: Project, name: str) -> dict[str, Path]:
    models = project.root / "models"
    return {"model": models / f"{name}.keras", "card": models / f"{name}.json",
            "checkpoint": models / f"{name}.ckpt.keras", "state": models / f"{name}.ckpt.json",
            "tensorboard": project.root / "logs" / "tensorboard" / name}


def default_model_name(arch: str, preset: str, generation: int) -> str:
    return f"g{generation}_{arch}_{preset}"


def train_student(project: Project, arch: str, preset: str = "compact",
                  settings: TrainingSettings = TrainingSettings(), name: str | None = None,
                  resume: bool = False, data: TrainingData | None = None,
                  cancel: CancelToken | None = None) -> Iterator[Progress]:
    """Train one student on the active selection; yields batch, epoch and collapse events."""
    import keras
    import tensorflow as tf

    from ussl_core.callbacks import CheckpointCallback, ProgressCallback
    from ussl_core.models import PRESETS, STUDENTS, build_model
    from ussl_core.models.io import load_model, save_model_atomic

    project.require_writable()
    if arch not in STUDENTS:
        raise SettingsError(f"unknown student {arch!r}; choose from {', '.join(STUDENTS)}")
    generation = int(project.meta("generation", "1"))
    name = name or default_model_name(arch, preset, generation)
    paths = model_paths(project, name)
    data = data or load_selection(project)
    train_idx, val_idx = data.split(settings.validation_share, settings.seed)
    if len(train_idx) == 0:
        raise ProjectError(f"{project.root}: no training pairs left after holding out validation videos")
    keras.utils.set_random_seed(settings.seed)
    strategy = distribution_strategy()
    state = {"epoch": 0, "history": []}
    with strategy.scope():
        if resume and paths["checkpoint"].exists() and paths["state"].exists():
            model = load_model(paths["checkpoint"], compile=True)
            state = json.loads(paths["state"].read_text())
        else:
            model = build_model(arch, preset)
            model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse")
    input_size = PRESETS[preset][arch]["input_size"]
    output_size = int(model.output_shape[1])
    train_ds = make_dataset(data.frames[train_idx], data.masks[train_idx], input_size, output_size,
                            settings.batch_size, True, settings, shuffle=True)
    val_ds = (make_dataset(data.frames[val_idx], data.masks[val_idx], input_size, output_size,
                           settings.batch_size, False, settings, shuffle=False) if len(val_idx) else None)
    probe = next(iter(make_dataset(data.frames[train_idx][:16], data.masks[train_idx][:16], input_size,
                                   output_size, 16, False, settings, shuffle=False)))
    steps = math.ceil(len(train_idx) / settings.batch_size)
    total = settings.epochs * steps
    if state["epoch"] >= settings.epochs:
        yield Progress(total, total, f"{name}: already trained {state['epoch']} epochs", stage="train")
    events: queue.Queue = queue.Queue()
    cancel = cancel or CancelToken()
    callbacks = [ProgressCallback(events, cancel, name, steps, total, state["epoch"]),
                 CheckpointCallback(paths, state, settings.collapse_ratio, events, name, probe,
                                    steps, total)]
    if settings.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths["tensorboard"])))
    started = time.perf_counter()

    def fit() -> None:
        try:
            model.fit(train_ds, validation_data=val_ds, epochs=settings.epochs,
                      initial_epoch=state["epoch"], callbacks=callbacks, verbose=0, shuffle=False)
            events.put(("done", None))
        except BaseException as exc:  # forwarded to the consumer thread
            events.put(("error", exc))

    if state["epoch"] < settings.epochs:
        thread = threading.Thread(target=fit, name=f"train-{name}", daemon=True)
        thread.start()
        try:
            while True:
                kind, payload = events.get()
                if kind == "progress":
                    yield payload
                elif kind == "error":
                    raise payload
                else:
                    break
        finally:
            cancel.cancel() if thread.is_alive() else None
            thread.join()
    card = _card(arch, preset, generation, name, data, train_idx, val_idx, settings, state,
                 model, time.perf_counter() - started)
    save_model_atomic(model, paths["model"])
    paths["card"].write_text(json.dumps(card, indent=2))
    for key in ("checkpoint", "state"):
        paths[key].unlink(missing_ok=True)
    yield Progress(total, total, f"{name}: saved", {"event": "saved", "model": str(paths["model"])},
                   stage="train")


def _card(arch, preset, generation, name, data, train_idx, val_idx, settings, state, model,
          seconds) -> dict:
    import keras
    import tensorflow as tf

    history = state["history"]
    best = min(history, key=lambda r: r.get("val_loss", r["loss"])) if history else None
    return {
        "name": name, "architecture": arch, "preset": preset, "generation": generation,
        "params": int(model.count_params()),
        "input_size": int(model.input_shape[1]), "output_size": int(model.output_shape[1]),
        "training_data": {"selection_id": data.selection_id, "producer": data.producer,
                          "pairs": len(data.frames), "train_pairs": int(len(train_idx)),
                          "validation_pairs": int(len(val_idx)),
                          "train_videos": sorted({int(v) for v in data.video_ids[train_idx]}),
                          "validation_videos": sorted({int(v) for v in data.video_ids[val_idx]})},
        "settings": asdict(settings), "seed": settings.seed,
        "epochs": state["epoch"], "history": history,
        "best_epoch": best["epoch"] if best else None,
        "wall_seconds": round(seconds, 1),
        "versions": {"ussl": __import__("ussl_core").__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }

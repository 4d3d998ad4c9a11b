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
        is_val = np.isin(self.video_ids, list(held_out_videos(self.video_ids, share, seed)))
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def held_out_videos(video_ids: np.ndarray, share: float, seed: int) -> set[int]:
    """The videos kept for validation: a share of them (at least one when there are two or more)."""
    videos = np.unique(video_ids)
    if len(videos) < 2 or share <= 0:
        return set()
    n = max(1, int(round(share * len(videos))))
    return set(np.random.default_rng(seed).permutation(videos)[:n].tolist())


def load_selection(project: Project, selection_id: int | None = None) -> TrainingData:
    """The (frame, soft mask) pairs of the active selection (or the one given), from the store."""
    selection = project.active_selection() if selection_id is None else project.selection(selection_id)
    if selection is None:
        raise ProjectError(f"{project.root}: no selection yet; run `ussl select` first")
    members = set(project.selection_members(selection["id"]))
    producer_ids = sorted({p for _, p in members})
    masks = [m for pid in producer_ids for m in project.masks(pid) if (m.frame_id, pid) in members]
    names = {p.id: p.name for p in project.producers()}
    producer = ", ".join(names[p] for p in producer_ids)
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
        records = list(project.read_masks(group))  # in shard order: align by record
        frames.append(project.read_frames(
            shot, [frames_of[m.frame_id].idx - shot.start for m, _ in records]))
        soft += [np.rint(values * 255).astype(np.uint8) for _, values in records]
        videos += [m.video_id for m, _ in records]
        ids += [m.frame_id for m, _ in records]
    return TrainingData(np.concatenate(frames), np.stack(soft), np.array(videos), selection["id"],
                        producer, ids)


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


def trained_cards(models: Path) -> list[dict]:
    """The cards of the finished models in a models folder, each with its model's "path".
    (<name>.ckpt.json is an interrupted run's checkpoint state, not a trained model.)"""
    cards = []
    for card_path in sorted(Path(models).glob("*.json")):
        model = card_path.with_suffix(".keras")
        if card_path.name.endswith(".ckpt.json") or not model.exists():
            continue
        cards.append({**json.loads(card_path.read_text()), "path": model})
    return cards


def generation_models(where: Project | Path, generation: int) -> tuple[list[Path], Path | None]:
    """The students and the EvalSeg-Net of one generation of a project (or a models folder)."""
    models = where.root / "models" if isinstance(where, Project) else Path(where)
    cards = [c for c in trained_cards(models) if c.get("generation", 1) == generation]
    students = [c["path"] for c in cards if c.get("architecture") != "evalseg"]
    evalseg = next((c["path"] for c in cards if c.get("architecture") == "evalseg"), None)
    return students, evalseg


def default_model_name(arch: str, preset: str, generation: int) -> str:
    return f"g{generation}_{arch}_{preset}"


def train_student(project: Project, arch: str, preset: str = "compact",
                  settings: TrainingSettings = TrainingSettings(), name: str | None = None,
                  resume: bool = False, data: TrainingData | None = None,
                  cancel: CancelToken | None = None) -> Iterator[Progress]:
    """Train one student on the active selection; yields batch, epoch and collapse events."""
    from ussl_core.models import PRESETS, STUDENTS, build_model

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
    model, state = build_or_resume(paths, resume, lambda: build_model(arch, preset), settings)
    input_size = PRESETS[preset][arch]["input_size"]
    output_size = int(model.output_shape[1])

    def dataset(idx, augment, shuffle, batch=settings.batch_size):
        return make_dataset(data.frames[idx], data.masks[idx], input_size, output_size, batch,
                            augment, settings, shuffle)

    probe = next(iter(dataset(train_idx[:16], False, False, 16)))
    started = time.perf_counter()
    yield from fit_with_events(model, dataset(train_idx, True, True),
                               dataset(val_idx, False, False) if len(val_idx) else None,
                               math.ceil(len(train_idx) / settings.batch_size), settings, paths,
                               state, name, probe, cancel)
    card = _card(arch, preset, generation, name, model, settings, state, time.perf_counter() - started)
    card["training_data"] = {
        "selection_id": data.selection_id, "producer": data.producer, "pairs": len(data.frames),
        "train_pairs": int(len(train_idx)), "validation_pairs": int(len(val_idx)),
        "train_videos": sorted({int(v) for v in data.video_ids[train_idx]}),
        "validation_videos": sorted({int(v) for v in data.video_ids[val_idx]})}
    yield save_trained(model, paths, card)


def build_or_resume(paths: dict[str, Path], resume: bool, build, settings: TrainingSettings):
    """A compiled model, fresh or from the last epoch's checkpoint, and its training state."""
    import keras

    from ussl_core.models.io import load_model

    keras.utils.set_random_seed(settings.seed)
    state = {"epoch": 0, "history": []}
    with distribution_strategy().scope():
        if resume and paths["checkpoint"].exists() and paths["state"].exists():
            model = load_model(paths["checkpoint"], compile=True)
            state = json.loads(paths["state"].read_text())
        else:
            model = build()
            model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse")
    return model, state


def fit_with_events(model, train_ds, val_ds, steps: int, settings: TrainingSettings,
                    paths: dict[str, Path], state: dict, name: str, probe: tuple | None,
                    cancel: CancelToken | None) -> Iterator[Progress]:
    """Run Keras `fit` in a thread and yield its events; cancel stops it within one batch."""
    import keras

    from ussl_core.callbacks import CheckpointCallback, ProgressCallback

    total = settings.epochs * steps
    if state["epoch"] >= settings.epochs:
        yield Progress(total, total, f"{name}: already trained {state['epoch']} epochs", stage="train")
        return
    events: queue.Queue = queue.Queue()
    cancel = cancel or CancelToken()
    callbacks = [ProgressCallback(events, cancel, name, steps, total, state["epoch"]),
                 CheckpointCallback(paths, state, settings.collapse_ratio, events, name, probe,
                                    steps, total, cancel)]
    if settings.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths["tensorboard"])))

    def fit() -> None:
        try:
            model.fit(train_ds, validation_data=val_ds, epochs=settings.epochs,
                      initial_epoch=state["epoch"], callbacks=callbacks, verbose=0, shuffle=False)
            events.put(("done", None))
        except BaseException as exc:  # forwarded to the consumer's thread
            events.put(("error", exc))

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
        if thread.is_alive():  # the consumer stopped early: stop the fit too
            cancel.cancel()
        thread.join()


def save_trained(model, paths: dict[str, Path], card: dict) -> Progress:
    """Save the finished model and its card; drop the checkpoint."""
    from ussl_core.models.io import save_model_atomic

    save_model_atomic(model, paths["model"])
    tmp = paths["card"].with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2))
    os.replace(tmp, paths["card"])
    for key in ("checkpoint", "state"):
        paths[key].unlink(missing_ok=True)
    return Progress(1, 1, f"{card['name']}: saved", {"event": "saved", "model": str(paths["model"])},
                    stage="train")


def _card(arch: str, preset: str, generation: int, name: str, model, settings: TrainingSettings,
          state: dict, seconds: float) -> dict:
    import keras
    import tensorflow as tf

    history = state["history"]
    best = min(history, key=lambda r: r.get("val_loss", r["loss"])) if history else None
    return {
        "name": name, "architecture": arch, "preset": preset, "generation": generation,
        "params": int(model.count_params()),
        "input_size": int(model.inputs[0].shape[1]), "output_size": int(model.output_shape[1]),
        "settings": asdict(settings), "seed": settings.seed,
        "epochs": state["epoch"], "history": history,
        "best_epoch": best["epoch"] if best else None,
        "collapsed_at_epoch": state.get("collapsed_at_epoch"),
        "wall_seconds": round(seconds, 1),
        "versions": {"ussl": __import__("ussl_core").__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }

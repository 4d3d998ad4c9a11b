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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ussl_core.errors import ProjectError, SettingsError, UsslError
from ussl_core.multiworker import WorkerShard, worker_role
from ussl_core.progress import CancelToken, Progress
from ussl_core.settings import check, option
from ussl_core.store import Project
from ussl_core.store.model_files import default_model_name, model_paths, write_card
from ussl_core.training_input import (INPUTS, TrainingData, augment_pair,  # noqa: F401 (re-exported)
                                      epoch_batches, held_out_videos, load_selection, make_dataset,
                                      training_source)


LOSSES = ("mse", "bce")


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int = option(30, "passes over the selected pairs", low=1)
    batch_size: int = option(8, "pairs per training step", low=1)
    learning_rate: float = option(1e-3, "Adam's learning rate (the paper's 1e-3)", low=0, high=1,
                                  low_open=True, high_open=True)
    # Random crops (the paper: 80 % of the image, scaled back up). Each crop's area share is
    # drawn between min_crop_fraction and crop_fraction, its aspect ratio log-uniformly within
    # 1 / (1 + aspect_jitter) .. 1 + aspect_jitter of the frame's.
    crop_fraction: float = option(0.8, "largest share of the image area a random crop covers",
                                  low=0.1, high=1)
    min_crop_fraction: float = option(0.8, "smallest share of the image area a random crop covers "
                                           "(at most the crop fraction)", low=0.1, high=1)
    aspect_jitter: float = option(0.0, "crops' aspect ratio varies by up to this factor (0: the "
                                       "frame's)", low=0, high=1)
    flip: bool = option(True, "mirror half of the crops left to right")
    # Photometric augmentation, for the gap between video frames and photographs.
    colour_jitter: float = option(0.0, "brightness, contrast and saturation change by up to this "
                                       "share, hue by a tenth of it", low=0, high=1)
    blur_probability: float = option(0.0, "share of the images blurred (Gaussian, sigma 0.3-1.5 "
                                          "pixels)", low=0, high=1)
    grey_probability: float = option(0.0, "share of the images turned grey", low=0, high=1)
    loss: str = option("mse", "mse: L2 regression of the soft masks (the paper's); bce: binary "
                              "cross-entropy of the soft masks on the output as a logit", choices=LOSSES)
    validation_share: float = option(0.15, "share of the videos held out for validation (and "
                                           "calibration)", low=0, high=1, high_open=True)
    seed: int = option(0, "random seed of initialisation, split and augmentation", low=0)
    input: str = option("auto", "where training reads the pairs: memory, stream (from the store, "
                                "for selections larger than memory), or auto (memory up to 2 GB of pairs)",
                        choices=INPUTS)
    tensorboard: bool = option(False, "also log to PROJECT/logs/tensorboard")
    # Collapse: the predictions' spread below this share of the targets' spread, two epochs running.
    collapse_ratio: float = option(0.05, "warn of a collapse when the predictions' spread falls "
                                         "below this share of the targets'", low=0, high=1)

    def __post_init__(self) -> None:
        check(self)
        if self.min_crop_fraction > self.crop_fraction:
            raise SettingsError(f"min_crop_fraction must be at most crop_fraction ({self.crop_fraction:g}), "
                                f"not {self.min_crop_fraction:g}")


def distribution_strategy():
    """MultiWorkerMirroredStrategy when TF_CONFIG or SLURM describe several workers
    (ussl_core.multiworker); MirroredStrategy across several visible GPUs; else the default."""
    import tensorflow as tf

    from ussl_core.multiworker import multi_worker_strategy

    multi = multi_worker_strategy()
    if multi is not None:
        return multi
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


# ----------------------------------------------------------------------------- training
def train_student(project: Project, arch: str, preset: str = "compact",
                  settings: TrainingSettings = TrainingSettings(), name: str | None = None,
                  resume: bool = False, data: TrainingData | None = None,
                  cancel: CancelToken | None = None, replace: bool = False,
                  require_checkpoint: bool = False) -> Iterator[Progress]:
    """Train one student on the active selection; yields batch, epoch and collapse events.
    `resume`: continue an interrupted run, or start (a finished model is kept: nothing to do);
    `require_checkpoint`: only continue (an error without an interrupted run); `replace`: train
    again over a finished model, which is refused otherwise."""
    from ussl_core.models import PRESETS, STUDENTS, build_model

    role = worker_role()
    chief = role is None or role.chief   # the only writer of a multi-worker run
    if chief:
        project.require_writable()
    if role is not None and settings.batch_size % role.workers:
        raise SettingsError(f"batch size {settings.batch_size} is not a multiple of the {role.workers} "
                            "workers; each worker takes an equal share of every batch")
    if arch not in STUDENTS:
        raise SettingsError(f"unknown student {arch!r}; choose from {', '.join(STUDENTS)}")
    generation = int(project.meta("generation", "1"))
    name = name or default_model_name(arch, preset, generation)
    paths = model_paths(project.root, name)
    skipped = before_training(paths, name, resume, replace, require_checkpoint)
    if skipped:
        yield skipped
        return
    data = data or training_source(project, settings.input)
    train, val = data.parts(settings.validation_share, settings.seed)
    if train.count == 0:
        raise ProjectError(f"{project.root}: no training pairs left after holding out validation videos")
    model, state = build_or_resume(paths, resume, lambda: build_model(arch, preset), settings)
    state.update(architecture=arch, preset=preset)   # an interrupted run says what it trains
    input_size = PRESETS[preset][arch]["input_size"]
    output_size = int(model.output_shape[1])

    def dataset(part, augment, shuffle, batch=settings.batch_size, endless=False, shard=WorkerShard()):
        return part.batches(input_size, output_size, batch, augment, settings, shuffle,
                            state["epoch"], endless, shard)

    probe = next(iter(dataset(train, False, False, 16)))
    started = time.perf_counter()
    yield from fit_with_events(model, dataset(train, True, True, endless=True),
                               dataset(val, False, False) if val.count else None,
                               math.ceil(train.count / settings.batch_size), settings, paths,
                               state, name, probe, cancel,
                               lambda shard: dataset(train, True, True, endless=True, shard=shard))
    if not chief:
        yield Progress(1, 1, f"{name}: trained as worker {role.index} of {role.workers}; the chief "
                             "writes the model and its card", {"event": "skipped"}, stage="train")
        return
    card = model_card(arch, preset, generation, name, model, settings, state, time.perf_counter() - started)
    card["training_data"] = {
        "selection_id": data.selection_id, "producer": data.producer, "pairs": data.count,
        "train_pairs": train.count, "validation_pairs": val.count,
        "input": "memory" if isinstance(data, TrainingData) else "stream",
        "workers": role.workers if role else 1,
        "train_videos": sorted({int(v) for v in train.video_ids}),
        "validation_videos": sorted({int(v) for v in val.video_ids})}
    # Calibrated on the held-out videos (the training pairs when there are none).
    held_out = val.count > 0
    raw, targets = predict_pairs(model, dataset(val if held_out else train, False, False))
    slope, offset = fit_calibration(raw, targets, seed=settings.seed)
    card["calibration"] = {"slope": slope, "offset": offset, "target": "teacher mask > 0.5",
                           "fitted_on": "validation videos" if held_out else "training pairs",
                           "pairs": int(len(raw))}
    yield save_trained(calibrated(model, slope, offset), paths, card)


def predict_pairs(model, dataset, limit: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A model's raw masks of up to `limit` pairs of a dataset, and their targets."""
    predictions, targets, count = [], [], 0
    for images, batch_targets in dataset:
        predictions.append(np.asarray(model(images, training=False)))
        targets.append(np.asarray(batch_targets))
        count += len(images)
        if count >= limit:
            break
    return np.concatenate(predictions)[:limit], np.concatenate(targets)[:limit]


# Where the teacher's masks of the calibration pairs are all background or all foreground, a
# fixed map that keeps 0.5 at 0.5 and saturates at 0 and 1 (what clipping did before).
NEUTRAL_CALIBRATION = (8.0, -4.0)


def fit_calibration(raw: np.ndarray, targets: np.ndarray, max_pixels: int = 200_000,
                    seed: int = 0) -> tuple[float, float]:
    """(slope, offset) of the map sigmoid(slope * raw + offset) that makes 0.5 the threshold at
    which the masks best agree with the teacher's (largest mean IoU with the teacher's masks
    above 0.5), its slope that of the logistic fit of where the teacher says foreground.

    A probability fit alone put 0.5 where a student is sure; on new videos the students are
    rarely that sure, and a mask thresholded at 0.5 kept too little of the object."""
    raw = np.asarray(raw, np.float64).reshape(len(raw), -1)
    teacher = np.asarray(targets).reshape(len(targets), -1) > 0.5
    if not teacher.any() or teacher.all() or raw.std() == 0:
        return NEUTRAL_CALIBRATION
    slope = _logistic_slope(raw.ravel(), teacher.ravel(), max_pixels, seed)
    if slope <= 0:
        return NEUTRAL_CALIBRATION
    best = _best_iou_threshold(raw, teacher)
    return float(slope), float(-slope * best)


def _logistic_slope(x: np.ndarray, y: np.ndarray, max_pixels: int, seed: int) -> float:
    """Slope of the maximum-likelihood logistic fit P(y | x) (Newton's method, a small ridge)."""
    if len(x) > max_pixels:
        keep = np.random.default_rng(seed).choice(len(x), max_pixels, replace=False)
        x, y = x[keep], y[keep]
    y = y.astype(np.float64)
    spread = x.std()
    if spread == 0:
        return 0.0
    design = np.stack([np.ones_like(x), (x - x.mean()) / spread], axis=1)
    ridge = np.diag([0.0, 1e-6 * len(x)])
    w = np.zeros(2)   # offset and slope on the standardised scale
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        step = np.linalg.solve((design * (p * (1 - p))[:, None]).T @ design + ridge + 1e-9 * np.eye(2),
                               design.T @ (p - y) + ridge @ w)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[1] / spread)


def _best_iou_threshold(raw: np.ndarray, teacher: np.ndarray, bins: int = 256) -> float:
    """The raw value t maximising the mean over masks of IoU(raw > t, teacher)."""
    low, high = np.quantile(raw, [0.001, 0.999])
    if high <= low:
        return float(low)
    levels = np.clip(((raw - low) / (high - low) * bins).astype(np.int64), 0, bins - 1)
    rows = np.arange(len(raw))[:, None] * bins
    fg = np.bincount((rows + levels)[teacher], minlength=len(raw) * bins).reshape(len(raw), bins)
    bg = np.bincount((rows + levels)[~teacher], minlength=len(raw) * bins).reshape(len(raw), bins)
    # Foreground at threshold index k: levels above k.
    tp = np.cumsum(fg[:, ::-1], axis=1)[:, ::-1][:, 1:]
    fp = np.cumsum(bg[:, ::-1], axis=1)[:, ::-1][:, 1:]
    positives = teacher.sum(axis=1, keepdims=True)
    union = positives + fp
    iou = np.divide(tp, union, out=np.ones_like(tp, dtype=np.float64), where=union > 0)
    k = int(np.argmax(iou.mean(axis=0)))
    return float(low + (k + 1) * (high - low) / bins)


def calibrated(model, slope: float, offset: float):
    """The model with its calibration as a last layer ("calibrated"), same name and inputs."""
    import keras

    from ussl_core.models.layers import Calibration

    output = Calibration(slope, offset, name="calibrated")(model.output)
    return keras.Model(model.input, output, name=model.name)


def before_training(paths: dict[str, Path], name: str, resume: bool, replace: bool,
                    require_checkpoint: bool) -> Progress | None:
    """What may happen to a model's files: a "skipped" event when a finished model is kept,
    an error when the run would destroy one or has nothing to continue, else None (train)."""
    if require_checkpoint and not paths["checkpoint"].exists():
        raise ProjectError(f"{paths['checkpoint']}: no interrupted run of {name} to resume; "
                           "train it without --resume")
    if resume and paths["model"].exists() and not paths["checkpoint"].exists():
        return Progress(1, 1, f"{name}: already trained ({paths['model'].name}); nothing to resume",
                        {"event": "skipped"}, stage="train")
    if not resume and paths["model"].exists() and not replace:
        raise ProjectError(f"{paths['model']}: already trained; --replace trains it again and replaces "
                           "it (its card too)")
    return None


def build_or_resume(paths: dict[str, Path], resume: bool, build, settings: TrainingSettings,
                    strategy=None):
    """A compiled model, fresh or from the last epoch's checkpoint, and its training state,
    under `strategy` (default: `distribution_strategy()`)."""
    import keras

    from ussl_core.models.io import load_model

    keras.utils.set_random_seed(settings.seed)
    state = {"epoch": 0, "history": []}
    with (strategy or distribution_strategy()).scope():
        if resume and paths["checkpoint"].exists() and paths["state"].exists():
            model = load_model(paths["checkpoint"], compile=True)
            try:
                state = json.loads(paths["state"].read_text())
                int(state["epoch"]), list(state["history"])
            except (ValueError, KeyError, TypeError) as exc:
                raise UsslError(f"{paths['state']}: the interrupted run's state is damaged ({exc}); "
                                "`ussl check PROJECT --repair` moves it aside, then train again") from None
            state = adopt_pending_state(paths, state, model)
        else:
            model = build()
            compile_student(model, settings)
    return model, state


def adopt_pending_state(paths: dict[str, Path], state: dict, model) -> dict:
    """The state that belongs to the checkpoint: a pending state of the checkpoint's own
    optimizer step (the run was killed between saving the checkpoint and renaming its state)
    replaces the older one; any other pending state is a leftover and goes."""
    import keras

    pending_path = paths["pending_state"]
    if not pending_path.exists():
        return state
    try:
        pending = json.loads(pending_path.read_text())
    except (OSError, ValueError):
        pending = None
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if isinstance(pending, dict) and pending.get("iterations") == iterations:
        os.replace(pending_path, paths["state"])
        return pending
    pending_path.unlink(missing_ok=True)
    return state


def compile_student(model, settings: TrainingSettings) -> None:
    """The optimizer and loss every student (and EvalSeg-Net) trains with."""
    import keras

    loss = "mse" if settings.loss == "mse" else keras.losses.BinaryCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=loss)


def fit_with_events(model, train_ds, val_ds, steps: int, settings: TrainingSettings,
                    paths: dict[str, Path], state: dict, name: str, probe: tuple | None,
                    cancel: CancelToken | None, worker_dataset=None) -> Iterator[Progress]:
    """Run Keras `fit` in a thread and yield its events; cancel stops it within one batch.
    `train_ds`: endless batches from the state's epoch on (`epoch_batches`), `steps` a pass.
    Under MultiWorkerMirroredStrategy the training step is ussl_core.multiworker's, on
    `worker_dataset(shard)`, this worker's share; only the chief writes checkpoints."""
    import keras

    from ussl_core.callbacks import CheckpointCallback, ProgressCallback
    from ussl_core.multiworker import fit_multi_worker, multi_worker_strategy

    total = settings.epochs * steps
    if state["epoch"] >= settings.epochs:
        yield Progress(total, total, f"{name}: already trained {state['epoch']} epochs",
                       {"event": "skipped"}, stage="train")
        return
    events: queue.Queue = queue.Queue()
    cancel = cancel or CancelToken()
    role = worker_role()
    callbacks = [ProgressCallback(events, cancel, name, steps, total, state["epoch"]),
                 CheckpointCallback(paths, state, settings.collapse_ratio, events, name, probe,
                                    steps, total, cancel, writes=role is None or role.chief)]
    # Without a worker_dataset (EvalSeg-Net) the model trains on this machine alone.
    strategy = multi_worker_strategy() if worker_dataset is not None else None
    if settings.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths["tensorboard"])))

    # One endless iterator for the whole run: Keras made a fresh one every epoch, which cost up
    # to 4.6 s an epoch here (filling the shuffle buffer and the parallel map again). The
    # validation pass is the same every epoch.
    val_steps = int(val_ds.cardinality()) if val_ds is not None else None

    def fit() -> None:
        try:
            if strategy is not None:
                fit_multi_worker(model, strategy, worker_dataset, val_ds, steps, settings.epochs,
                                 state["epoch"], settings.batch_size, settings.loss, callbacks)
            else:
                model.fit(train_ds, steps_per_epoch=steps,
                          validation_data=val_ds.repeat() if val_ds is not None else None,
                          validation_steps=val_steps, epochs=settings.epochs,
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
    import keras

    from ussl_core.models.io import save_model_atomic

    # A fresh functional model over the same layers: the file holds no optimizer state (a
    # third of the size of a compiled one), as a finished model needs none.
    inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
    save_model_atomic(keras.Model(inputs, model.outputs[0], name=model.name), paths["model"])
    write_card(paths["model"], card)
    for key in ("checkpoint", "state", "pending_state"):
        paths[key].unlink(missing_ok=True)
    return Progress(1, 1, f"{card['name']}: saved", {"event": "saved", "model": str(paths["model"])},
                    stage="train")


def model_card(arch: str, preset: str, generation: int, name: str, model, settings: TrainingSettings,
               state: dict, seconds: float) -> dict:
    """What a trained model's card says (ussl_core.store.model_files writes it beside the model)."""
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

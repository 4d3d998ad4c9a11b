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

from ussl_core.errors import ProjectError, SettingsError, UsslError
from ussl_core.progress import CancelToken, Progress
from ussl_core.settings import check, option
from ussl_core.store import Project
from ussl_core.store.model_files import default_model_name, model_paths, write_card


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
    tensorboard: bool = option(False, "also log to PROJECT/logs/tensorboard")
    # Collapse: the predictions' spread below this share of the targets' spread, two epochs running.
    collapse_ratio: float = option(0.05, "warn of a collapse when the predictions' spread falls "
                                         "below this share of the targets'", low=0, high=1)

    def __post_init__(self) -> None:
        check(self)
        if self.min_crop_fraction > self.crop_fraction:
            raise SettingsError(f"min_crop_fraction must be at most crop_fraction ({self.crop_fraction:g}), "
                                f"not {self.min_crop_fraction:g}")


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
def epoch_batches(count: int, batch_size: int, seed: int, shuffle: bool, prepare,
                  first_epoch: int = 0, endless: bool = False):
    """Batches of `prepare(epoch, index, element_seed)` over range(count): one pass (epoch
    `first_epoch`), or with `endless` every epoch from `first_epoch` on. Each epoch is its own
    permutation (with `shuffle`) and each element its own seed, both drawn from (seed, epoch,
    index) alone: a run resumed at an epoch sees exactly the batches an uninterrupted run would,
    and the parallel map's scheduling cannot change them."""
    import tensorflow as tf

    def one_epoch(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=epoch_seed)
        return (tf.data.Dataset.from_tensor_slices(order)
                .map(lambda index: prepare(epoch, index,
                                           tf.random.experimental.stateless_fold_in(epoch_seed, index)),
                     num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size))

    if endless:
        return tf.data.Dataset.counter(first_epoch).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)
    # One pass, of a length Keras can know (its validation loop counts the batches).
    one_pass = tf.data.Dataset.range(first_epoch, first_epoch + 1).flat_map(one_epoch)
    return one_pass.apply(tf.data.experimental.assert_cardinality(math.ceil(count / batch_size))
                          ).prefetch(tf.data.AUTOTUNE)


def make_dataset(frames: np.ndarray, masks: np.ndarray, input_size: int, output_size: int,
                 batch_size: int, augment: bool, settings: TrainingSettings, shuffle: bool,
                 first_epoch: int = 0, endless: bool = False):
    """Batches of (image float32 0..255 at input size, soft mask float32 0..1 at output size);
    the order and augmentation of each epoch as `epoch_batches` draws them."""
    import tensorflow as tf

    frames_t, masks_t = tf.constant(frames), tf.constant(masks)

    def prepare(epoch, index, element_seed):
        image = tf.cast(tf.gather(frames_t, index), tf.float32)
        target = tf.cast(tf.gather(masks_t, index)[..., None], tf.float32) / 255.0
        return augment_pair(image, target, input_size, output_size, settings, augment, element_seed)

    return epoch_batches(len(frames), batch_size, settings.seed, shuffle, prepare, first_epoch, endless)


# Independent random draws of one pair's augmentation, each from its own split of the pair's seed.
_CROP_AREA, _CROP_ASPECT, _CROP_TOP, _CROP_LEFT, _FLIP, _HUE, _SATURATION, _CONTRAST, \
    _BRIGHTNESS, _BLUR, _BLUR_SIGMA, _GREY = range(12)


def augment_pair(image, target, input_size: int, output_size: int, settings: TrainingSettings,
                 augment: bool = True, seed=None):
    """One training pair (image H x W x 3 float 0..255, target H x W x 1 in 0..1) cropped,
    flipped, resized to the model's sizes and photometrically changed as the settings say.
    Geometric changes apply to both; photometric ones to the image only. Every random draw is
    stateless, from `seed` (a shape-[2] integer tensor): the same seed, the same pair."""
    import tensorflow as tf

    if augment:
        draws = tf.random.experimental.stateless_split(
            tf.zeros(2, tf.int64) if seed is None else seed, num=12)
        image, target = _random_crop(image, target, settings, draws)
        if settings.flip:
            image, target = tf.cond(_uniform(draws, _FLIP, 0, 1) < 0.5,
                                    lambda: (image[:, ::-1], target[:, ::-1]), lambda: (image, target))
    image = tf.image.resize(image, (input_size, input_size), antialias=True)
    target = tf.image.resize(target, (output_size, output_size), antialias=True)
    if augment:
        image = _photometric(image, settings, draws)
    return image, target


def _uniform(draws, which: int, low, high, dtype=None):
    import tensorflow as tf

    return tf.random.stateless_uniform((), draws[which], low, high, dtype=dtype or tf.float32)


def _random_crop(image, target, settings: TrainingSettings, draws):
    import tensorflow as tf

    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    area = _uniform(draws, _CROP_AREA, settings.min_crop_fraction, settings.crop_fraction + 1e-9)
    log_jitter = math.log1p(settings.aspect_jitter)
    aspect = tf.exp(_uniform(draws, _CROP_ASPECT, -log_jitter, log_jitter + 1e-9))
    crop_h = tf.clip_by_value(tf.cast(height * tf.sqrt(area / aspect), tf.int32), 1, tf.shape(image)[0])
    crop_w = tf.clip_by_value(tf.cast(width * tf.sqrt(area * aspect), tf.int32), 1, tf.shape(image)[1])
    top = _uniform(draws, _CROP_TOP, 0, tf.shape(image)[0] - crop_h + 1, tf.int32)
    left = _uniform(draws, _CROP_LEFT, 0, tf.shape(image)[1] - crop_w + 1, tf.int32)
    return (image[top:top + crop_h, left:left + crop_w],
            target[top:top + crop_h, left:left + crop_w])


def _photometric(image, settings: TrainingSettings, draws):
    """Colour jitter, blur and grey on an image at the input size (cheaper than at full size)."""
    import tensorflow as tf

    jitter = settings.colour_jitter
    if jitter > 0:
        rgb = image / 255.0
        rgb = tf.image.adjust_hue(rgb, _uniform(draws, _HUE, -0.1 * jitter, 0.1 * jitter))
        rgb = tf.image.adjust_saturation(rgb, _uniform(draws, _SATURATION, 1 - jitter, 1 + jitter))
        mean = tf.reduce_mean(rgb)
        rgb = (rgb - mean) * _uniform(draws, _CONTRAST, 1 - jitter, 1 + jitter) + mean
        rgb = rgb * _uniform(draws, _BRIGHTNESS, 1 - jitter, 1 + jitter)
        image = tf.clip_by_value(rgb, 0.0, 1.0) * 255.0
    # tf.cond rather than `if`: explicit graph branches inside the tf.data functions.
    if settings.blur_probability > 0:
        sigma = _uniform(draws, _BLUR_SIGMA, 0.3, 1.5)
        image = tf.cond(_uniform(draws, _BLUR, 0, 1) < settings.blur_probability,
                        lambda: _gaussian_blur(image, sigma), lambda: image)
    if settings.grey_probability > 0:
        grey = tf.repeat(tf.reduce_mean(image, axis=-1, keepdims=True), 3, axis=-1)
        image = tf.cond(_uniform(draws, _GREY, 0, 1) < settings.grey_probability,
                        lambda: grey, lambda: image)
    return image


def _gaussian_blur(image, sigma, radius: int = 3):
    """A separable Gaussian blur of one H x W x 3 image (reflected borders)."""
    import tensorflow as tf

    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / sigma))
    kernel /= tf.reduce_sum(kernel)
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    rows = tf.tile(tf.reshape(kernel, (-1, 1, 1, 1)), (1, 1, 3, 1))
    cols = tf.tile(tf.reshape(kernel, (1, -1, 1, 1)), (1, 1, 3, 1))
    out = tf.nn.depthwise_conv2d(padded, rows, (1, 1, 1, 1), "VALID")
    out = tf.nn.depthwise_conv2d(out, cols, (1, 1, 1, 1), "VALID")
    return out[0]


def distribution_strategy():
    """MirroredStrategy across several visible GPUs; the default strategy otherwise."""
    import tensorflow as tf

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

    project.require_writable()
    if arch not in STUDENTS:
        raise SettingsError(f"unknown student {arch!r}; choose from {', '.join(STUDENTS)}")
    generation = int(project.meta("generation", "1"))
    name = name or default_model_name(arch, preset, generation)
    paths = model_paths(project.root, name)
    skipped = before_training(paths, name, resume, replace, require_checkpoint)
    if skipped:
        yield skipped
        return
    data = data or load_selection(project)
    train_idx, val_idx = data.split(settings.validation_share, settings.seed)
    if len(train_idx) == 0:
        raise ProjectError(f"{project.root}: no training pairs left after holding out validation videos")
    model, state = build_or_resume(paths, resume, lambda: build_model(arch, preset), settings)
    state.update(architecture=arch, preset=preset)   # an interrupted run says what it trains
    input_size = PRESETS[preset][arch]["input_size"]
    output_size = int(model.output_shape[1])

    def dataset(idx, augment, shuffle, batch=settings.batch_size, endless=False):
        return make_dataset(data.frames[idx], data.masks[idx], input_size, output_size, batch,
                            augment, settings, shuffle, state["epoch"], endless)

    probe = next(iter(dataset(train_idx[:16], False, False, 16)))
    started = time.perf_counter()
    yield from fit_with_events(model, dataset(train_idx, True, True, endless=True),
                               dataset(val_idx, False, False) if len(val_idx) else None,
                               math.ceil(len(train_idx) / settings.batch_size), settings, paths,
                               state, name, probe, cancel)
    card = model_card(arch, preset, generation, name, model, settings, state, time.perf_counter() - started)
    card["training_data"] = {
        "selection_id": data.selection_id, "producer": data.producer, "pairs": len(data.frames),
        "train_pairs": int(len(train_idx)), "validation_pairs": int(len(val_idx)),
        "train_videos": sorted({int(v) for v in data.video_ids[train_idx]}),
        "validation_videos": sorted({int(v) for v in data.video_ids[val_idx]})}
    # Calibrated on the held-out videos (the training pairs when there are none).
    held_out = len(val_idx) > 0
    raw, targets = predict_pairs(model, dataset(val_idx if held_out else train_idx, False, False))
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


def build_or_resume(paths: dict[str, Path], resume: bool, build, settings: TrainingSettings):
    """A compiled model, fresh or from the last epoch's checkpoint, and its training state."""
    import keras

    from ussl_core.models.io import load_model

    keras.utils.set_random_seed(settings.seed)
    state = {"epoch": 0, "history": []}
    with distribution_strategy().scope():
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
                    cancel: CancelToken | None) -> Iterator[Progress]:
    """Run Keras `fit` in a thread and yield its events; cancel stops it within one batch.
    `train_ds`: endless batches from the state's epoch on (`epoch_batches`), `steps` a pass."""
    import keras

    from ussl_core.callbacks import CheckpointCallback, ProgressCallback

    total = settings.epochs * steps
    if state["epoch"] >= settings.epochs:
        yield Progress(total, total, f"{name}: already trained {state['epoch']} epochs",
                       {"event": "skipped"}, stage="train")
        return
    events: queue.Queue = queue.Queue()
    cancel = cancel or CancelToken()
    callbacks = [ProgressCallback(events, cancel, name, steps, total, state["epoch"]),
                 CheckpointCallback(paths, state, settings.collapse_ratio, events, name, probe,
                                    steps, total, cancel)]
    if settings.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths["tensorboard"])))

    # One endless iterator for the whole run: Keras made a fresh one every epoch, which cost up
    # to 4.6 s an epoch here (filling the shuffle buffer and the parallel map again). The
    # validation pass is the same every epoch.
    val_steps = int(val_ds.cardinality()) if val_ds is not None else None

    def fit() -> None:
        try:
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

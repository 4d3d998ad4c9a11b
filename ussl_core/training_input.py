"""The students' training input: the selected (frame, soft mask) pairs, in memory or streamed
from the store, augmented and batched by tf.data.

Two sources, one augmentation. A small selection is loaded into memory (`load_selection`); a
large one stays in the store (`locate_selection`) and is read shot by shot while training
(`stream_dataset`: shots interleaved in parallel, a shuffle buffer, prefetch), so memory does
not grow with the selection. `training_source` chooses by the selection's size. Either way each
epoch's order and each pair's augmentation are drawn from (seed, epoch, pair) alone: a run
resumed at an epoch sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ussl_core.errors import ProjectError
from ussl_core.multiworker import WorkerShard
from ussl_core.store import Project
from ussl_core.store.shards import read_shard

if TYPE_CHECKING:
    from ussl_core.training import TrainingSettings

# Selections up to this size are loaded into memory (faster on a small selection); larger ones
# are streamed from the store.
MEMORY_LIMIT_BYTES = 2 * 1024**3
INPUTS = ("auto", "memory", "stream")
SHUFFLE_BUFFER = 1024       # pairs held for shuffling a stream (about 360 MB of 300 x 300 frames)
INTERLEAVED_SHOTS = 8       # shots read at once by a stream
READ_CHUNK = 32             # rows read from a shard at a time


@dataclass
class TrainingData:
    """Selected pairs in memory: frames (N x H x W x 3 uint8), masks (N x H x W uint8), videos."""
    frames: np.ndarray
    masks: np.ndarray
    video_ids: np.ndarray
    selection_id: int
    producer: str
    frame_ids: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.frames)

    def split(self, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of training and validation pairs, split by whole videos."""
        is_val = np.isin(self.video_ids, list(held_out_videos(self.video_ids, share, seed)))
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)

    def parts(self, share: float, seed: int) -> tuple["TrainingData", "TrainingData"]:
        """The training and validation pairs, split by whole videos."""
        return tuple(replace(self, frames=self.frames[idx], masks=self.masks[idx],
                             video_ids=self.video_ids[idx],
                             frame_ids=[self.frame_ids[i] for i in idx] if self.frame_ids else [])
                     for idx in self.split(share, seed))

    def batches(self, input_size: int, output_size: int, batch_size: int, augment: bool,
                settings: TrainingSettings, shuffle: bool, first_epoch: int = 0, endless: bool = False,
                shard: WorkerShard = WorkerShard()):
        return make_dataset(self.frames, self.masks, input_size, output_size, batch_size, augment,
                            settings, shuffle, first_epoch, endless, shard)


def held_out_videos(video_ids: np.ndarray, share: float, seed: int) -> set[int]:
    """The videos kept for validation: a share of them (at least one when there are two or more)."""
    videos = np.unique(video_ids)
    if len(videos) < 2 or share <= 0:
        return set()
    n = max(1, int(round(share * len(videos))))
    return set(np.random.default_rng(seed).permutation(videos)[:n].tolist())


@dataclass(frozen=True)
class ShotPairs:
    """The selected pairs of one shot, as rows of its frames shard and of a masks shard."""
    frames_shard: str
    frame_rows: tuple[int, ...]
    masks_shard: str
    mask_rows: tuple[int, ...]
    pair_ids: tuple[int, ...]     # each pair's place in the selection (its augmentation's seed)
    video_id: int


@dataclass
class StoredSelection:
    """A selection's pairs where they lie in the store, read when they are needed."""
    shots: list[ShotPairs]
    frame_shape: tuple[int, int]
    selection_id: int
    producer: str
    frame_ids: list[int]

    @property
    def video_ids(self) -> np.ndarray:
        """The video of each pair, in pair order."""
        return np.array([s.video_id for s in self.shots for _ in s.pair_ids])

    @property
    def count(self) -> int:
        return sum(len(s.pair_ids) for s in self.shots)

    @property
    def nbytes(self) -> int:
        height, width = self.frame_shape
        return self.count * height * width * 4     # a frame (3 bytes a pixel) and its mask

    def parts(self, share: float, seed: int) -> tuple["StoredSelection", "StoredSelection"]:
        """The training and validation pairs, split by whole videos (the videos
        TrainingData.parts holds out)."""
        held = held_out_videos(self.video_ids, share, seed)
        return (replace(self, shots=[s for s in self.shots if s.video_id not in held]),
                replace(self, shots=[s for s in self.shots if s.video_id in held]))

    def batches(self, input_size: int, output_size: int, batch_size: int, augment: bool,
                settings: TrainingSettings, shuffle: bool, first_epoch: int = 0, endless: bool = False,
                shard: WorkerShard = WorkerShard()):
        return stream_dataset(self, input_size, output_size, batch_size, augment, settings, shuffle,
                              first_epoch, endless, shard)

    def load(self) -> TrainingData:
        """All the pairs in memory."""
        frames, masks = [], []
        for shot in self.shots:
            frames.append(read_shard(Path(shot.frames_shard), "frames", list(shot.frame_rows)))
            masks.append(read_shard(Path(shot.masks_shard), "masks", list(shot.mask_rows)))
        return TrainingData(np.concatenate(frames), np.concatenate(masks), self.video_ids,
                            self.selection_id, self.producer, list(self.frame_ids))


def locate_selection(project: Project, selection_id: int | None = None) -> StoredSelection:
    """Where the (frame, soft mask) pairs of the active selection (or the one given) lie."""
    selection = project.active_selection() if selection_id is None else project.selection(selection_id)
    if selection is None:
        raise ProjectError(f"{project.root}: no selection yet; run `ussl select` first")
    members = set(project.selection_members(selection["id"]))
    producer_ids = sorted({p for _, p in members})
    masks = [m for pid in producer_ids for m in project.masks(pid) if (m.frame_id, pid) in members]
    names = {p.id: p.name for p in project.producers()}
    if not masks:
        raise ProjectError(f"{project.root}: the selection is empty")
    frames_of = {f.id: f for f in project.frames()}
    shots = {s.id: s for s in project.shots()}
    by_shard: dict[tuple[int, str], list] = {}
    for m in masks:
        by_shard.setdefault((m.shot_id, m.shard), []).append(m)
    located, frame_ids = [], []
    for (shot_id, shard), group in by_shard.items():
        shot = shots[shot_id]
        if not shot.frames_shard:
            raise ProjectError(f"{project.root}: shot {shot.id} has no stored frames yet; run the teacher")
        group.sort(key=lambda m: m.row)
        first = len(frame_ids)
        located.append(ShotPairs(
            str(project.abspath(shot.frames_shard)),
            tuple(frames_of[m.frame_id].idx - shot.start for m in group),
            str(project.abspath(shard)), tuple(m.row for m in group),
            tuple(range(first, first + len(group))), shot.video_id))
        frame_ids += [m.frame_id for m in group]
    height, width = read_shard(Path(located[0].frames_shard), "frames", 0).shape[:2]
    return StoredSelection(located, (height, width), selection["id"],
                           ", ".join(names[p] for p in producer_ids), frame_ids)


def load_selection(project: Project, selection_id: int | None = None) -> TrainingData:
    """The (frame, soft mask) pairs of the active selection (or the one given), in memory."""
    return locate_selection(project, selection_id).load()


def training_source(project: Project, mode: str = "auto") -> TrainingData | StoredSelection:
    """The selection in memory, or left in the store to be streamed: "memory", "stream", or
    "auto" (memory up to MEMORY_LIMIT_BYTES of pairs)."""
    stored = locate_selection(project)
    if mode == "memory" or (mode == "auto" and stored.nbytes <= MEMORY_LIMIT_BYTES):
        return stored.load()
    return stored


# ----------------------------------------------------------------------------- tf.data
def epoch_batches(count: int, batch_size: int, seed: int, shuffle: bool, prepare,
                  first_epoch: int = 0, endless: bool = False, shard: WorkerShard = WorkerShard()):
    """Batches of `prepare(epoch, index, element_seed)` over range(count): one pass (epoch
    `first_epoch`), or with `endless` every epoch from `first_epoch` on. Each epoch is its own
    permutation (with `shuffle`) and each element its own seed, both drawn from (seed, epoch,
    index) alone: a run resumed at an epoch sees exactly the batches an uninterrupted run would,
    and the parallel map's scheduling cannot change them. With a `shard` (one worker of several)
    only its part of each epoch's permutation, in batches of batch_size / workers."""
    import tensorflow as tf

    def one_epoch(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=epoch_seed)
        order = order[shard.index::shard.count]
        return (tf.data.Dataset.from_tensor_slices(order)
                .map(lambda index: prepare(epoch, index,
                                           tf.random.experimental.stateless_fold_in(epoch_seed, index)),
                     num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size // shard.count))

    return _epochs(one_epoch, first_epoch, endless, shard_batches(count, batch_size, shard))


def shard_batches(count: int, batch_size: int, shard: WorkerShard) -> int:
    """Batches of one pass of a shard's elements (every shard.count-th of `count`)."""
    return math.ceil(len(range(shard.index, count, shard.count)) / (batch_size // shard.count))


def _epochs(one_epoch, first_epoch: int, endless: bool, batches_per_epoch: int):
    """`one_epoch(epoch)`'s batches for every epoch from `first_epoch` on, or for that one only."""
    import tensorflow as tf

    if endless:
        return tf.data.Dataset.counter(first_epoch).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)
    # One pass, of a length Keras can know (its validation loop counts the batches).
    one_pass = tf.data.Dataset.range(first_epoch, first_epoch + 1).flat_map(one_epoch)
    return one_pass.apply(tf.data.experimental.assert_cardinality(batches_per_epoch)
                          ).prefetch(tf.data.AUTOTUNE)


def read_rows(shard: str, name: str, rows: tuple[int, ...]) -> np.ndarray:
    """Rows of a shard; a dense run of rows is read as one slice (HDF5 reads a list of rows one
    selection at a time, about three times slower here)."""
    low, high = min(rows), max(rows) + 1
    if high - low <= 2 * len(rows):
        return read_shard(Path(shard), name, slice(low, high))[[row - low for row in rows]]
    return read_shard(Path(shard), name, list(rows))


def stream_dataset(selection: StoredSelection, input_size: int, output_size: int, batch_size: int,
                   augment: bool, settings: TrainingSettings, shuffle: bool, first_epoch: int = 0,
                   endless: bool = False, shard: WorkerShard = WorkerShard()):
    """The batches of `make_dataset`, read from the store while training: each epoch visits the
    shots in an order drawn from (seed, epoch), reads INTERLEAVED_SHOTS of them at a time in
    parallel, mixes their pairs in a shuffle buffer, and augments each pair from (seed, epoch,
    pair). Memory holds the buffer, never the selection. With a `shard` (one worker of several)
    the worker reads only its pairs (every workers-th of the selection), in batches of
    batch_size / workers."""
    import tensorflow as tf

    shots = selection.shots
    height, width = selection.frame_shape
    signature = (tf.TensorSpec((), tf.int64), tf.TensorSpec((height, width, 3), tf.uint8),
                 tf.TensorSpec((height, width), tf.uint8))

    def read_shot(index):
        shot = shots[int(index)]
        mine = [j for j, pair in enumerate(shot.pair_ids) if pair % shard.count == shard.index]
        for start in range(0, len(mine), READ_CHUNK):
            rows = mine[start:start + READ_CHUNK]
            frames = read_rows(shot.frames_shard, "frames", tuple(shot.frame_rows[j] for j in rows))
            masks = read_rows(shot.masks_shard, "masks", tuple(shot.mask_rows[j] for j in rows))
            yield from zip((shot.pair_ids[j] for j in rows), frames, masks)

    def shot_pairs(index):
        return tf.data.Dataset.from_generator(read_shot, output_signature=signature, args=(index,))

    def prepare(epoch_seed, pair_id, frame, mask):
        image = tf.cast(frame, tf.float32)
        target = tf.cast(mask[..., None], tf.float32) / 255.0
        element_seed = tf.random.experimental.stateless_fold_in(epoch_seed, pair_id)
        return augment_pair(image, target, input_size, output_size, settings, augment, element_seed)

    def one_epoch(epoch):
        epoch_seed = tf.stack([tf.constant(settings.seed, tf.int64), epoch])
        order = tf.range(len(shots), dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=epoch_seed)
        pairs = tf.data.Dataset.from_tensor_slices(order).interleave(
            shot_pairs, cycle_length=min(INTERLEAVED_SHOTS, len(shots)),
            num_parallel_calls=min(INTERLEAVED_SHOTS, len(shots)), deterministic=True)
        if shuffle:   # a fixed seed: each epoch's buffer meets its shots in an order of its own
            pairs = pairs.shuffle(SHUFFLE_BUFFER, seed=settings.seed, reshuffle_each_iteration=False)
        return (pairs.map(lambda pair_id, frame, mask: prepare(epoch_seed, pair_id, frame, mask),
                          num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size // shard.count))

    return _epochs(one_epoch, first_epoch, endless, shard_batches(selection.count, batch_size, shard))


def make_dataset(frames: np.ndarray, masks: np.ndarray, input_size: int, output_size: int,
                 batch_size: int, augment: bool, settings: TrainingSettings, shuffle: bool,
                 first_epoch: int = 0, endless: bool = False, shard: WorkerShard = WorkerShard()):
    """Batches of (image float32 0..255 at input size, soft mask float32 0..1 at output size);
    the order and augmentation of each epoch as `epoch_batches` draws them."""
    import tensorflow as tf

    frames_t, masks_t = tf.constant(frames), tf.constant(masks)

    def prepare(epoch, index, element_seed):
        image = tf.cast(tf.gather(frames_t, index), tf.float32)
        target = tf.cast(tf.gather(masks_t, index)[..., None], tf.float32) / 255.0
        return augment_pair(image, target, input_size, output_size, settings, augment, element_seed)

    return epoch_batches(len(frames), batch_size, settings.seed, shuffle, prepare, first_epoch, endless,
                         shard)


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

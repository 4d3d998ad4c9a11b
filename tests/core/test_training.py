"""Training students from the store: events, model card, video-wise validation, resume after a
kill, cancel within a batch, the collapse warning, and the paper's augmentation."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_davis, run_ussl
from ussl_core.errors import SettingsError
from ussl_core.ingest import add_sources, davis_sources
from ussl_core.progress import CancelToken, Cancelled
from ussl_core.selection import SelectionSettings, select
from ussl_core.store import Project
from ussl_core.models.io import load_model
from ussl_core.store.model_files import model_paths
from ussl_core.teacher.runner import producer_name, run_teacher
from ussl_core.training import (NEUTRAL_CALIBRATION, TrainingData, TrainingSettings,
                                fit_calibration, held_out_videos, load_selection, make_dataset,
                                train_student)

N_VIDEOS, N_FRAMES = 3, 20
CARD_KEYS = {"architecture", "preset", "generation", "training_data", "settings", "seed",
             "versions", "epochs", "history", "wall_seconds"}


@pytest.fixture(scope="module")
def project_root(tmp_path_factory) -> Path:
    """3 generated videos of 20 frames, VideoPCA masks, the top 50 % selected (30 pairs)."""
    tmp = tmp_path_factory.mktemp("training")
    davis = make_davis(tmp / "davis", n_videos=N_VIDEOS)
    with Project.create(tmp / "project") as project:
        for _ in add_sources(project, davis_sources(davis)):
            pass
        for _ in run_teacher(project, "videopca", workers=1):
            pass
        select(project, project.producer(producer_name("videopca")).id,
               SelectionSettings(top_percent=50))
    return tmp / "project"


def kinds(events) -> list[str]:
    return [e.metrics.get("event") for e in events]


# ----------------------------------------------------------------------------- training run
def test_train_student_events_card_and_video_split(project_root: Path) -> None:
    settings = TrainingSettings(epochs=2, batch_size=4)
    with Project.open(project_root, write=True) as project:
        data = load_selection(project)
        events = list(train_student(project, "lowres", "compact", settings))
        paths = model_paths(project.root, "g1_lowres_compact")
    assert data.frames.shape == (30, 300, 300, 3) and data.masks.shape == (30, 300, 300)
    train_idx, val_idx = data.split(settings.validation_share, settings.seed)
    train_videos, val_videos = set(data.video_ids[train_idx]), set(data.video_ids[val_idx])
    assert train_videos and val_videos and not train_videos & val_videos
    assert len(train_idx) + len(val_idx) == 30

    steps = math.ceil(len(train_idx) / settings.batch_size)
    batches = [e for e in events if e.metrics.get("event") == "batch"]
    epochs = [e for e in events if e.metrics.get("event") == "epoch"]
    assert len(batches) == settings.epochs * steps
    assert [e.done for e in batches[:steps]] == list(range(1, steps + 1))
    assert all(e.total == settings.epochs * steps for e in batches)
    assert all(np.isfinite(e.metrics["loss"]) for e in batches)
    assert [e.metrics["epoch"] for e in epochs] == [1, 2]
    assert all("val_loss" in e.metrics and "mean_prediction" in e.metrics for e in epochs)
    # A healthy run on real teacher masks is not reported as collapsed (the detector can stay quiet).
    assert "collapse" not in kinds(events)
    assert kinds(events)[-1] == "saved"

    assert paths["model"].exists() and paths["card"].exists()
    assert not paths["checkpoint"].exists() and not paths["state"].exists()
    card = json.loads(paths["card"].read_text())
    assert CARD_KEYS <= set(card)
    assert (card["architecture"], card["preset"], card["generation"]) == ("lowres", "compact", 1)
    assert card["seed"] == settings.seed and card["settings"]["batch_size"] == 4
    assert card["epochs"] == 2 and [r["epoch"] for r in card["history"]] == [1, 2]
    assert card["collapsed_at_epoch"] is None
    assert {"tensorflow", "keras", "numpy", "python", "ussl"} <= set(card["versions"])
    assert card["wall_seconds"] > 0
    td = card["training_data"]
    assert td["pairs"] == 30 and td["producer"] == "videopca@g1"
    assert td["train_pairs"] == len(train_idx) and td["validation_pairs"] == len(val_idx)
    assert td["train_videos"] and td["validation_videos"]
    assert not set(td["train_videos"]) & set(td["validation_videos"])
    assert set(td["train_videos"]) | set(td["validation_videos"]) == set(data.video_ids.tolist())

    from ussl_core.models.io import load_model

    model = load_model(paths["model"])
    assert tuple(model.output_shape) == (None, 16, 16, 1)
    # Calibrated on the held-out video's teacher masks: the saved model ends in the fitted map.
    calibration = card["calibration"]
    assert calibration["fitted_on"] == "validation videos" and calibration["pairs"] == len(val_idx)
    layer = model.get_layer("calibrated")
    assert (layer.slope, layer.offset) == (calibration["slope"], calibration["offset"])
    outputs = np.asarray(model(np.zeros((1, 64, 64, 3), np.float32)))
    assert np.all((outputs > 0) & (outputs < 1))


def test_held_out_videos_split_whole_videos() -> None:
    videos = np.repeat(np.arange(10, 17), 5)
    data = TrainingData(np.zeros((len(videos), 2, 2, 3), np.uint8), np.zeros((len(videos), 2, 2), np.uint8),
                        videos, 1, "t")
    train, val = data.split(0.3, seed=4)
    assert len(train) + len(val) == len(videos)
    assert not set(videos[train]) & set(videos[val])
    assert len(set(videos[val])) == 2           # round(0.3 * 7)
    assert held_out_videos(np.array([1, 1, 1]), 0.5, 0) == set()   # one video: nothing held out
    assert len(held_out_videos(np.array([1, 2]), 0.01, 0)) == 1    # at least one of two
    assert held_out_videos(np.array([1, 2, 3]), 0.0, 0) == set()


def test_training_settings_validation() -> None:
    for bad in (dict(epochs=0), dict(batch_size=0), dict(learning_rate=0.0), dict(learning_rate=1.0),
                dict(crop_fraction=0.05), dict(crop_fraction=1.2), dict(validation_share=1.0),
                dict(validation_share=-0.1)):
        with pytest.raises(SettingsError):
            TrainingSettings(**bad)
    TrainingSettings(crop_fraction=1.0, validation_share=0.0, epochs=1, batch_size=1)


def test_unknown_student_is_a_settings_error(project_root: Path) -> None:
    with Project.open(project_root, write=True) as project:
        with pytest.raises(SettingsError, match="unknown student"):
            next(train_student(project, "evalseg", "compact", TrainingSettings(epochs=1)))


# ----------------------------------------------------------------------------- resume after a kill
def test_resume_after_kill_continues_from_the_checkpoint(project_root: Path) -> None:
    # BasicU-Net rather than DenseU-Net: the resume logic does not depend on the architecture,
    # and DenseU-Net's graph takes twice as long to build in each of the two child processes.
    name = "g1_basic_unet_compact"
    state_file = project_root / "models" / f"{name}.ckpt.json"
    card_file = project_root / "models" / f"{name}.json"
    args = ["train", str(project_root), "--arch", "basic_unet", "--epochs", "3", "--batch-size", "4"]
    env = {k: v for k, v in os.environ.items() if k != "USSL_CRASH_AT"}
    log = project_root.parent / "killed-train.stderr"
    with open(log, "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "ussl_core.cli", *args, "--quiet"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 240
    try:
        while True:
            assert child.poll() is None, \
                f"training ended before it could be killed: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            if state_file.exists() and json.loads(state_file.read_text())["epoch"] >= 1:
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_state = json.loads(state_file.read_text())
    assert 1 <= killed_state["epoch"] < 3 and not card_file.exists()
    assert (project_root / "models" / f"{name}.ckpt.keras").exists()

    result = run_ussl(*args, "--resume", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads(card_file.read_text())
    assert card["epochs"] == 3
    assert [r["epoch"] for r in card["history"]] == [1, 2, 3]
    # The killed run's epochs are kept as they were, not recomputed.
    assert card["history"][: killed_state["epoch"]] == killed_state["history"]
    assert not state_file.exists()

    with Project.open(project_root) as project:
        jobs = [j for j in project.jobs() if j["kind"] == "train"
                and json.loads(j["args"])["archs"] == ["basic_unet"]]
    resumed, killed = jobs[0], jobs[1]
    assert killed["status"] == "killed" and resumed["status"] == "done"
    lines = (project_root / resumed["log"]).read_text().splitlines()
    batch_epochs = [int(line.split(" epoch ")[1].split()[0]) for line in lines if " batch " in line]
    steps = math.ceil(card["training_data"]["train_pairs"] / 4)
    # The resumed run trained only the epochs the killed one had not finished.
    assert sorted(set(batch_epochs)) == list(range(killed_state["epoch"] + 1, 4))
    assert len(batch_epochs) == (3 - killed_state["epoch"]) * steps


# ----------------------------------------------------------------------------- cancel
def test_cancel_stops_within_one_batch(project_root: Path) -> None:
    token = CancelToken()
    after_cancel = []
    with Project.open(project_root, write=True) as project:
        events = train_student(project, "lowres", "compact", TrainingSettings(epochs=3, batch_size=4),
                               name="cancelled_lowres", cancel=token)
        with pytest.raises(Cancelled):
            for event in events:
                if event.metrics.get("event") == "batch":
                    if token.cancelled:
                        after_cancel.append(event)
                    else:
                        token.cancel()
        paths = model_paths(project.root, "cancelled_lowres")
    assert len(after_cancel) <= 2, [e.message for e in after_cancel]
    assert not paths["model"].exists() and not paths["card"].exists()
    import threading

    assert not [t for t in threading.enumerate() if t.name == "train-cancelled_lowres"]


def test_stop_after_the_epoch_keeps_it_and_resume_finishes(project_root: Path) -> None:
    token = CancelToken()
    seen = []
    with Project.open(project_root, write=True) as project:
        events = train_student(project, "lowres", "compact", TrainingSettings(epochs=3, batch_size=8),
                               name="stopped_lowres", cancel=token)
        with pytest.raises(Cancelled):
            for event in events:
                seen.append(event.metrics.get("event"))
                token.stop_at_boundary()     # asked during the first epoch
        paths = model_paths(project.root, "stopped_lowres")
        # The whole first epoch ran and was checkpointed; then it stopped.
        assert seen.count("epoch") == 1 and seen[-1] == "stopped"
        assert json.loads(paths["state"].read_text())["epoch"] == 1
        assert not paths["model"].exists()
        resumed = list(train_student(project, "lowres", "compact",
                                     TrainingSettings(epochs=3, batch_size=8), name="stopped_lowres",
                                     resume=True))
    assert [e.metrics["epoch"] for e in resumed if e.metrics.get("event") == "epoch"] == [2, 3]
    assert json.loads(paths["card"].read_text())["epochs"] == 3

    # The resumed run's batches and augmentation are those of an uninterrupted run (drawn from
    # the seed, the epoch and the pair alone), so it ends with exactly the same weights.
    with Project.open(project_root, write=True) as project:
        list(train_student(project, "lowres", "compact", TrainingSettings(epochs=3, batch_size=8),
                           name="uninterrupted_lowres"))
    stopped, whole = (load_model(model_paths(project_root, n)["model"]).get_weights()
                      for n in ("stopped_lowres", "uninterrupted_lowres"))
    assert len(stopped) == len(whole)
    for a, b in zip(stopped, whole):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- collapse
def _tiny_sigmoid_net(arch: str, preset: str = "compact", **_):
    """The configuration DESIGN.md saw collapse: no batch normalisation, sigmoid output."""
    import keras

    from ussl_core.models import PRESETS
    from ussl_core.models.layers import ImageFeatures

    size = PRESETS[preset][arch]["input_size"]
    image = keras.Input((size, size, 3), name="image")
    x = ImageFeatures(["rgb"], name="features")(image)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(image, mask, name="tiny")


def test_collapse_event_on_sparse_targets(project_root: Path, monkeypatch) -> None:
    import ussl_core.models

    monkeypatch.setattr(ussl_core.models, "build_model", _tiny_sigmoid_net)
    with Project.open(project_root, write=True) as project:
        data = load_selection(project)
        sparse = np.zeros_like(data.masks)
        sparse[:, 140:150, 140:150] = 255          # 0.1 % of the pixels are foreground
        data = dataclasses.replace(data, masks=sparse)
        events = list(train_student(project, "lowres", "compact",
                                    TrainingSettings(epochs=3, batch_size=4, learning_rate=0.5),
                                    name="collapsing", data=data))
        card = json.loads(model_paths(project.root, "collapsing")["card"].read_text())
    collapses = [e for e in events if e.metrics.get("event") == "collapse"]
    assert len(collapses) == 1
    event = collapses[0]
    assert event.metrics["prediction_std"] < 1e-3 and abs(event.metrics["mean_prediction"]) < 0.05
    assert "collapsed" in event.message and "sparse" in event.message
    assert card["collapsed_at_epoch"] == event.metrics["epoch"] >= 2


# ----------------------------------------------------------------------------- augmentation
def coordinate_frame(height: int = 80, width: int = 120):
    """Red = column, green = row; the mask holds the column too."""
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    return frame, xs.astype(np.uint8)


def test_augmentation_crops_80_percent_and_flips() -> None:
    frame, mask = coordinate_frame()
    n = 48
    settings = TrainingSettings(crop_fraction=0.8, flip=True)
    side_w = int(120 * math.sqrt(0.8))   # 107: the crop's width, kept as is by the resize
    ds = make_dataset(np.repeat(frame[None], n, 0), np.repeat(mask[None], n, 0), side_w, side_w,
                      n, augment=True, settings=settings, shuffle=False)
    images, targets = (np.asarray(t) for t in next(iter(ds)))
    assert images.shape == (n, side_w, side_w, 3) and targets.shape == (n, side_w, side_w, 1)
    assert images.dtype == np.float32 and targets.dtype == np.float32
    flips, lefts = [], set()
    for image, target in zip(images, targets):
        xs, ys = image[..., 0], image[..., 1]
        x_span = xs.max() - xs.min() + 1
        y_span = ys.max() - ys.min() + 1
        assert 0 <= xs.min() and xs.max() <= 119 and 0 <= ys.min() and ys.max() <= 79
        assert 0.77 <= x_span * y_span / (120 * 80) <= 0.82
        row = xs[side_w // 2]
        assert np.all(np.diff(row) > 0) or np.all(np.diff(row) < 0)
        flips.append(bool(row[0] > row[-1]))
        lefts.add(round(float(xs.min())))
        # The mask is cropped and flipped with its image.
        np.testing.assert_allclose(target[..., 0] * 255.0, xs, atol=0.6)
    assert any(flips) and not all(flips)
    assert len(lefts) > 1

    no_flip = make_dataset(np.repeat(frame[None], 16, 0), np.repeat(mask[None], 16, 0), side_w,
                           side_w, 16, True, TrainingSettings(flip=False), False)
    images = np.asarray(next(iter(no_flip))[0])
    assert all(np.all(np.diff(im[side_w // 2, :, 0]) > 0) for im in images)


def test_dataset_sizes_and_no_augmentation() -> None:
    frame, mask = coordinate_frame()
    ds = make_dataset(np.repeat(frame[None], 6, 0), np.repeat(mask[None], 6, 0), 64, 16, 4,
                      augment=True, settings=TrainingSettings(), shuffle=True)
    shapes = [(tuple(x.shape), tuple(y.shape)) for x, y in ds]
    assert shapes == [((4, 64, 64, 3), (4, 16, 16, 1)), ((2, 64, 64, 3), (2, 16, 16, 1))]
    plain = make_dataset(frame[None], mask[None], 120, 120, 1, augment=False,
                         settings=TrainingSettings(), shuffle=False)
    image, target = (np.asarray(t)[0] for t in next(iter(plain)))
    # Without augmentation the whole frame is seen, unflipped.
    assert image[..., 0].min() == 0 and image[..., 0].max() == 119
    assert np.all(np.diff(image[40, :, 0]) > 0)
    assert 0.0 <= target.min() and target.max() <= 1.0


def test_calibration_puts_0_5_where_masks_best_agree_with_the_teacher() -> None:
    rng = np.random.default_rng(3)
    # Dim raw masks (a student that rarely exceeds 0.3 where the teacher says foreground).
    teacher = np.zeros((40, 32, 32), np.float32)
    teacher[:, 8:24, 8:24] = 0.9
    raw = np.where(teacher > 0.5, 0.3, 0.05) + rng.normal(0, 0.03, teacher.shape)
    slope, offset = fit_calibration(raw, teacher)
    calibrated = 1 / (1 + np.exp(-(slope * raw + offset)))
    assert slope > 0
    assert np.mean((calibrated > 0.5) == (teacher > 0.5)) > 0.99
    # 0.5 sits between the two levels, so most of the object is kept at the product's threshold.
    assert 0.1 < -offset / slope < 0.25
    assert fit_calibration(np.linspace(0, 1, 50).reshape(2, 25), np.zeros((2, 25))) == NEUTRAL_CALIBRATION
    assert fit_calibration(np.ones((2, 25)), np.full((2, 25), 0.9)) == NEUTRAL_CALIBRATION


def test_recipe_augmentation_scales_colours_blurs_and_greys_on_a_tiny_input() -> None:
    frame, mask = coordinate_frame()
    n = 64
    settings = TrainingSettings(min_crop_fraction=0.3, crop_fraction=1.0, aspect_jitter=0.5,
                                colour_jitter=0.5, blur_probability=0.5, grey_probability=0.3)
    ds = make_dataset(np.repeat(frame[None], n, 0), np.repeat(mask[None], n, 0), 24, 24, n,
                      augment=True, settings=settings, shuffle=False)
    images, targets = (np.asarray(t) for t in next(iter(ds)))
    assert images.shape == (n, 24, 24, 3) and targets.shape == (n, 24, 24, 1)
    assert 0 <= images.min() and images.max() <= 255 and 0 <= targets.min() and targets.max() <= 1
    # Geometry: the target (the column, unchanged by colour) spans crops of many sizes.
    spans = targets[..., 0].max(axis=(1, 2)) - targets[..., 0].min(axis=(1, 2))
    assert spans.min() < 0.6 * 119 / 255 and spans.max() > 0.9 * 119 / 255
    # Grey images have equal channels; about 30 % of them.
    grey = np.all(np.abs(images[..., 0] - images[..., 2]) < 1e-3, axis=(1, 2))
    assert 5 <= grey.sum() <= 35
    # Colour jitter moves the mean brightness of the same content.
    plain = make_dataset(np.repeat(frame[None], n, 0), np.repeat(mask[None], n, 0), 24, 24, n,
                         augment=True, settings=TrainingSettings(min_crop_fraction=1.0, crop_fraction=1.0,
                                                                 flip=False, colour_jitter=0.5),
                         shuffle=False)
    jittered = np.asarray(next(iter(plain))[0])
    assert jittered.mean(axis=(1, 2, 3)).std() > 3.0
    # Blur: a stripe pattern loses most of its contrast.
    from ussl_core.training_input import _gaussian_blur
    stripes = np.repeat((np.indices((24, 24))[1] % 2 * 255.0)[..., None], 3, axis=2).astype(np.float32)
    blurred = np.asarray(_gaussian_blur(stripes, 1.2))
    assert blurred.shape == stripes.shape
    assert np.abs(np.diff(blurred[..., 0], axis=1)).mean() < 0.2 * 255


def test_cross_entropy_loss_trains_a_calibrated_student(project_root: Path) -> None:
    settings = TrainingSettings(epochs=1, batch_size=8, loss="bce")
    with Project.open(project_root, write=True) as project:
        events = list(train_student(project, "dilate_unet", "compact", settings, name="bce_unet"))
        paths = model_paths(project.root, "bce_unet")
    assert kinds(events)[-1] == "saved"
    card = json.loads(paths["card"].read_text())
    assert card["settings"]["loss"] == "bce" and card["calibration"]["slope"] > 0
    from ussl_core.models.io import load_model

    outputs = np.asarray(load_model(paths["model"])(np.zeros((1, 128, 128, 3), np.float32)))
    assert np.all((outputs > 0) & (outputs < 1))
    with pytest.raises(SettingsError, match="loss"):
        TrainingSettings(loss="hinge")

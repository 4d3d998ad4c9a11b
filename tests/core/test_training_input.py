"""The training input streamed from the store: every selected pair once an epoch, an order of
each epoch's own that a resumed run sees again, the memory path's pairs and augmentation, the
automatic choice, and a streaming training run resumed after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import run_ussl
from tests.kill_harness import TRAIN_ARGS, child_env, model_state, ussl_command
from ussl_core import training_input
from ussl_core.store import Project
from ussl_core.training import TrainingSettings
from ussl_core.training_input import StoredSelection, TrainingData, locate_selection, training_source

SIZE, BATCH = 24, 4


@pytest.fixture(scope="module")
def stored(harness_data) -> StoredSelection:
    with Project.open(harness_data.taught) as project:
        return locate_selection(project)


def fingerprints(dataset, batches: int) -> list[float]:
    """Each pair's image summed: tells the generated frames apart."""
    sums = []
    for images, _ in dataset.take(batches):
        sums += [round(float(s), 2) for s in np.asarray(images).sum(axis=(1, 2, 3))]
    return sums


def test_a_stream_visits_every_pair_once_an_epoch_in_an_order_of_its_own(stored):
    settings = TrainingSettings()
    steps = math.ceil(stored.count / BATCH)
    in_memory = fingerprints(stored.load().batches(SIZE, SIZE, BATCH, False, settings, False), steps)
    assert len(in_memory) == stored.count == 45
    stream = stored.batches(SIZE, SIZE, BATCH, False, settings, True, endless=True)
    two_epochs = fingerprints(stream, 2 * steps)
    first, second = two_epochs[:stored.count], two_epochs[stored.count:]
    assert sorted(first) == sorted(second) == sorted(in_memory)
    assert first != second and first != in_memory
    # A run resumed at epoch 1 sees the second epoch again, batch for batch.
    resumed = stored.batches(SIZE, SIZE, BATCH, False, settings, True, first_epoch=1, endless=True)
    assert fingerprints(resumed, steps) == second


def test_the_stream_augments_as_the_memory_path_does(stored):
    """One augmentation: the same settings give crops of the same spread either way."""
    settings = TrainingSettings(min_crop_fraction=0.3, crop_fraction=1.0, colour_jitter=0.5)
    stream = stored.batches(SIZE, SIZE, stored.count, True, settings, True)
    memory = stored.load().batches(SIZE, SIZE, stored.count, True, settings, True)
    spreads = [np.asarray(next(iter(ds))[0]).std(axis=(1, 2, 3)) for ds in (stream, memory)]
    assert abs(np.median(spreads[0]) - np.median(spreads[1])) < 0.15 * np.median(spreads[1])
    plain = np.asarray(next(iter(stored.batches(SIZE, SIZE, stored.count, False, settings, True)))[0])
    assert not np.allclose(np.asarray(next(iter(stream))[0]).mean(axis=(1, 2, 3)).std(),
                           plain.mean(axis=(1, 2, 3)).std())


def test_validation_holds_out_the_same_whole_videos_either_way(stored):
    train, val = stored.parts(0.34, seed=0)
    memory_train, memory_val = stored.load().parts(0.34, seed=0)
    assert train.count + val.count == stored.count and val.count > 0
    assert set(val.video_ids) == set(memory_val.video_ids)
    assert not set(train.video_ids) & set(val.video_ids)
    assert (train.count, val.count) == (memory_train.count, memory_val.count)


def test_auto_streams_a_selection_larger_than_the_memory_limit(harness_data, monkeypatch):
    with Project.open(harness_data.taught) as project:
        assert isinstance(training_source(project, "auto"), TrainingData)
        assert isinstance(training_source(project, "stream"), StoredSelection)
        monkeypatch.setattr(training_input, "MEMORY_LIMIT_BYTES", 1000)
        assert isinstance(training_source(project, "auto"), StoredSelection)
        assert isinstance(training_source(project, "memory"), TrainingData)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL")
def test_a_streaming_run_resumed_after_sigkill_ends_as_an_uninterrupted_one(harness_data):
    import shutil

    args = (*TRAIN_ARGS, "--input", "stream", "--quiet")
    base = harness_data.base
    whole, killed = base / "stream-whole", base / "stream-killed"
    for root in (whole, killed):
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(harness_data.taught, root)
    assert run_ussl("train", whole, *args, timeout=300).returncode == 0
    state = killed / "models" / "g1_lowres_compact.ckpt.json"
    child = subprocess.Popen(ussl_command("train", killed, *args), env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while not (state.exists() and json.loads(state.read_text())["epoch"] >= 1):
            assert child.poll() is None and time.monotonic() < deadline, "no checkpoint to kill after"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    resumed = run_ussl("train", killed, *args[:-1], "--resume", "--quiet", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    card = json.loads((killed / "models" / "g1_lowres_compact.json").read_text())
    assert card["training_data"]["input"] == "stream"
    assert model_state(killed / "models", "g1_lowres_compact") == model_state(whole / "models", "g1_lowres_compact")

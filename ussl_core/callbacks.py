"""Keras callbacks that turn `fit` into ussl progress events (imports Keras)."""

from __future__ import annotations

import json
import os
import queue

import keras
import numpy as np

from ussl_core.models.io import save_model_atomic
from ussl_core.progress import CancelToken, Cancelled, Progress
from ussl_core.testhooks import crash_point, write_fault


def is_collapsed(predictions: np.ndarray, targets: np.ndarray, ratio: float) -> bool:
    """True when the predicted masks vary far less than their targets: a near-constant output."""
    return float(np.std(predictions)) < ratio * float(np.std(targets))


class ProgressCallback(keras.callbacks.Callback):
    """Puts a progress event on the queue after every batch; stops within one batch on cancel."""

    def __init__(self, events: queue.Queue, cancel: CancelToken, name: str, steps: int,
                 total: int, first_epoch: int) -> None:
        super().__init__()
        self.events, self.cancel, self.name = events, cancel, name
        self.steps, self.total, self.epoch = steps, total, first_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = self.epoch * self.steps + batch + 1
        loss = float((logs or {}).get("loss", float("nan")))
        self.events.put(("progress", Progress(
            done, self.total, f"{self.name} epoch {self.epoch + 1} batch {batch + 1}/{self.steps}",
            {"event": "batch", "model": self.name, "epoch": self.epoch + 1, "batch": batch + 1,
             "steps": self.steps, "loss": loss},
            stage="train")))
        if self.cancel.cancelled:
            raise Cancelled()


class CheckpointCallback(keras.callbacks.Callback):
    """After every epoch: a resumable checkpoint, an epoch event, and a collapse check."""

    # Collapse must persist this many epochs: an untrained net also looks constant at first.
    COLLAPSE_PATIENCE = 2

    def __init__(self, paths: dict, state: dict, collapse_ratio: float, events: queue.Queue,
                 name: str, probe: tuple | None, steps: int, total: int,
                 cancel: CancelToken | None = None, writes: bool = True) -> None:
        """`writes` False: a worker of a multi-worker run that is not the chief keeps the state
        in memory and writes no file."""
        super().__init__()
        self.writes = writes
        self.cancel = cancel or CancelToken()
        self.paths, self.state, self.collapse_ratio = paths, state, collapse_ratio
        self.events, self.name, self.probe = events, name, probe
        self.steps, self.total = steps, total

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        record = {"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan")))}
        if "val_loss" in logs:
            record["val_loss"] = float(logs["val_loss"])
        if self.probe is not None:
            predictions = keras.ops.convert_to_numpy(self.model(self.probe[0], training=False))
            record["mean_prediction"] = float(predictions.mean())
            record["prediction_std"] = float(predictions.std())
        collapsed = self.probe is not None and is_collapsed(
            predictions, np.asarray(self.probe[1]), self.collapse_ratio)
        # Kept in the checkpoint state, so that a collapse spanning a kill is still seen.
        self.state["flat_epochs"] = self.state.get("flat_epochs", 0) + 1 if collapsed else 0
        newly_collapsed = self.state["flat_epochs"] == self.COLLAPSE_PATIENCE
        if newly_collapsed:
            self.state["collapsed_at_epoch"] = epoch + 1
        self.state["history"].append(record)
        self.state["epoch"] = epoch + 1
        # The checkpoint and its state change together: the state is written first under a
        # pending name that says which optimizer step it belongs to, then the checkpoint, then
        # the state is renamed. A kill between the two renames leaves a pending state that
        # resuming adopts (training.build_or_resume), never a checkpoint ahead of its state.
        self.state["iterations"] = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.writes:
            write_fault("state", self.paths["pending_state"])
            self.paths["pending_state"].write_text(json.dumps(self.state))
            save_model_atomic(self.model, self.paths["checkpoint"])
            crash_point("checkpoint-saved")   # the test hook: a kill between the two renames
            os.replace(self.paths["pending_state"], self.paths["state"])
        done = (epoch + 1) * self.steps
        val = f", val {record['val_loss']:.4f}" if "val_loss" in record else ""
        self.events.put(("progress", Progress(
            done, self.total, f"{self.name} epoch {epoch + 1}: loss {record['loss']:.4f}{val}",
            {"event": "epoch", "model": self.name, **record}, stage="train")))
        if newly_collapsed:
            self.events.put(("progress", Progress(
                done, self.total,
                f"{self.name} collapsed after epoch {epoch + 1}: every prediction is about "
                f"{record['mean_prediction']:.3f} (spread {record['prediction_std']:.4f}); the "
                "selected masks may be too sparse, or the learning rate too high",
                {"event": "collapse", "model": self.name, **record}, stage="train")))
        if self.cancel.stop_requested and epoch + 1 < self.params.get("epochs", epoch + 2):
            self.events.put(("progress", Progress(
                done, self.total, f"{self.name}: stopped after epoch {epoch + 1} (resume continues)",
                {"event": "stopped", "model": self.name, "epoch": epoch + 1}, stage="train")))
            raise Cancelled()

"""Training on several machines: tf.distribute.MultiWorkerMirroredStrategy (imports TensorFlow).

The cluster comes from the standard TF_CONFIG, or from SLURM's environment when `ussl train`
runs as a SLURM step of several tasks (srun). Every worker runs the same `ussl train` command
on the same project (a shared filesystem); the chief (TF_CONFIG's "chief", else worker 0) is the
only one that writes: checkpoints, the final model and its card, the job record. The others
open the project read-only.

Keras 3's `fit` fails under this strategy with the pinned versions (TensorFlow 2.21, Keras
3.15: "Attempt to convert a value (PerReplica:{...}) with an unsupported type to a Tensor", in
its data adapter); so the training step here is written with `strategy.run`, and the same
callbacks as `fit`'s are called by hand. Each worker reads only its share of every epoch
(`WorkerShard`), and the gradients are summed across workers by the strategy.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

SLURM_PORT = 8470   # the port each SLURM task's TensorFlow server listens on (USSL_SLURM_PORT)


@dataclass(frozen=True)
class WorkerShard:
    """This worker's part of the input: every `count`-th element from `index` on."""
    index: int = 0
    count: int = 1


@dataclass(frozen=True)
class WorkerRole:
    """Where this process stands in a multi-worker run."""
    workers: int
    index: int
    chief: bool
    source: str   # "TF_CONFIG" or "SLURM"


def slurm_cluster():
    """A cluster resolver when this process is one of several tasks of a SLURM step, else None.

    Built from SLURM's own variables (no scontrol, so it works inside containers): the step's
    nodes (SLURM_STEP_NODELIST) with their task counts (SLURM_STEP_TASKS_PER_NODE), tasks placed
    node by node in SLURM's block order, the k-th task of a node listening on port
    USSL_SLURM_PORT + k. TensorFlow's own SlurmClusterResolver places no task on a node without
    GPUs (TensorFlow 2.21), hence this one."""
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS")
    if not tasks or int(tasks) < 2 or "SLURM_PROCID" not in os.environ:
        return None
    import tensorflow as tf

    nodes = expand_hostlist(os.environ.get("SLURM_STEP_NODELIST") or os.environ["SLURM_JOB_NODELIST"])
    per_node = expand_counts(os.environ.get("SLURM_STEP_TASKS_PER_NODE")
                             or os.environ["SLURM_TASKS_PER_NODE"])
    port = int(os.environ.get("USSL_SLURM_PORT", SLURM_PORT))
    workers = [f"{node}:{port + k}" for node, count in zip(nodes, per_node) for k in range(count)]
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": workers}), task_type="worker",
        task_id=int(os.environ["SLURM_PROCID"]), rpc_layer="grpc")


def expand_hostlist(text: str) -> list[str]:
    """SLURM's compressed host list: "gpu[07-09,12],login1" -> gpu07 gpu08 gpu09 gpu12 login1."""
    hosts, depth, start = [], 0, 0
    for i, char in enumerate(text + ","):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            hosts += _expand_host(text[start:i])
            start = i + 1
    return [h for h in hosts if h]


def _expand_host(item: str) -> list[str]:
    match = re.fullmatch(r"([^\[]*)\[([^\]]+)\](.*)", item)
    if not match:
        return [item]
    prefix, ranges, rest = match.groups()
    names = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        for number in range(int(low), int(high or low) + 1):
            names += [f"{prefix}{number:0{len(low)}d}{tail}" for tail in _expand_host(rest)]
    return names


def expand_counts(text: str) -> list[int]:
    """SLURM's compressed task counts: "2(x3),1" -> [2, 2, 2, 1]."""
    counts = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            from ussl_core.errors import SettingsError

            raise SettingsError(f"SLURM task counts {text!r} are not in SLURM's form (2(x3),1)")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def worker_role() -> WorkerRole | None:
    """This process's role, read from TF_CONFIG or SLURM; None for a run on one machine."""
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            config = json.loads(raw)
            cluster, task = config["cluster"], config["task"]
            size = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
            kind, index = task["type"], int(task["index"])
        except (ValueError, KeyError, TypeError) as exc:
            from ussl_core.errors import SettingsError

            raise SettingsError(f"TF_CONFIG is not a cluster and task description ({exc})") from None
        if size < 2:
            return None
        chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
        position = index if kind == "chief" else index + len(cluster.get("chief", []))
        return WorkerRole(size, position, chief, "TF_CONFIG")
    resolver = slurm_cluster()
    if resolver is None:
        return None
    workers = len(resolver.cluster_spec().as_dict()["worker"])
    return WorkerRole(workers, resolver.task_id, resolver.task_id == 0, "SLURM")


_strategy = None


def multi_worker_strategy():
    """The process's MultiWorkerMirroredStrategy (made once: TensorFlow allows it only before its
    runtime starts), or None on one machine."""
    global _strategy
    if _strategy is None and worker_role() is not None:
        import tensorflow as tf

        resolver = slurm_cluster() if not os.environ.get("TF_CONFIG") else None
        _strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    return _strategy


def per_example_loss(loss: str) -> Callable:
    """Each example's loss, averaged over its pixels, as compile_student's loss computes it."""
    import keras
    import tensorflow as tf

    def mse(target, prediction):
        return tf.reduce_mean(tf.reshape(tf.square(target - prediction), [tf.shape(target)[0], -1]), axis=1)

    def bce(target, prediction):
        per_pixel = keras.losses.binary_crossentropy(target, prediction, from_logits=True)
        return tf.reduce_mean(tf.reshape(per_pixel, [tf.shape(target)[0], -1]), axis=1)

    return mse if loss == "mse" else bce


def fit_multi_worker(model, strategy, worker_dataset: Callable, val_ds, steps: int, epochs: int,
                     first_epoch: int, batch_size: int, loss: str, callbacks: list) -> None:
    """`fit`'s work under MultiWorkerMirroredStrategy: `steps` batches an epoch from the endless
    `worker_dataset(WorkerShard)` of this worker, the callbacks called as `fit` calls them, the
    validation loss of `val_ds` (every worker computes the same, on all of it)."""
    import numpy as np
    import tensorflow as tf

    per_example = per_example_loss(loss)
    replicas = strategy.num_replicas_in_sync

    def dataset_fn(context):
        shard = WorkerShard(context.input_pipeline_id, context.num_input_pipelines)
        data = worker_dataset(shard)
        local = replicas // context.num_input_pipelines
        return data.rebatch(max(1, batch_size // replicas)) if local > 1 else data

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

    @tf.function
    def train_step():
        def step(images, targets):
            with tf.GradientTape() as tape:
                losses = per_example(targets, model(images, training=True))
                total = tf.nn.compute_average_loss(losses, global_batch_size=batch_size)
            gradients = tape.gradient(total, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return total

        images, targets = next(iterator)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step, args=(images, targets)),
                               axis=None)

    @tf.function
    def validation_losses(images, targets):
        return per_example(targets, model(images, training=False))

    for callback in callbacks:
        callback.set_model(model)
        callback.set_params({"epochs": epochs, "steps": steps, "verbose": 0})
    for epoch in range(first_epoch, epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        losses = []
        for batch in range(steps):
            losses.append(float(train_step()))
            for callback in callbacks:
                callback.on_train_batch_end(batch, {"loss": float(np.mean(losses))})
        logs = {"loss": float(np.mean(losses))}
        if val_ds is not None:
            logs["val_loss"] = float(np.mean(np.concatenate(
                [validation_losses(x, y).numpy() for x, y in val_ds])))
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)

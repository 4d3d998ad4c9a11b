"""Training on several workers (ussl_core.multiworker): roles from TF_CONFIG and SLURM, each
worker's share of the input, and two MultiWorkerMirroredStrategy workers on localhost ports
training a compact student: one model, one card, one job, written by the chief alone; resumed
after the chief was killed."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.core.test_cluster import free_port
from tests.kill_harness import child_env, ussl_command
from ussl_core.errors import SettingsError
from ussl_core.multiworker import WorkerRole, WorkerShard, worker_role
from ussl_core.store import Project
from ussl_core.store.model_files import model_paths
from ussl_core.training import TrainingSettings
from ussl_core.training_input import locate_selection

TF_CONFIG_TWO = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}
SLURM_ENV = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "gpu[07-08]",
             "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_JOB_ID": "4242"}
SIZE = 24


def clear_cluster_env(monkeypatch) -> None:
    for name in ("TF_CONFIG", "SLURM_NTASKS", *SLURM_ENV):
        monkeypatch.delenv(name, raising=False)


def test_roles_from_tf_config(monkeypatch) -> None:
    clear_cluster_env(monkeypatch)
    assert worker_role() is None
    monkeypatch.setenv("TF_CONFIG", json.dumps({**TF_CONFIG_TWO, "task": {"type": "worker", "index": 0}}))
    assert worker_role() == WorkerRole(2, 0, True, "TF_CONFIG")
    monkeypatch.setenv("TF_CONFIG", json.dumps({**TF_CONFIG_TWO, "task": {"type": "worker", "index": 1}}))
    assert worker_role() == WorkerRole(2, 1, False, "TF_CONFIG")
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps({**with_chief, "task": {"type": "worker", "index": 0}}))
    assert worker_role() == WorkerRole(2, 1, False, "TF_CONFIG")
    monkeypatch.setenv("TF_CONFIG", json.dumps({**with_chief, "task": {"type": "chief", "index": 0}}))
    assert worker_role() == WorkerRole(2, 0, True, "TF_CONFIG")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker",
                                                                                          "index": 0}}))
    assert worker_role() is None   # one worker: an ordinary run
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(SettingsError, match="TF_CONFIG"):
        worker_role()


def test_roles_from_the_environment_slurm_sets(monkeypatch) -> None:
    from ussl_core.multiworker import slurm_cluster

    clear_cluster_env(monkeypatch)
    for name, value in SLURM_ENV.items():
        monkeypatch.setenv(name, value)
    assert worker_role() == WorkerRole(2, 1, False, "SLURM")
    resolver = slurm_cluster()
    assert resolver.cluster_spec().as_dict() == {"worker": ["gpu07:8470", "gpu08:8470"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("USSL_SLURM_PORT", "9100")
    assert worker_role().chief
    assert slurm_cluster().cluster_spec().as_dict()["worker"][0] == "gpu07:9100"
    # Two tasks on each of two nodes: ports of their own on each node, block order.
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "2(x2)")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert slurm_cluster().cluster_spec().as_dict() == {
        "worker": ["gpu07:9100", "gpu07:9101", "gpu08:9100", "gpu08:9101"]}
    assert worker_role() == WorkerRole(4, 3, False, "SLURM")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")   # a one-task step: an ordinary run
    assert worker_role() is None


def test_slurm_host_lists_and_task_counts_expand() -> None:
    from ussl_core.multiworker import expand_counts, expand_hostlist

    assert expand_hostlist("gpu[07-09,12],login1") == ["gpu07", "gpu08", "gpu09", "gpu12", "login1"]
    assert expand_hostlist("n[1-2]x[01-02]") == ["n1x01", "n1x02", "n2x01", "n2x02"]
    assert expand_hostlist("single") == ["single"]
    assert expand_counts("2(x3),1") == [2, 2, 2, 1]
    with pytest.raises(SettingsError, match="SLURM task counts"):
        expand_counts("two")


def image_sums(dataset, batches: int) -> list[float]:
    return [round(float(s), 2) for images, _ in dataset.take(batches)
            for s in np.asarray(images).sum(axis=(1, 2, 3))]


@pytest.mark.parametrize("path", ["memory", "stream"])
def test_each_worker_reads_its_own_share_of_every_epoch(harness_data, path) -> None:
    with Project.open(harness_data.taught) as project:
        stored = locate_selection(project)
    data = stored.load() if path == "memory" else stored
    settings = TrainingSettings()
    whole = image_sums(data.batches(SIZE, SIZE, 4, False, settings, True), math.ceil(stored.count / 4))
    shares = [image_sums(data.batches(SIZE, SIZE, 4, False, settings, True, shard=WorkerShard(i, 2)), 100)
              for i in (0, 1)]
    assert sorted(shares[0] + shares[1]) == sorted(whole)   # together: the epoch, once
    assert abs(len(shares[0]) - len(shares[1])) <= 1
    first = next(iter(data.batches(SIZE, SIZE, 4, False, settings, True, shard=WorkerShard(1, 2))))
    assert first[0].shape[0] == 2   # half of each batch


def two_workers(project: Path, *args: str, chief_env: dict | None = None, timeout: float = 240,
                command: str = "train") -> list[subprocess.CompletedProcess | None]:
    """`ussl train PROJECT ARGS` as two workers of one TF_CONFIG cluster on loopback ports."""
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in (0, 1):
        env = {**child_env(), "TF_CONFIG": json.dumps({"cluster": cluster,
                                                        "task": {"type": "worker", "index": index}}),
               **((chief_env or {}) if index == 0 else {})}
        processes.append(subprocess.Popen(ussl_command(command, project, *args), env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
        except subprocess.TimeoutExpired:   # a worker left waiting for a dead peer
            process.kill()
            process.communicate()
            results.append(None)
    return results


def copy_taught(data, name: str) -> Path:
    work = data.base / f"{name}-{time.time_ns()}"
    shutil.copytree(data.taught, work)
    return work


def test_two_workers_train_students_and_only_the_chief_writes(harness_data) -> None:
    work = copy_taught(harness_data, "mw")
    before = {p.relative_to(work) for p in work.rglob("*") if p.is_file()}
    with Project.open(work) as project:
        jobs_before = {j["id"] for j in project.jobs()}
    chief, other = two_workers(work, "--arch", "lowres,fconv", "--epochs", "1", "--batch-size", "4")
    assert chief.returncode == 0 and other.returncode == 0, chief.stderr[-2000:] + other.stderr[-2000:]
    assert "g1_fconv_compact: trained as worker 1 of 2" in other.stdout
    models = sorted(p.name for p in (work / "models").iterdir())
    assert models == [f"g1_{arch}_compact.{ext}" for arch in ("fconv", "lowres") for ext in ("json", "keras")]
    card = json.loads((work / "models" / "g1_lowres_compact.json").read_text())
    assert card["training_data"]["workers"] == 2 and card["epochs"] == 1
    with Project.open(work) as project:   # one job recorded: the chief's
        assert [(j["kind"], j["status"]) for j in project.jobs() if j["id"] not in jobs_before] == [
            ("train", "done")]
    from ussl_core.models.io import load_model

    load_model(work / "models" / "g1_lowres_compact.keras")
    after = {p.relative_to(work) for p in work.rglob("*") if p.is_file()}
    assert {p for p in after - before if p.parts[0] not in ("models", "logs")} == set()
    # EvalSeg-Net: the chief trains it alone; the other worker says so and writes nothing.
    chief, other = two_workers(work, "--epochs", "1", "--max-frames", "12", command="evalseg")
    assert chief.returncode == 0 and other.returncode == 0, chief.stderr[-2000:] + other.stderr[-2000:]
    assert "trained by the chief alone" in other.stdout
    assert (work / "models" / "g1_evalseg_compact.keras").is_file()


def test_two_workers_resume_after_the_chief_was_killed(harness_data) -> None:
    work = copy_taught(harness_data, "mw-resume")
    args = ("--arch", "lowres", "--epochs", "2", "--batch-size", "4")
    # The chief dies right after its first checkpoint; its peer is left waiting, and is stopped.
    chief, _ = two_workers(work, *args, chief_env={"USSL_CRASH_AT": "checkpoint-saved:1"}, timeout=120)
    assert chief is not None and chief.returncode != 0
    paths = model_paths(work, "g1_lowres_compact")
    assert paths["checkpoint"].exists()
    assert json.loads(paths["pending_state"].read_text())["epoch"] == 1   # adopted on resume
    chief, other = two_workers(work, *args, "--resume")
    assert chief.returncode == 0 and other.returncode == 0, chief.stderr[-2000:] + other.stderr[-2000:]
    card = json.loads((work / "models" / "g1_lowres_compact.json").read_text())
    assert [r["epoch"] for r in card["history"]] == [1, 2] and card["training_data"]["workers"] == 2
    assert not paths["checkpoint"].exists()


def test_a_batch_that_does_not_split_evenly_is_refused(harness_data) -> None:
    work = copy_taught(harness_data, "mw-odd")
    chief, other = two_workers(work, "--arch", "lowres", "--epochs", "1", "--batch-size", "5", timeout=120)
    for result in (chief, other):
        assert result is not None and result.returncode == 2
        assert "not a multiple of the 2 workers" in result.stderr and "Traceback" not in result.stderr

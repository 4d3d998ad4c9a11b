"""The Dask path (ussl_core.cluster): a LocalCluster, a scheduler and two workers started here,
a worker that dies mid-shot; results equal to this machine's process pool; no process left.

Everything listens on 127.0.0.1 and on ports free at the time."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.kill_harness import (TAG, child_env, orphans_after, output_files, run_to_end, tagged_processes,
                                teacher_masks, ussl_command)
from tests.tiny_models import save_tiny_builtin
from ussl_core.cluster import ClusterSpec, parse_cluster
from ussl_core.errors import SettingsError
from ussl_core.store import Project


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_project(data, name: str) -> Path:
    """A copy of the harness's project beside it (its media paths are relative)."""
    work = data.base / f"{name}-{time.time_ns()}"
    shutil.copytree(data.project, work)
    return work


def leftovers(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tmp"))


def run_tagged(command: list[str], tag: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**child_env(tag), **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_cluster_addresses_are_parsed_or_refused() -> None:
    assert parse_cluster("local") == ClusterSpec(None)
    assert parse_cluster("local:3") == ClusterSpec(None, 3)
    assert parse_cluster("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_cluster("head-node:8786").address == "tcp://head-node:8786"
    assert str(parse_cluster("local:2")) == "local:2"
    for bad in ("local:0", "local:x", "nowhere", "tcp://host", "", "a b:1"):
        with pytest.raises(SettingsError, match="--cluster"):
            parse_cluster(bad)


def test_cli_refuses_a_bad_or_unreachable_cluster_in_one_line(harness_data, tmp_path) -> None:
    work = copy_project(harness_data, "p")
    bad = subprocess.run(ussl_command("teacher", work, "--cluster", "local:0"), capture_output=True,
                         text=True, env=child_env())
    assert bad.returncode == 2 and "local:N needs a whole number" in bad.stderr
    port = free_port()   # nobody listens there
    gone = subprocess.run(ussl_command("teacher", work, "--cluster", f"tcp://127.0.0.1:{port}", "--quiet"),
                          capture_output=True, text=True, env=child_env(), timeout=120)
    assert gone.returncode == 2, gone.stderr
    lines = [line for line in gone.stderr.splitlines() if line.startswith("ussl")]
    assert lines == [lines[0]] and "cannot reach the Dask scheduler" in lines[0], gone.stderr
    assert "Traceback" not in gone.stderr
    assert teacher_masks(work) == {}


def test_local_cluster_teacher_equals_the_process_pool(harness_data, tmp_path) -> None:
    pool, dask = copy_project(harness_data, "pool"), copy_project(harness_data, "dask")
    run_to_end(ussl_command("teacher", pool, "--workers", "2", "--quiet"))
    tag = f"local-{os.getpid()}-{time.time_ns()}"
    result = run_tagged(ussl_command("teacher", dask, "--cluster", "local:2"), tag)
    # A batch log (no terminal): plain lines, the cluster and its dashboard named, no bar.
    assert "\r" not in result.stderr
    assert "Dask local:2: 2 worker(s), dashboard http://127.0.0.1:" in result.stderr
    expected = teacher_masks(pool)
    assert expected and teacher_masks(dask) == expected
    assert leftovers(dask / "arrays") == []
    assert orphans_after(tag) == set()


def test_killing_the_client_leaves_no_local_cluster_worker(harness_data, tmp_path) -> None:
    work = copy_project(harness_data, "p")
    tag = f"client-{os.getpid()}-{time.time_ns()}"
    # Each worker sleeps at its first shard: the client is killed while they work.
    env = {**child_env(tag), "USSL_SLOW_AT": "shard-write:1:30"}
    client = subprocess.Popen(ussl_command("teacher", work, "--cluster", "local:2"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in client.stderr:
            if "Dask local:2" in line:
                break
        deadline = time.monotonic() + 60
        while len(tagged_processes(tag)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(tagged_processes(tag)) >= 3, "the client and its two workers"
    finally:
        client.kill()
        client.wait()
    assert orphans_after(tag) == set()
    # Nothing half-done reached the catalog; a re-run completes it.
    assert teacher_masks(work) == {}
    run_to_end(ussl_command("teacher", work, "--workers", "2", "--quiet"))
    assert len(teacher_masks(work)) == 3 * 30


class DaskProcesses:
    """A `dask scheduler` and workers on loopback ports, in sessions of their own, tagged."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []

    def start(self, module: str, *args: str, env: dict | None = None) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", module, *args], start_new_session=True,
                                   env={**child_env(self.tag), **(env or {})},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def scheduler(self) -> None:
        self.start("distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                   "--dashboard-address", "127.0.0.1:0")

    def worker(self, *extra: str, env: dict | None = None) -> subprocess.Popen:
        return self.start("distributed.cli.dask_worker", self.address, "--nthreads", "1",
                          "--host", "127.0.0.1", "--no-dashboard", *extra, env=env)

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n, timeout=60)

    def stop(self) -> None:
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
            process.wait()


def test_scheduler_and_two_workers_survive_a_worker_dying_mid_shot(harness_data, tmp_path) -> None:
    """One worker (no nanny to restart it) dies in the middle of writing its first shot; the
    scheduler runs that shot again on the other; the masks are the process pool's, bit for bit."""
    pool, dask = copy_project(harness_data, "pool"), copy_project(harness_data, "dask")
    run_to_end(ussl_command("teacher", pool, "--workers", "2", "--quiet"))
    tag = f"remote-{os.getpid()}-{time.time_ns()}"
    cluster = DaskProcesses(tag)
    try:
        cluster.scheduler()
        cluster.worker()
        doomed = cluster.worker("--no-nanny", env={"USSL_CRASH_AT": "shard-write:1"})
        cluster.wait_for_workers(2)
        result = run_tagged(ussl_command("teacher", dask, "--cluster", cluster.address), tag)
        assert doomed.poll() == -signal.SIGKILL, "the doomed worker never got a shot"
        assert "Dask " + cluster.address in result.stderr
    finally:
        cluster.stop()
    assert teacher_masks(dask) == teacher_masks(pool) != {}
    assert leftovers(dask / "arrays") == []   # the dead attempt's half-written shard went too
    assert orphans_after(tag) == set()


def candidates(root: Path) -> dict[str, tuple[float, str]]:
    """Every student candidate's score and mask digest, by 'producer/video/frame'."""
    with Project.open(root) as project:
        videos = {v.id: v.name for v in project.videos()}
        frames = {f.id: f.name for f in project.frames()}
        found = {}
        for producer in project.producers():
            if producer.kind == "student":
                for m, soft in project.read_masks(project.masks(producer.id)):
                    found[f"{producer.name}/{videos[m.video_id]}/{frames[m.frame_id]}"] = (
                        m.score, hashlib.sha256(np.ascontiguousarray(soft).tobytes()).hexdigest())
        return found


def test_next_generation_candidates_on_a_local_cluster_equal_a_local_run(harness_data, tmp_path) -> None:
    builtin = save_tiny_builtin(tmp_path / "builtin")
    env = {"USSL_BUILTIN_DIR": str(builtin)}
    pool, dask = copy_project(harness_data, "pool"), copy_project(harness_data, "dask")
    args = ("next-generation", "--teacher", "builtin", "--top-percent", "50", "--quiet")
    run_tagged(ussl_command(args[0], pool, *args[1:]), "ng-pool", env)
    tag = f"ng-{os.getpid()}-{time.time_ns()}"
    run_tagged(ussl_command(args[0], dask, *args[1:], "--cluster", "local:2"), tag, env)
    expected = candidates(pool)
    assert len(expected) == 2 * 3 * 30   # two students, every frame
    got = candidates(dask)
    assert got.keys() == expected.keys()
    assert all(got[k][1] == expected[k][1] for k in expected), "masks differ"
    assert max(abs(got[k][0] - expected[k][0]) for k in expected) < 1e-6
    with Project.open(pool) as a, Project.open(dask) as b:
        assert a.meta("generation") == b.meta("generation") == "2"
        assert a.selections()[-1]["n_selected"] == b.selections()[-1]["n_selected"]
    assert leftovers(dask / "arrays") == []
    assert orphans_after(tag) == set()


def test_segment_on_a_local_cluster_writes_what_a_local_run_writes(harness_data, tmp_path) -> None:
    inputs = [harness_data.images, harness_data.video]
    local, dask = tmp_path / "local", tmp_path / "dask"
    run_to_end(ussl_command("segment", *inputs, "--model", harness_data.model, "--out", local,
                            "--boxes", "--quiet"))
    tag = f"seg-{os.getpid()}-{time.time_ns()}"
    run_tagged(ussl_command("segment", *inputs, "--model", harness_data.model, "--out", dask,
                            "--boxes", "--quiet", "--cluster", "local:2"), tag)
    expected = output_files(local)
    assert len(expected) == 3 * 30 + 1 + 2   # masks, the overlay video, boxes.json and .csv
    assert output_files(dask) == expected
    assert orphans_after(tag) == set()


def test_cancel_on_a_local_cluster_keeps_finished_shots_and_a_rerun_completes(harness_data) -> None:
    from ussl_core.progress import CancelToken, Cancelled
    from ussl_core.teacher.runner import run_teacher

    work = copy_project(harness_data, "cancel")
    token = CancelToken()
    environ = dict(os.environ)
    with Project.open(work, write=True) as project:
        with pytest.raises(Cancelled):
            for event in run_teacher(project, cluster=ClusterSpec(None, 2), cancel=token):
                if event.message.startswith("Dask"):
                    token.cancel()   # before any shot came back
        kept = project.completed_shots(project.producer("videopca@g1").id)
    assert len(kept) < 3 and leftovers(work / "arrays") == []
    with Project.open(work, write=True) as project:
        list(run_teacher(project, cluster=ClusterSpec(None, 2)))
    assert len(teacher_masks(work)) == 3 * 30
    # The workers' environment (one numeric thread...) stays theirs: distributed's nanny writes
    # it into this process's os.environ, and later work here must not run with it.
    assert dict(os.environ) == environ


def test_batch_logs_get_a_line_now_and_then_never_a_bar() -> None:
    import io

    from ussl_core.progress import LineProgress, Progress

    out = io.StringIO()
    lines = LineProgress(out, seconds=3600)
    for done in range(1001):
        lines.show(Progress(done, 1000, f"shot {done}", stage="teacher"), "frame")
    lines.show(Progress(0, 1, "Dask local:2: 2 worker(s)", {"notice": True}, stage="candidates"))
    lines.show(Progress(1, 1, "done", stage="candidates"))
    lines.finish()
    text = out.getvalue()
    assert "\r" not in text
    assert text.splitlines() == [
        "[00:00:00] teacher: 0/1000 frames (0 %) shot 0",
        "[00:00:00] teacher: 1000/1000 frames (100 %) shot 1000",
        "[00:00:00] candidates: 0/1 steps (0 %) Dask local:2: 2 worker(s)",
        "[00:00:00] candidates: 1/1 steps (100 %) done"]


def test_a_scheduler_without_workers_is_one_clear_line(harness_data) -> None:
    work = copy_project(harness_data, "idle")
    tag = f"idle-{os.getpid()}-{time.time_ns()}"
    cluster = DaskProcesses(tag)
    try:
        cluster.scheduler()
        time.sleep(3)   # listening
        result = subprocess.run(ussl_command("teacher", work, "--cluster", cluster.address, "--quiet"),
                                capture_output=True, text=True, env=child_env(tag), timeout=120)
    finally:
        cluster.stop()
    assert result.returncode == 2 and "the scheduler has no worker" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and teacher_masks(work) == {}
    assert orphans_after(tag) == set()

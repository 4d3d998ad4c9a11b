"""SIGKILL a `ussl` command at a random moment and check what it leaves behind.

A scenario is a command that does long work (the teacher, training, segmentation, the GUI's
job child), a fresh working copy to run it in, the command that finishes the work afterwards,
and the outcome of an uninterrupted run to compare with. Each trial:
  1. starts the command in its own process group, tagged by an environment variable;
  2. after a random delay, SIGKILLs the whole group or the parent alone;
  3. checks that no process of the run outlives it (orphans), that every file under a final
     name is whole and equal to the uninterrupted run's, and that the work recorded as done
     at the kill is the uninterrupted run's;
  4. re-runs to completion and checks that the result equals the uninterrupted run's: masks
     byte for byte, models weight for weight, cards apart from timings, outputs byte for byte.
Used by tests/core/test_kills.py (a few kills) and benchmarks/kills.py (many).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.conftest import make_davis
from ussl_core.sample import SampleSpec, generate_video

TAG = "USSL_KILL_TAG"
ORPHAN_GRACE_S = 15.0
TEACHER = "videopca@g1"
TRAIN_ARGS = ("--arch", "lowres", "--epochs", "3", "--batch-size", "4")


# ----------------------------------------------------------------------------- processes
def tagged_processes(tag: str) -> set[int]:
    """Live (not zombie) processes whose environment carries the tag."""
    found = set()
    needle = f"{TAG}={tag}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.add(int(proc.name))
    return found


def orphans_after(tag: str, grace: float = ORPHAN_GRACE_S) -> set[int]:
    """The run's processes still alive `grace` seconds after its parent died (killed, then
    reaped, so they cannot be found again)."""
    deadline = time.monotonic() + grace
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


def ussl_command(*args) -> list[str]:
    return [sys.executable, "-m", "ussl_core.cli", *map(str, args)]


def job_command(spec: dict) -> list[str]:
    """The GUI's job child (app.workers.job_command without the GUI)."""
    return [sys.executable, "-m", "ussl_core.jobs", json.dumps(spec)]


def child_env(tag: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "USSL_CRASH_AT"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTEROP_THREADS": "1"})
    if tag:
        env[TAG] = tag
    return env


def run_to_end(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command[:5])} failed ({result.returncode}): "
                             f"{result.stderr[-2000:]}{result.stdout[-1000:]}")
    return result


# ----------------------------------------------------------------------------- snapshots
def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def teacher_masks(root: Path) -> dict[str, str]:
    """Digest of every recorded teacher mask, by 'video/frame' (empty before the first shot)."""
    from ussl_core.store import Project

    with Project.open(root) as p:
        if TEACHER not in {x.name for x in p.producers()}:
            return {}
        videos = {v.id: v.name for v in p.videos()}
        frames = {f.id: f.name for f in p.frames()}
        return {f"{videos[m.video_id]}/{frames[m.frame_id]}": digest(np.ascontiguousarray(a).tobytes())
                for m, a in p.read_masks(p.masks(p.producer(TEACHER).id))}


def broken_shards(root: Path) -> list[str]:
    """Problems `ussl check` finds (a half-written shard under its final name would be one)."""
    from ussl_core.store import Project
    from ussl_core.store.integrity import Problem, check_project

    with Project.open(root) as p:
        return [item.line(root) for item in check_project(p) if isinstance(item, Problem)]


def model_state(models: Path, name: str) -> dict:
    """A finished model's weights (digest) and its card without timings."""
    from ussl_core.models.io import load_model

    model = load_model(models / f"{name}.keras")
    weights = digest(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights()))
    card = json.loads((models / f"{name}.json").read_text())
    return {"weights": weights, "card": timeless(card)}


def timeless(value):
    """A card without what only says how long things took."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items()
                if k not in ("wall_seconds", "seconds", "created", "trained_at")}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def output_files(folder: Path) -> dict[str, str]:
    """Digest of every file under a final name in an output folder."""
    if not folder.exists():
        return {}
    return {p.name: digest(p.read_bytes()) for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")}


# ----------------------------------------------------------------------------- scenarios
@dataclass
class Scenario:
    """One kind of long work to kill. `command(work)` is killed; `finish(work)` completes the
    work afterwards; `outcome(work)` is what must equal the uninterrupted run's; `at_kill(work)`
    is the work recorded as done at the kill (each item must be the uninterrupted run's)."""
    name: str
    fresh: Callable[[Path], None]
    command: Callable[[Path], list[str]]
    finish: Callable[[Path], None]
    outcome: Callable[[Path], dict]
    at_kill: Callable[[Path], dict]
    whole_group: bool = True
    problems: Callable[[Path], list[str]] = lambda work: []
    reference: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Trial:
    scenario: str
    delay_s: float
    killed: bool
    done_at_kill: int = 0
    orphans: int = 0
    bad_files: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    converged: bool = False
    rerun_s: float = 0.0


class Data:
    """The inputs every scenario shares, made once under `base`."""

    def __init__(self, base: Path, n_videos: int = 3, n_frames: int = 30) -> None:
        self.base = base
        self.davis = make_davis(base / "davis", n_videos=n_videos,
                                spec=SampleSpec(n_frames=n_frames, width=128, height=96))
        self.images = base / "images"
        self.video = base / "video.mp4"
        self.project = base / "project"            # sources added, no teacher yet
        self.taught = base / "taught"              # teacher masks and a selection
        self.model = base / "model.keras"          # a trained LowRes-Net, for segmentation
        run_to_end(ussl_command("init", self.project))
        run_to_end(ussl_command("add", self.project, self.davis, "--davis", "--quiet"))
        shutil.copytree(self.project, self.taught)
        run_to_end(ussl_command("teacher", self.taught, "--workers", "1", "--quiet"))
        run_to_end(ussl_command("select", self.taught, "--top-percent", "50"))
        trained = base / "trained"
        shutil.copytree(self.taught, trained)
        run_to_end(ussl_command("train", trained, *TRAIN_ARGS, "--quiet"))
        shutil.copy(next((trained / "models").glob("g1_lowres_*.keras")), self.model)
        self.images.mkdir()
        for jpg in sorted(self.davis.glob("JPEGImages/*/*/*.jpg")):
            shutil.copy(jpg, self.images / f"{jpg.parent.name}-{jpg.name}")
        write_video(self.video, SampleSpec(n_frames=120, width=160, height=120))


def write_video(path: Path, spec: SampleSpec) -> None:
    import cv2

    frames, _ = generate_video(spec)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (spec.width, spec.height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def teacher_scenario(data: Data, whole_group: bool) -> Scenario:
    return Scenario(
        name="teacher (whole group)" if whole_group else "teacher (parent only)",
        fresh=lambda work: shutil.copytree(data.project, work),
        command=lambda work: ussl_command("teacher", work, "--workers", "2", "--quiet"),
        finish=lambda work: run_to_end(ussl_command("teacher", work, "--workers", "2", "--quiet")),
        outcome=lambda work: teacher_masks(work),
        at_kill=lambda work: teacher_masks(work),
        problems=lambda work: broken_shards(work),
        whole_group=whole_group)


def job_child_scenario(data: Data) -> Scenario:
    """The GUI's job child running the teacher (the GUI thread only reads its output)."""
    def spec(work):
        return {"kind": "teacher", "project": str(work), "workers": 2}

    def problems(work: Path) -> list[str]:
        from ussl_core.store import Project

        with Project.open(work) as p:
            running = [job["id"] for job in p.jobs() if job["status"] == "running"]
        return broken_shards(work) + [f"job {i} still reads as running" for i in running]

    return Scenario(
        name="GUI job child (teacher)",
        fresh=lambda work: shutil.copytree(data.project, work),
        command=lambda work: job_command(spec(work)),
        finish=lambda work: run_to_end(job_command(spec(work))),
        outcome=lambda work: teacher_masks(work),
        at_kill=lambda work: teacher_masks(work),
        problems=problems, whole_group=False)


def training_scenario(data: Data) -> Scenario:
    name = "g1_lowres_compact"

    def finish(work: Path) -> None:
        models = work / "models"
        if (models / f"{name}.keras").exists():
            return                                   # killed after the model was saved
        resume = ("--resume",) if (models / f"{name}.ckpt.keras").exists() else ()
        run_to_end(ussl_command("train", work, *TRAIN_ARGS, *resume, "--quiet"))

    def at_kill(work: Path) -> dict:
        state = work / "models" / f"{name}.ckpt.json"
        if not state.exists():
            return {}
        history = json.loads(state.read_text())["history"]
        return {f"epoch {r['epoch']}": json.dumps(timeless(r), sort_keys=True) for r in history}

    def outcome(work: Path) -> dict:
        return model_state(work / "models", name)

    def problems(work: Path) -> list[str]:
        found = broken_shards(work)
        models = work / "models"
        from ussl_core.models.io import load_model

        for path in models.glob("*.keras"):
            try:
                load_model(path)
            except Exception as exc:   # noqa: BLE001 - any failure to load is the finding
                found.append(f"{path.name}: {type(exc).__name__}")
        for path in models.glob("*.json"):
            try:
                json.loads(path.read_text())
            except ValueError:
                found.append(f"{path.name}: not JSON")
        return found

    def epochs_of_reference(reference: dict) -> dict:
        return {f"epoch {r['epoch']}": json.dumps(r, sort_keys=True)
                for r in reference["card"]["history"]}

    scenario = Scenario(
        name="training", fresh=lambda work: shutil.copytree(data.taught, work),
        command=lambda work: ussl_command("train", work, *TRAIN_ARGS, "--quiet"),
        finish=finish, outcome=outcome, at_kill=at_kill, problems=problems)
    scenario.reference_items = epochs_of_reference   # type: ignore[attr-defined]
    return scenario


def segment_scenario(data: Data, video: bool) -> Scenario:
    source = data.video if video else data.images

    def command(work: Path) -> list[str]:
        return ussl_command("segment", source, "--out", work / "out", "--model", data.model, "--quiet")

    def problems(work: Path) -> list[str]:
        import cv2

        found = []
        for path in (work / "out").glob("*") if (work / "out").exists() else []:
            if path.name.startswith(".") or path.name.endswith(".tmp"):
                continue
            if path.suffix == ".png" and cv2.imread(str(path)) is None:
                found.append(f"{path.name}: does not decode")
            if path.suffix == ".mp4":
                capture = cv2.VideoCapture(str(path))
                count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
                capture.release()
                if count != 120:
                    found.append(f"{path.name}: {count} frames of 120")
        return found

    return Scenario(
        name="segment (video)" if video else "segment (image folder)",
        fresh=lambda work: None, command=command,
        finish=lambda work: run_to_end(command(work)),
        outcome=lambda work: output_files(work / "out"),
        at_kill=lambda work: output_files(work / "out"), problems=problems)


def scenarios(data: Data) -> list[Scenario]:
    return [teacher_scenario(data, True), teacher_scenario(data, False), job_child_scenario(data),
            training_scenario(data), segment_scenario(data, False), segment_scenario(data, True)]


# ----------------------------------------------------------------------------- trials
def fresh_work(scenario: Scenario, work: Path) -> None:
    """A clean working folder: a copy of the scenario's project, or an empty folder. Working
    folders sit beside the data (projects name their sources by relative paths)."""
    shutil.rmtree(work, ignore_errors=True)
    scenario.fresh(work)
    work.mkdir(parents=True, exist_ok=True)


def reference_run(scenario: Scenario, work: Path) -> None:
    """The uninterrupted run: its outcome and how long it takes."""
    fresh_work(scenario, work)
    started = time.monotonic()
    run_to_end(scenario.command(work))
    scenario.seconds = time.monotonic() - started
    scenario.reference = scenario.outcome(work)


def reference_items(scenario: Scenario) -> dict:
    make = getattr(scenario, "reference_items", None)
    return make(scenario.reference) if make else scenario.reference


def kill_trial(scenario: Scenario, work: Path, delay: float) -> Trial:
    """One kill after `delay` seconds, the checks, the re-run and its check."""
    fresh_work(scenario, work)
    tag = uuid.uuid4().hex
    process = subprocess.Popen(scenario.command(work), env=child_env(tag), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    try:
        process.wait(timeout=delay)
        killed = False
        # It ended before its kill: later kills aim within this (shorter) run time.
        scenario.seconds = min(scenario.seconds, time.monotonic() - started)
    except subprocess.TimeoutExpired:
        if scenario.whole_group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.send_signal(signal.SIGKILL)
        process.wait()
        killed = True
    trial = Trial(scenario.name, round(delay, 3), killed)
    trial.orphans = len(orphans_after(tag))
    if not scenario.whole_group:   # whatever the parent left must not run on
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
    trial.bad_files = scenario.problems(work)
    done = scenario.at_kill(work)
    expected = reference_items(scenario)
    trial.done_at_kill = len(done)
    trial.lost = sorted(key for key, value in done.items() if expected.get(key) != value)
    started = time.monotonic()
    scenario.finish(work)
    trial.rerun_s = round(time.monotonic() - started, 2)
    trial.converged = scenario.outcome(work) == scenario.reference
    return trial


def random_delays(scenario: Scenario, count: int, rng: random.Random) -> list[float]:
    """Moments spread over the uninterrupted run's duration (start-up included)."""
    return [rng.uniform(0.05, 0.95) * scenario.seconds for _ in range(count)]


def trial_ok(trial: Trial) -> bool:
    return trial.orphans == 0 and not trial.bad_files and not trial.lost and trial.converged

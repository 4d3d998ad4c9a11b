"""Run a teacher over every shot of a project, in parallel worker processes.

Workers decode and compute; each writes its shot's shards under temporary names. The parent
(the only writer of the catalog, holding the project lock) renames them and records the
shot in one transaction as results arrive, so a kill at any moment loses at most the shots
in flight, and a re-run skips every shot already recorded.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ussl_core.cluster import ClusterSpec, DaskPool, new_attempt, open_pool
from ussl_core.errors import ProjectError, UsslError
from ussl_core.media import open_source
from ussl_core.progress import CancelToken, Progress
from ussl_core.store import Project, Shot
from ussl_core.store.shards import commit_shard, read_shard, write_shard
from ussl_core.teacher import make_teacher
from ussl_core.teacher.base import mask_scores

GENERATION = 1
PR_SET_PDEATHSIG = 1   # prctl option: a signal for this process when its parent dies
# Inherited by the spawned workers. One thread per numeric library: parallelism is across shots.
# glibc malloc: keep freed memory instead of unmapping it. Each shot allocates ~100 MB arrays;
# with the defaults every shot page-faults them in afresh, which doubled VideoPCA's time
# (6.8 vs 3.1 ms per 300x300 frame, measured on DAVIS).
WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "MALLOC_MMAP_THRESHOLD_": str(2**31 - 1), "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),
               "MALLOC_TOP_PAD_": str(512 * 2**20)}


@dataclass(frozen=True)
class ShotTask:
    shot_id: int
    source: str
    start: int
    stop: int
    working_size: tuple[int, int]
    stored_frames: str | None   # committed frames shard to read instead of decoding
    frames_target: str
    masks_target: str
    teacher: str | None   # None: only decode and store the frames
    settings: dict


@dataclass(frozen=True)
class ShotResult:
    shot_id: int
    frames_tmp: str | None
    masks_tmp: str | None
    scores: list[float]
    seconds: float


def producer_name(teacher: str, generation: int = GENERATION) -> str:
    return f"{teacher}@g{generation}"


def compute_shot(task: ShotTask, attempt: str | None = None) -> ShotResult:
    """Worker body: frames of one shot -> soft masks, both written as temporary shards (named
    for `attempt` where several attempts may run: on a Dask cluster)."""
    started = time.perf_counter()
    frames_tmp = None
    if task.stored_frames:
        frames = read_shard(Path(task.stored_frames), "frames")
    else:
        source = open_source(task.source)
        frames = np.stack(list(source.iter_frames(task.start, task.stop, task.working_size)))
        frames_tmp = str(write_shard(Path(task.frames_target), "frames", frames, attempt=attempt))
    if task.teacher is None:  # frames only (data added for a later generation)
        return ShotResult(task.shot_id, frames_tmp, None, [], time.perf_counter() - started)
    soft = make_teacher(task.teacher, task.settings).shot_masks(frames)
    masks = np.rint(soft * 255).astype(np.uint8)
    scores = mask_scores(masks)
    masks_tmp = write_shard(Path(task.masks_target), "masks", masks, compress=True, attempt=attempt)
    return ShotResult(task.shot_id, frames_tmp, str(masks_tmp), scores,
                      time.perf_counter() - started)


def compute_shot_attempt(task: ShotTask) -> ShotResult:
    """A Dask worker's body: each attempt at a shot writes names of its own."""
    return compute_shot(task, new_attempt())


def shot_label(task: ShotTask) -> str:
    return f"shot-{task.shot_id}"


def _worker_init(parent_pid: int | None = None) -> None:
    # A worker dies with the process that started it, even a SIGKILLed one (Linux); otherwise
    # it would wait on its queue forever, holding its memory.
    if parent_pid is not None and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent_pid:   # it died before the line above took effect
            os._exit(1)
    # Teacher workers yield the CPU to interactive processes (the GUI, an editor).
    try:
        os.nice(10)
    except OSError:
        pass
    try:
        import cv2
        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover - cv2 is a hard dependency; be robust anyway
        pass


def run_teacher(project: Project, teacher: str = "videopca", settings: dict | None = None,
                workers: int | None = None, replace: bool = False,
                cancel: CancelToken | None = None, discard_decisions: bool = False,
                cluster: ClusterSpec | None = None) -> Iterator[Progress]:
    """Compute the teacher's masks for every shot not done yet; yields progress per shot.
    `replace` discards the teacher's masks first, and is refused while human decisions on them
    exist unless `discard_decisions` says they go too. `cluster`: the shots run on Dask
    workers instead of this machine's process pool (ussl_core.cluster)."""
    project.require_writable()
    instance = make_teacher(teacher, settings)  # validates name and settings early
    settings_dict = instance.settings_dict()
    name = producer_name(teacher)
    _check_producer_settings(project, name, settings_dict, replace, discard_decisions)
    producer_id = project.ensure_producer(name, "teacher", GENERATION, settings_dict)
    done = project.completed_shots(producer_id)
    _remove_orphan_shards(project, name, done)
    videos = {v.id: v for v in project.videos()}
    shots = [s for s in project.shots() if videos[s.video_id].kind != "images"]
    todo = [s for s in shots if s.id not in done]
    total = sum(s.length for s in shots)
    finished = sum(s.length for s in shots if s.id in done)
    yield Progress(finished, total, f"{name}: {len(todo)} of {len(shots)} shots to do", stage="teacher")
    if not todo:
        return
    # Longest shots first, so that no worker is left alone with a long shot at the end.
    tasks = [_task(project, shot, videos[shot.video_id].source, name, teacher, settings_dict)
             for shot in sorted(todo, key=lambda s: -s.length)]
    by_id = {s.id: s for s in todo}
    media = sorted({str(Path(t.source).parent) for t in tasks if not t.stored_frames})
    with open_pool(cluster, [project.root, *media], project.root / "arrays") as pool:
        if pool:
            yield pool.progress(finished, total, "teacher")
        started = time.perf_counter()
        # The client's part, the same for both pools: each finished shot's shards renamed and
        # recorded as it arrives.
        for result in _results(tasks, workers or os.cpu_count() or 1, cancel, pool):
            shot = by_id[result.shot_id]
            masks = commit_shard(Path(result.masks_tmp))
            frames = commit_shard(Path(result.frames_tmp)) if result.frames_tmp else None
            project.commit_shot_masks(producer_id, shot, masks, result.scores, frames)
            finished += shot.length
            rate = (finished - (total - sum(s.length for s in todo))) / (time.perf_counter() - started)
            yield Progress(finished, total, f"{videos[shot.video_id].name} shot {shot.idx}",
                           {"frames_per_s": rate}, stage="teacher")


def store_frames(project: Project, workers: int | None = None, cancel: CancelToken | None = None,
                 pool: DaskPool | None = None) -> Iterator[Progress]:
    """Decode and store the frames of every shot that has none yet (no teacher masks), on this
    machine's process pool or on a connected Dask `pool`."""
    project.require_writable()
    videos = {v.id: v for v in project.videos()}
    todo = sorted((s for s in project.shots() if not s.frames_shard), key=lambda s: -s.length)
    total = sum(s.length for s in todo)
    done = 0
    tasks = [ShotTask(s.id, str(project.abspath(videos[s.video_id].source)), s.start, s.stop,
                      project.working_size, None, str(project.frames_shard_path(s.id)), "", None, {})
             for s in todo]
    by_id = {s.id: s for s in todo}
    for result in _results(tasks, workers or os.cpu_count() or 1, cancel, pool):
        shot = by_id[result.shot_id]
        project.set_frames_shard(shot, commit_shard(Path(result.frames_tmp)))
        done += shot.length
        yield Progress(done, total, f"frames of {videos[shot.video_id].name} shot {shot.idx}",
                       stage="frames")


def _remove_orphan_shards(project: Project, producer: str, done: set[int]) -> None:
    """Move aside mask shards the catalog does not know (a kill between the rename and the
    commit leaves one): into PROJECT/quarantine/, never deleted, since the catalog may be the
    one that lost them. The shot is computed again."""
    recorded = {project.mask_shard_path(producer, shot_id).name for shot_id in done}
    folder = project.mask_shard_path(producer, 0).parent
    if folder.is_dir():
        for shard in folder.glob("shot_*.h5"):
            if shard.name not in recorded:
                project.quarantine(shard)


def _check_producer_settings(project: Project, name: str, settings: dict, replace: bool,
                             discard_decisions: bool = False) -> None:
    existing = {p.name: p for p in project.producers()}.get(name)
    if existing is None:
        return
    if replace:
        decided = len(project.decisions(existing.id))
        if decided and not discard_decisions:   # the researcher's work: never lost unasked
            raise ProjectError(
                f"{project.root}: {name} has {decided} approve/reject decision(s) that --replace would "
                f"discard with its masks; keep them with `ussl decisions {project.root} --export "
                "FILE.csv` (and --import after), or add --discard-decisions")
        project.delete_producer(name)
    elif existing.settings != settings:
        if project.mask_count(existing.id):
            raise ProjectError(
                f"{project.root}: {name} masks already exist with other settings; "
                "run with --replace to discard them and start again")
        # No masks yet under the old settings: start afresh, so that the recorded settings
        # are the ones the masks are computed with.
        project.delete_producer(name)


def _task(project: Project, shot: Shot, source: str, producer: str, teacher: str,
          settings: dict) -> ShotTask:
    stored = str(project.abspath(shot.frames_shard)) if shot.frames_shard else None
    return ShotTask(shot.id, str(project.abspath(source)), shot.start, shot.stop,
                    project.working_size, stored, str(project.frames_shard_path(shot.id)),
                    str(project.mask_shard_path(producer, shot.id)), teacher, settings)


def _results(tasks: list[ShotTask], workers: int, cancel: CancelToken | None,
             pool: DaskPool | None = None) -> Iterator[ShotResult]:
    if pool is not None:
        yield from pool.map_unordered(compute_shot_attempt, tasks, shot_label, cancel)
        return
    if workers <= 1:
        for task in tasks:
            if cancel:
                cancel.raise_if_cancelled()
            yield compute_shot(task)
        return
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    # spawn, not fork: a forked child inherits half-held locks (BLAS, HDF5, Qt, TensorFlow).
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                               initargs=(os.getpid(),))
    try:
        pending: set[Future] = set()
        queue = list(reversed(tasks))
        while queue or pending:
            # Keep only a couple of shots per worker in flight so cancel is quick.
            while queue and len(pending) < 2 * workers:
                pending.add(pool.submit(compute_shot, queue.pop()))
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            # Hand over every shot that succeeded before raising a failure, so none is lost.
            failures = [f for f in finished if f.exception() is not None]
            for future in finished:
                if future.exception() is None:
                    yield future.result()
            if failures:
                if isinstance(failures[0].exception(), BrokenProcessPool):
                    raise UsslError(
                        "a teacher worker process ended abruptly (killed, or out of memory); "
                        "completed shots are kept, run the same command again to continue"
                    ) from None
                raise failures[0].exception()
            if cancel and cancel.cancelled:
                for future in pending:
                    future.cancel()
                cancel.raise_if_cancelled()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

"""A kill at any moment leaves a project that opens, with completed shots intact, and a re-run
finishes the work with exactly the masks of an uninterrupted run.

The kills come from the test hook `USSL_CRASH_AT=<point>:<n>` (ussl_core/testhooks.py), which
SIGKILLs the process the n-th time it reaches the point:
  shard-write     inside write_shard, between the two halves of the data
  catalog-commit  inside the SQLite transaction of commit_shot_masks
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_davis, run_ussl, stderr_lines
from ussl_core.store import Project

N_VIDEOS = 3
N_FRAMES = 20  # each sample video is a single shot of 20 frames
PRODUCER = "videopca@g1"


# ----------------------------------------------------------------------------- helpers


def new_project(base: Path, name: str) -> Path:
    root = base / name
    for args in (("init", root), ("add", root, base / "davis", "--davis", "--quiet")):
        result = run_ussl(*args)
        assert result.returncode == 0, result.stderr
    return root


def all_masks(root: Path) -> dict[tuple[str, str], np.ndarray]:
    """Every mask of the teacher keyed by (video name, frame name)."""
    with Project.open(root) as p:
        videos = {v.id: v.name for v in p.videos()}
        frames = {f.id: f.name for f in p.frames()}
        producer = p.producer(PRODUCER)
        return {(videos[m.video_id], frames[m.frame_id]): arr
                for m, arr in p.read_masks(p.masks(producer.id))}


def check_consistent(root: Path) -> set[int]:
    """Assert that every shot is all there or not there at all; return the completed shots."""
    with Project.open(root) as p:
        assert len(p.videos()) == N_VIDEOS and len(p.shots()) == N_VIDEOS
        producers = {x.name: x for x in p.producers()}
        if PRODUCER not in producers:
            return set()
        pid = producers[PRODUCER].id
        completed = p.completed_shots(pid)
        rows = p.conn.execute(
            "SELECT f.shot_id, COUNT(*) FROM masks m JOIN frames f ON f.id = m.frame_id "
            "WHERE m.producer_id=? GROUP BY f.shot_id", (pid,)).fetchall()
        per_shot = {r[0]: r[1] for r in rows}
        for shot in p.shots():
            if shot.id in completed:
                assert per_shot.get(shot.id) == shot.length, f"shot {shot.id} partly recorded"
                assert shot.frames_shard and p.abspath(shot.frames_shard).is_file()
                assert p.mask_shard_path(PRODUCER, shot.id).is_file()
                assert p.read_frames(shot).shape[0] == shot.length
            else:
                assert shot.id not in per_shot, f"mask rows of unfinished shot {shot.id}"
                assert shot.frames_shard is None
        assert p.mask_count(pid) == sum(s.length for s in p.shots() if s.id in completed)
        # Every recorded mask can be read.
        assert sum(1 for _ in p.read_masks(p.masks(pid))) == p.mask_count(pid)
        return completed


def temporaries(root: Path) -> list[Path]:
    return sorted((root / "arrays").rglob("*.tmp"))


def teacher_log(root: Path) -> str:
    with Project.open(root) as p:
        job = p.jobs(1)[0]
        assert job["kind"] == "teacher"
        return p.abspath(job["log"]).read_text()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Sample data and a clean reference run of the teacher, shared by the tests here."""
    base = tmp_path_factory.mktemp("crash")
    make_davis(base / "davis", n_videos=N_VIDEOS)
    clean = new_project(base, "clean")
    result = run_ussl("teacher", clean, "--workers", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    with Project.open(clean) as p:
        all_shots = {s.id for s in p.shots()}
    assert check_consistent(clean) == all_shots
    return base


@pytest.fixture(scope="module")
def clean_masks(base: Path) -> dict[tuple[str, str], np.ndarray]:
    masks = all_masks(base / "clean")
    assert len(masks) == N_VIDEOS * N_FRAMES
    return masks


# ----------------------------------------------------------------------------- the tests


def assert_complete_like_clean_run(root, clean_masks) -> None:
    """Every shot recorded, no temporary shard left, masks identical to an uninterrupted run."""
    assert len(check_consistent(root)) == N_VIDEOS
    assert temporaries(root) == []
    final = all_masks(root)
    assert final.keys() == clean_masks.keys()
    for key, arr in final.items():
        np.testing.assert_array_equal(arr, clean_masks[key], err_msg=str(key))


# With one worker, shots run in order and each calls write_shard twice (frames, then masks),
# so the n-th shard write falls in shot (n + 1) // 2 and the n-th catalog commit in shot n.
@pytest.mark.parametrize("point, nth, n_completed", [
    ("shard-write", 1, 0),
    ("shard-write", 4, 1),
    ("catalog-commit", 1, 0),
    ("catalog-commit", 3, 2),
])
def test_kill_during_teacher_keeps_completed_shots(base, clean_masks, point, nth, n_completed):
    root = new_project(base, f"killed-{point}-{nth}")
    crashed = run_ussl("teacher", root, "--workers", "1", "--quiet",
                       env={"USSL_CRASH_AT": f"{point}:{nth}"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    if point == "shard-write":
        # The kill left a half-written shard under its temporary name, and nothing else.
        assert temporaries(root), "the crash point was not inside a shard write"
    completed = check_consistent(root)  # opens read-only while the temporaries are there
    assert len(completed) == n_completed

    with Project.open(root, write=True) as p:  # a writer cleans up after the dead one
        assert p.writable
        assert temporaries(root) == []
        # The killed job reads as killed at once (its process is gone), not as running.
        assert (p.jobs()[0]["kind"], p.jobs()[0]["status"]) == ("teacher", "killed")
    assert check_consistent(root) == completed

    # Masks kept from before the kill are the clean run's masks.
    partial = all_masks(root)
    assert len(partial) == n_completed * N_FRAMES
    for key, arr in partial.items():
        np.testing.assert_array_equal(arr, clean_masks[key])

    rerun = run_ussl("teacher", root, "--workers", "1", "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{PRODUCER}: {N_VIDEOS - n_completed} of {N_VIDEOS} shots to do" in teacher_log(root)
    assert_complete_like_clean_run(root, clean_masks)
    with Project.open(root) as p:
        statuses = [j["status"] for j in p.jobs() if j["kind"] == "teacher"]
    assert statuses == ["done", "killed"]  # newest first


def test_worker_killed_mid_write_fails_cleanly_and_rerun_completes(base, clean_masks):
    root = new_project(base, "killed-worker")
    # Every worker dies at its first shard write; the parent must notice, not hang or die.
    crashed = run_ussl("teacher", root, "--workers", "2", "--quiet",
                       env={"USSL_CRASH_AT": "shard-write:1"}, timeout=120)
    assert crashed.returncode not in (0, -signal.SIGKILL), crashed.stderr
    lines = stderr_lines(crashed)
    assert len(lines) == 1, crashed.stderr
    assert lines[0].startswith("ussl: error:") and "worker" in lines[0]
    assert "Traceback" not in crashed.stderr
    assert check_consistent(root) == set()
    with Project.open(root) as p:
        assert p.jobs(1)[0]["status"] == "failed"

    rerun = run_ussl("teacher", root, "--workers", "2", "--quiet", timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert_complete_like_clean_run(root, clean_masks)


def test_rerun_of_a_finished_teacher_changes_nothing(base, clean_masks):
    root = base / "clean"
    before = {(p.stat().st_mtime_ns, p) for p in (root / "arrays").rglob("*.h5")}
    result = run_ussl("teacher", root, "--workers", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"{PRODUCER}: 0 of {N_VIDEOS} shots to do" in teacher_log(root)
    assert {(p.stat().st_mtime_ns, p) for p in (root / "arrays").rglob("*.h5")} == before
    final = all_masks(root)
    for key, arr in final.items():
        np.testing.assert_array_equal(arr, clean_masks[key])

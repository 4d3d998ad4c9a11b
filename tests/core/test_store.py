"""Tests of the project store: catalog, migrations, paths, masks, decisions, jobs and the lock."""

from __future__ import annotations

import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_ussl, stderr_lines
from ussl_core.errors import ProjectError, ProjectLockedError
from ussl_core.store import AREAS, Project, changed_areas, lock_holder
from ussl_core.store import catalog
from ussl_core.store.shards import commit_shard, write_shard

# ----------------------------------------------------------------------------- helpers


def add_fake_video(project: Project, data: Path, name: str = "clip", n: int = 5,
                   shots=((0, 3), (3, 5)), with_gt: bool = True) -> int:
    """Record a frame-folder video (files need not be images: the store does not read them)."""
    folder = data / name
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i:05d}" for i in range(n)]
    gt_dir = data / f"{name}-gt"
    gt_paths = None
    if with_gt:
        gt_dir.mkdir(parents=True, exist_ok=True)
        gt_paths = [str(gt_dir / f"{x}.png") for x in names]
    return project.add_video(name, "frames", folder, names, (64, 48), None, list(shots),
                             gt_paths, gt_dir if with_gt else None)


@pytest.fixture
def project(tmp_path: Path):
    p = Project.create(tmp_path / "proj")
    yield p
    p.close()


# ----------------------------------------------------------------------------- create / open


def test_create_makes_folders_and_catalog(tmp_path):
    root = tmp_path / "new" / "proj"
    with Project.create(root) as p:
        assert p.writable
        assert p.root == root.resolve()
        for sub in ("arrays", "models", "logs", "cache"):
            assert (root / sub).is_dir()
        assert (root / "project.sqlite").is_file()
        assert p.working_size == (300, 300)
        assert p.meta("created_at")
    with Project.open(root) as p:
        assert not p.writable
        assert p.videos() == []


def test_create_twice_is_refused(tmp_path):
    Project.create(tmp_path / "p").close()
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(tmp_path / "p")


def test_open_non_project_folder_names_path(tmp_path):
    folder = tmp_path / "just a folder"
    folder.mkdir()
    with pytest.raises(ProjectError) as err:
        Project.open(folder)
    assert str(folder.resolve()) in str(err.value)
    assert "not a ussl project" in str(err.value)
    with pytest.raises(ProjectError) as err:
        Project.open(tmp_path / "missing", write=True)
    assert str((tmp_path / "missing").resolve()) in str(err.value)
    assert "does not exist" in str(err.value)
    # Refused opens take no lock and create nothing.
    assert not (folder / "project.lock").exists()
    assert not (tmp_path / "missing").exists()


def test_garbage_catalog_is_a_project_error(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "project.sqlite").write_bytes(b"this is not an SQLite database at all" * 100)
    for write in (False, True):
        with pytest.raises(ProjectError, match="catalog is unreadable"):
            Project.open(root, write=write)
    # The failed write open released its lock.
    assert lock_holder(root) is None


def test_wal_mode_and_schema_version(project):
    assert project.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # WAL is persistent: a plain connection sees it too.
    plain = sqlite3.connect(project.root / "project.sqlite")
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert plain.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] \
            == str(catalog.SCHEMA_VERSION)
    finally:
        plain.close()
    assert catalog.schema_version(project.conn) == catalog.SCHEMA_VERSION == len(catalog.MIGRATIONS)


def test_older_catalog_is_migrated_on_write_open(tmp_path, monkeypatch):
    root = tmp_path / "p"
    with Project.create(root) as p:
        add_fake_video(p, tmp_path / "data")
    old_version = catalog.SCHEMA_VERSION
    monkeypatch.setattr(catalog, "MIGRATIONS", [*catalog.MIGRATIONS,
                        "CREATE TABLE extra(id INTEGER PRIMARY KEY, note TEXT);"
                        "INSERT INTO extra(note) VALUES('migrated')"])
    monkeypatch.setattr(catalog, "SCHEMA_VERSION", old_version + 1)
    # A reader may not change the file: it asks for a write open.
    with pytest.raises(ProjectError, match="needs an upgrade"):
        Project.open(root)
    with Project.open(root, write=True) as p:
        assert catalog.schema_version(p.conn) == old_version + 1
        assert p.conn.execute("SELECT note FROM extra").fetchall()[0][0] == "migrated"
        assert [v.name for v in p.videos()] == ["clip"]  # data kept
    with Project.open(root) as p:  # now readers are fine
        assert catalog.schema_version(p.conn) == old_version + 1
    # Opening again for writing does not re-run the migration.
    with Project.open(root, write=True) as p:
        assert p.conn.execute("SELECT COUNT(*) FROM extra").fetchone()[0] == 1


def test_newer_catalog_is_refused(tmp_path):
    root = tmp_path / "p"
    Project.create(root).close()
    newer = catalog.SCHEMA_VERSION + 1
    with sqlite3.connect(root / "project.sqlite") as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(newer),))
    for write in (True, False):
        with pytest.raises(ProjectError) as err:
            Project.open(root, write=write)
        message = str(err.value)
        assert f"schema version {newer} is newer" in message
        assert "update ussl" in message
    # The refused write open neither touched the catalog nor kept the lock.
    with sqlite3.connect(root / "project.sqlite") as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(newer)
    assert lock_holder(root) is None


# ----------------------------------------------------------------------------- paths, videos


def test_source_paths_are_relative_and_resolve_back(tmp_path):
    base = tmp_path / "a"
    data = base / "data"
    with Project.create(base / "proj") as p:
        vid = add_fake_video(p, data)
        video = p.video(vid)
        assert not os.path.isabs(video.source)
        assert video.source == os.path.join("..", "data", "clip")
        assert p.abspath(video.source) == (data / "clip").resolve()
        assert not os.path.isabs(video.gt_source)
        frame = p.frames(vid)[0]
        assert not os.path.isabs(frame.gt_path)
        assert p.abspath(frame.gt_path) == (data / "clip-gt" / "00000.png").resolve()
    # Moving the project together with its data keeps every path valid.
    shutil.move(str(base), str(tmp_path / "b"))
    with Project.open(tmp_path / "b" / "proj") as p:
        video = p.videos()[0]
        assert p.abspath(video.source) == (tmp_path / "b" / "data" / "clip").resolve()
        assert p.abspath(video.source).is_dir()


def test_add_video_shots_frames_round_trip(project, tmp_path):
    vid = add_fake_video(project, tmp_path / "data", "clip", n=5, shots=((0, 3), (3, 5)))
    video = project.video(vid)
    assert (video.name, video.kind, video.frame_count, video.width, video.height, video.fps) == \
        ("clip", "frames", 5, 64, 48, None)
    assert project.video_by_name("clip") == video
    assert project.video_by_name("nope") is None
    shots = project.shots(vid)
    assert [(s.idx, s.start, s.stop, s.length, s.frames_shard) for s in shots] == \
        [(0, 0, 3, 3, None), (1, 3, 5, 2, None)]
    frames = project.frames(vid)
    assert [f.name for f in frames] == ["00000", "00001", "00002", "00003", "00004"]
    assert [f.idx for f in frames] == list(range(5))
    assert [f.shot_id for f in frames] == [shots[0].id] * 3 + [shots[1].id] * 2
    assert [f.name for f in project.frames(shot_id=shots[1].id)] == ["00003", "00004"]
    # A second video, without ground truth, does not disturb the first.
    vid2 = add_fake_video(project, tmp_path / "data", "other", n=2, shots=((0, 2),), with_gt=False)
    assert [v.name for v in project.videos()] == ["clip", "other"]
    assert project.video(vid2).gt_source is None
    assert all(f.gt_path is None for f in project.frames(vid2))
    assert len(project.frames()) == 7 and len(project.shots()) == 3
    with pytest.raises(ProjectError, match="already in the project"):
        add_fake_video(project, tmp_path / "data", "clip")
    with pytest.raises(ProjectError, match="no video with id"):
        project.video(999)
    with pytest.raises(ProjectError, match="no stored frames"):
        project.read_frames(shots[0])


def _commit_masks(project: Project, producer: str, shot, masks: np.ndarray,
                  frames: np.ndarray | None = None) -> int:
    pid = project.ensure_producer(producer, "teacher", 1, {"who": producer})
    tmp = write_shard(project.mask_shard_path(producer, shot.id), "masks", masks, compress=True)
    final = commit_shard(tmp)
    frames_final = None
    if frames is not None:
        frames_final = commit_shard(write_shard(project.frames_shard_path(shot.id), "frames", frames))
    project.commit_shot_masks(pid, shot, final, [float(i) / 10 for i in range(len(masks))],
                              frames_final)
    return pid


def test_masks_of_several_producers_coexist(project, tmp_path):
    add_fake_video(project, tmp_path / "data", n=5, shots=((0, 3), (3, 5)))
    shot = project.shots()[0]
    rng = np.random.default_rng(1)
    masks_a = rng.integers(0, 256, (3, 12, 16), dtype=np.uint8)
    masks_b = rng.integers(0, 256, (3, 12, 16), dtype=np.uint8)
    frames = rng.integers(0, 256, (3, 12, 16, 3), dtype=np.uint8)
    a = _commit_masks(project, "teacher-a", shot, masks_a, frames)
    b = _commit_masks(project, "teacher b/2", shot, masks_b)
    assert a != b
    assert project.ensure_producer("teacher-a", "teacher", 1) == a  # idempotent
    assert [p.name for p in project.producers()] == ["teacher-a", "teacher b/2"]
    assert project.producer("teacher-a").settings == {"who": "teacher-a"}
    assert project.mask_count(a) == project.mask_count(b) == 3
    assert project.completed_shots(a) == project.completed_shots(b) == {shot.id}
    for pid, expected in ((a, masks_a), (b, masks_b)):
        records = project.masks(pid)
        assert [m.frame_id for m in records] == [f.id for f in project.frames(shot_id=shot.id)]
        assert [m.score for m in records] == pytest.approx([0.0, 0.1, 0.2])
        assert not os.path.isabs(records[0].shard)
        read = dict((m.frame_id, arr) for m, arr in project.read_masks(records))
        for m in records:
            assert read[m.frame_id].dtype == np.float32
            np.testing.assert_allclose(read[m.frame_id], expected[m.row] / 255.0, atol=1e-7)
            np.testing.assert_array_equal(project.read_mask(m), read[m.frame_id])
    # Reading rows out of order and with repeats.
    records = project.masks(a)
    got = [arr for _, arr in project.read_masks([records[2], records[0], records[2]])]
    np.testing.assert_allclose(got[0], masks_a[2] / 255.0, atol=1e-7)
    np.testing.assert_allclose(got[1], masks_a[0] / 255.0, atol=1e-7)
    # The frames shard was recorded with A's commit.
    shot = project.shots()[0]
    np.testing.assert_array_equal(project.read_frames(shot), frames)
    # Recommitting a shot replaces its rows instead of adding to them.
    _commit_masks(project, "teacher-a", shot, masks_b)
    assert project.mask_count(a) == 3
    np.testing.assert_allclose(project.read_mask(project.masks(a)[1]), masks_b[1] / 255.0, atol=1e-7)
    # Forgetting one producer keeps the other.
    project.delete_producer("teacher-a")
    assert [p.name for p in project.producers()] == ["teacher b/2"]
    assert project.mask_count(a) == 0 and project.mask_count(b) == 3
    assert not project.mask_shard_path("teacher-a", shot.id).exists()
    with pytest.raises(ProjectError, match="no masks from producer 'teacher-a'"):
        project.producer("teacher-a")


def test_commit_with_wrong_mask_count_is_refused(project, tmp_path):
    add_fake_video(project, tmp_path / "data", n=5, shots=((0, 3), (3, 5)))
    shot = project.shots()[0]
    pid = project.ensure_producer("t", "teacher", 1)
    with pytest.raises(ProjectError, match="2 masks for 3 frames"):
        project.commit_shot_masks(pid, shot, project.mask_shard_path("t", shot.id), [0.1, 0.2])
    assert project.mask_count(pid) == 0 and project.completed_shots(pid) == set()


# ----------------------------------------------------------------------------- decisions


def test_decisions_approve_reject_clear_undo_redo(project, tmp_path):
    add_fake_video(project, tmp_path / "data", n=5)
    f1, f2, f3 = [f.id for f in project.frames()[:3]]
    pid = project.ensure_producer("t", "teacher", 1)
    project.set_decision(f1, pid, "approve", "clean edge")
    project.set_decision(f2, pid, "reject")
    current = project.decisions(pid)
    assert current[(f1, pid)]["decision"] == "approve"
    assert current[(f1, pid)]["reason"] == "clean edge"
    assert current[(f1, pid)]["time"]
    assert current[(f2, pid)]["decision"] == "reject"
    assert (f3, pid) not in current
    project.set_decision(f1, pid, "clear")
    assert (f1, pid) not in project.decisions(pid)
    # Undo the clear, then the reject; redo the reject.
    assert project.undo_decision() == (f1, pid)
    assert project.decisions(pid)[(f1, pid)]["decision"] == "approve"
    assert project.undo_decision() == (f2, pid)
    assert (f2, pid) not in project.decisions(pid)
    assert project.redo_decision() == (f2, pid)
    assert project.decisions(pid)[(f2, pid)]["decision"] == "reject"
    # One step still undone (the clear of f1); a new decision ends that redo history.
    project.set_decision(f3, pid, "approve")
    assert project.redo_decision() is None
    assert project.decisions(pid)[(f1, pid)]["decision"] == "approve"
    # The log is now approve f1, reject f2, approve f3: undo all three, newest first.
    assert [project.undo_decision() for _ in range(3)] == [(f3, pid), (f2, pid), (f1, pid)]
    assert project.undo_decision() is None
    assert project.decisions(pid) == {}
    # Decisions of another producer are kept apart.
    other = project.ensure_producer("u", "teacher", 1)
    project.set_decisions([(f1, other, "reject", None, "2020-01-01T00:00:00")])
    assert project.decisions(pid) == {}
    assert project.decisions(other) == {(f1, other): {"decision": "reject", "reason": None,
                                                       "time": "2020-01-01T00:00:00"}}
    with pytest.raises(ProjectError, match="decision must be one of"):
        project.set_decision(f1, pid, "maybe")


def test_revisions_name_exactly_the_areas_each_change_touches(project, tmp_path):
    add_fake_video(project, tmp_path / "data", n=5)
    f1, f2 = [f.id for f in project.frames()[:2]]
    pid = project.ensure_producer("t", "teacher", 1)
    seen = [project.revisions()]

    def changed() -> frozenset[str]:
        now = project.revisions()
        areas = changed_areas(seen[-1], now)
        seen.append(now)
        return areas

    with project.job("train", {}):            # a job that writes only its own record
        pass
    project.set_meta("generation", "1")
    assert changed() == set()
    project.set_decision(f1, pid, "approve")
    assert changed() == {"decisions"}
    project.undo_decision()                   # a flag set in place
    assert changed() == {"decisions"}
    project.redo_decision()
    assert changed() == {"decisions"}
    project.save_selection(pid, "top_percent", 10.0, False, [f1], 0, 0)
    assert changed() == {"selections"}
    add_fake_video(project, tmp_path / "data", name="second", n=3, shots=((0, 3),))
    assert changed() == {"videos"}
    assert changed() == set()
    # Masks written again after their producer was deleted reuse the same row ids.
    shot = project.shots()[0]
    n = len(project.frames(shot_id=shot.id))

    def write_masks() -> None:
        producer = project.ensure_producer("m", "teacher", 1)
        shard = project.mask_shard_path("m", shot.id)
        shard.parent.mkdir(parents=True, exist_ok=True)
        final = commit_shard(write_shard(shard, "masks", np.zeros((n, 4, 4), np.uint8)))
        project.commit_shot_masks(producer, shot, final, [0.5] * n)

    write_masks()
    assert changed() == {"masks"}
    project.delete_producer("m")
    assert "masks" in changed()
    write_masks()
    assert changed() == {"masks"}
    project.set_frames_shard(shot, tmp_path / "frames.h5")   # a shot's row changed in place
    assert changed() == {"videos"}
    models = project.root / "models"
    models.mkdir(exist_ok=True)
    (models / "g1_lowres_compact.json").write_text("{}")
    assert changed() == {"models"}
    assert changed_areas(None, seen[-1]) == set(AREAS)


def test_invalid_batch_of_decisions_changes_nothing(project, tmp_path):
    add_fake_video(project, tmp_path / "data", n=5)
    f1, f2 = [f.id for f in project.frames()[:2]]
    pid = project.ensure_producer("t", "teacher", 1)
    with pytest.raises(ProjectError):
        project.set_decisions([(f1, pid, "approve", None, None), (f2, pid, "bogus", None, None)])
    assert project.decisions() == {}


# ----------------------------------------------------------------------------- selections, jobs


def test_selection_saved_and_active(project, tmp_path):
    add_fake_video(project, tmp_path / "data", n=5)
    ids = [f.id for f in project.frames()]
    pid = project.ensure_producer("t", "teacher", 1)
    assert project.active_selection() is None
    first = project.save_selection(pid, "top_percent", 10.0, False, ids[:2], 0, 0)
    active = project.active_selection()
    assert active["id"] == first and active["n_selected"] == 2 and active["method"] == "top_percent"
    second = project.save_selection(pid, "threshold", 0.5, True, [ids[4], ids[3]], 1, 2)
    active = project.active_selection()
    assert active["id"] == second and active["per_video"] == 1
    assert (active["value"], active["n_approved_added"], active["n_rejected_removed"]) == (0.5, 1, 2)
    assert project.conn.execute("SELECT COUNT(*) FROM selections WHERE active=1").fetchone()[0] == 1
    assert project.selection_members(second) == [(ids[3], pid), (ids[4], pid)]
    assert project.selection_members(first) == [(ids[0], pid), (ids[1], pid)]


def test_jobs_recorded_with_log_under_logs(project):
    job_id, log = project.start_job("teacher", {"workers": 1})
    assert log.parent == project.root / "logs"
    assert log.name == f"job_{job_id:05d}_teacher.log"
    job = project.jobs()[0]
    assert (job["id"], job["kind"], job["status"], job["pid"]) == (job_id, "teacher", "running", os.getpid())
    assert job["log"] == os.path.join("logs", log.name)
    assert project.abspath(job["log"]) == log
    project.finish_job(job_id, "done")
    assert project.jobs()[0]["status"] == "done" and project.jobs()[0]["finished_at"]
    with project.job("add", {}) as (add_id, add_log):
        add_log.write_text("hello\n")
    assert project.jobs()[0]["status"] == "done"
    with pytest.raises(RuntimeError):
        with project.job("select", {}) as (sel_id, _):
            raise RuntimeError("boom")
    failed = project.jobs()[0]
    assert (failed["id"], failed["status"], failed["message"]) == (sel_id, "failed", "boom")
    # A job left 'running' (its process was killed) is marked when the next one starts.
    stale, _ = project.start_job("teacher", {})
    newer, _ = project.start_job("export", {})
    statuses = {j["id"]: j["status"] for j in project.jobs()}
    assert statuses[stale] == "killed" and statuses[newer] == "running"


def test_read_only_project_refuses_writes(project, tmp_path):
    add_fake_video(project, tmp_path / "data", n=5)
    fid = project.frames()[0].id
    pid = project.ensure_producer("t", "teacher", 1)
    project.close()
    with Project.open(project.root) as ro:
        assert not ro.writable
        with pytest.raises(ProjectError, match="read-only"):
            ro.require_writable()
        for write in (lambda: ro.set_decision(fid, pid, "approve"),
                      lambda: ro.ensure_producer("x", "teacher", 1),
                      lambda: ro.save_selection(pid, "threshold", 0.1, False, [fid], 0, 0),
                      lambda: ro.start_job("add", {}),
                      lambda: ro.set_meta("k", "v"),
                      lambda: add_fake_video(ro, tmp_path / "data", "more")):
            with pytest.raises(ProjectError, match="read-only"):
                write()
        assert ro.decisions() == {} and len(ro.videos()) == 1 and ro.meta("k") is None


# ----------------------------------------------------------------------------- the write lock


def test_second_writer_in_process_is_refused(tmp_path):
    root = tmp_path / "p"
    Project.create(root).close()
    first = Project.open(root, write=True, holder="holder-one")
    try:
        with pytest.raises(ProjectLockedError) as err:
            Project.open(root, write=True, holder="holder-two")
        message = str(err.value)
        assert "being written by holder-one" in message
        assert f"pid {os.getpid()}" in message
        assert str(root.resolve()) in message
        # Readers are welcome and see who writes.
        with Project.open(root) as reader:
            holder = reader.lock_holder()
            assert holder["holder"] == "holder-one" and holder["pid"] == os.getpid()
        assert first.lock_holder() is None  # the holder itself is not told about itself
    finally:
        first.close()
    assert lock_holder(root) is None
    Project.open(root, write=True).close()


_HOLD_LOCK = """
import sys, time
from ussl_core.store import Project
p = Project.open(sys.argv[1], write=True, holder="lock-test-child")
print("locked", flush=True)
time.sleep(120)
"""


def test_lock_across_processes_and_released_on_kill(tmp_path):
    root = tmp_path / "p"
    Project.create(root).close()
    child = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(root)],
                             stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready and child.stdout.readline().strip() == "locked", "child never took the lock"
        result = run_ussl("teacher", root, "--workers", "1")
        assert result.returncode != 0
        lines = stderr_lines(result)
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("ussl: error:")
        assert "being written by lock-test-child" in lines[0]
        assert f"pid {child.pid}" in lines[0]
        assert "Traceback" not in result.stderr
        with pytest.raises(ProjectLockedError, match=f"pid {child.pid}"):
            Project.open(root, write=True)
        assert lock_holder(root)["pid"] == child.pid
        # Readers work while the child writes.
        status = run_ussl("status", root, "--json")
        assert status.returncode == 0, status.stderr
        assert f'"pid": {child.pid}' in status.stdout
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    # The kernel released the flock; the file still names the dead holder but nobody holds it.
    assert lock_holder(root) is None
    with Project.open(root, write=True, holder="after the kill") as p:
        assert p.writable
        assert lock_holder(root)["pid"] == os.getpid()
        with pytest.raises(ProjectLockedError, match="being written by after the kill"):
            Project.open(root, write=True)

"""What a user has done is never lost to a mistake: an empty or foreign catalog is refused, not
"upgraded"; shards the catalog does not know are quarantined, not deleted; --replace keeps the
researcher's decisions unless told."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_davis
from ussl_core.errors import ProjectError
from ussl_core.ingest import add_sources, davis_sources
from ussl_core.sample import SampleSpec
from ussl_core.store import Project
from ussl_core.teacher.runner import producer_name, run_teacher


def drain(events) -> list:
    return list(events)


@pytest.fixture
def taught(tmp_path):
    root = tmp_path / "p"
    davis = make_davis(tmp_path / "davis", n_videos=2, spec=SampleSpec(n_frames=6, width=32, height=24))
    with Project.create(root) as project:
        drain(add_sources(project, davis_sources(davis)))
        drain(run_teacher(project, workers=1))
    return root


@pytest.mark.parametrize("content", [b"", b"not a database at all, just text" * 40], ids=["empty", "text"])
def test_an_empty_or_foreign_catalog_is_refused_and_left_alone(taught, content):
    catalog = taught / "project.sqlite"
    shards = sorted((taught / "arrays").rglob("*.h5"))
    catalog.write_bytes(content)
    for write in (False, True):
        with pytest.raises(ProjectError, match="catalog is (empty|unreadable)"):
            Project.open(taught, write=write)
    assert catalog.read_bytes() == content                       # not "upgraded"
    assert sorted((taught / "arrays").rglob("*.h5")) == shards   # nothing deleted


def test_shards_the_catalog_does_not_know_go_to_quarantine(taught):
    with Project.open(taught) as project:
        shard = project.mask_shard_path(producer_name("videopca"), 999_999)
    shard.write_bytes(b"someone's masks")
    with Project.open(taught, write=True) as project:
        drain(run_teacher(project, workers=1))
    assert not shard.exists()
    kept = taught / "quarantine" / shard.relative_to(taught)
    assert kept.read_bytes() == b"someone's masks"


def test_replace_keeps_decisions_unless_told(taught):
    with Project.open(taught, write=True) as project:
        teacher = project.producer(producer_name("videopca"))
        frame = project.masks(teacher.id)[0].frame_id
        project.set_decision(frame, teacher.id, "approve", "clean")
        with pytest.raises(ProjectError, match="1 approve/reject decision.*--discard-decisions"):
            drain(run_teacher(project, workers=1, replace=True))
        assert len(project.decisions(teacher.id)) == 1 and project.mask_count(teacher.id) > 0
        drain(run_teacher(project, workers=1, replace=True, discard_decisions=True))
        teacher = project.producer(producer_name("videopca"))
        assert project.decisions(teacher.id) == {} and project.mask_count(teacher.id) > 0


def test_resume_without_a_checkpoint_keeps_the_finished_model(taught):
    """`ussl train --resume` (and EvalSeg-Net's) with nothing interrupted says so and leaves the
    finished model as it is, rather than training a new one over it."""
    from ussl_core.evalseg import train_evalseg
    from ussl_core.store.model_files import model_paths, write_card
    from ussl_core.training import train_student

    with Project.open(taught, write=True) as project:
        for arch, train in (("basic_unet", lambda: train_student(project, "basic_unet", resume=True)),
                            ("evalseg", lambda: train_evalseg(project, resume=True))):
            model = model_paths(taught, f"g1_{arch}_compact")["model"]
            model.write_bytes(b"a finished model")
            write_card(model, {"name": model.stem, "architecture": arch, "generation": 1})
            events = drain(train())
            assert [e.metrics.get("event") for e in events] == ["skipped"]
            assert "nothing to resume" in events[0].message
            assert model.read_bytes() == b"a finished model"


def children_of(pid: int) -> set[int]:
    """Live child processes of `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_teacher_workers_die_with_a_killed_parent(tmp_path):
    root = tmp_path / "p"
    davis = make_davis(tmp_path / "davis", n_videos=4, spec=SampleSpec(n_frames=60, width=160, height=120))
    with Project.create(root) as project:
        drain(add_sources(project, davis_sources(davis)))
    parent = subprocess.Popen([sys.executable, "-m", "ussl_core.cli", "teacher", str(root), "--workers", "2",
                               "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            workers = {c for c in children_of(parent.pid)
                       if "spawn" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")}
            time.sleep(0.05)
        assert len(workers) >= 2, "the teacher's worker processes never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(w) for w in workers)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_killed_job_reads_as_killed_at_once(tmp_path):
    root = tmp_path / "p"
    Project.create(root).close()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with Project.open(root, write=True) as project:
        job_id, _ = project.start_job("teacher", {})
        project.conn.execute("UPDATE jobs SET pid=? WHERE id=?", (child.pid, job_id))  # as if the child ran it
        assert project.jobs()[0]["status"] == "running"
        child.kill()
        child.wait()
        assert project.jobs()[0]["status"] == "killed"


def test_a_project_the_user_may_not_write_can_still_be_viewed(taught, monkeypatch):
    """A read-only disk or another user's folder: SQLite's WAL would need to write even to read;
    the catalog opens immutable instead (as root, permissions cannot be taken away: the check
    is made to answer no)."""
    from ussl_core.cli import project_status
    from ussl_core.store import catalog

    with Project.open(taught) as project:
        expected = project_status(project)
    for leftover in taught.glob("project.sqlite-*"):   # -wal and -shm of the writer before
        leftover.unlink()
    monkeypatch.setattr(catalog.os, "access", lambda path, mode: False)
    with Project.open(taught) as project:
        assert project_status(project) == expected
    assert not list(taught.glob("project.sqlite-*"))   # nothing written beside the catalog


def test_leftovers_of_a_failed_save_are_cleaned_by_the_next_writer(taught):
    models = taught / "models"
    leftovers = [models / "g1_lowres_compact.ckpt.tmp.keras", models / "g1_lowres_compact.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    kept = models / "g1_lowres_compact.keras"
    kept.write_bytes(b"a model")
    with Project.open(taught):            # a reader leaves them (a writer may be saving)
        assert all(p.exists() for p in leftovers)
    with Project.open(taught, write=True):
        pass
    assert not any(p.exists() for p in leftovers) and kept.exists()


def test_a_cancelled_video_segmentation_leaves_no_unplayable_file(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from tests.tiny_models import save_tiny_builtin
    from ussl_core.progress import CancelToken, Cancelled
    from ussl_core.segment import segment_paths

    monkeypatch.setenv("USSL_BUILTIN_DIR", str(save_tiny_builtin(tmp_path / "builtin")))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), 6 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    token = CancelToken()
    token.cancel()   # checked after the first batch of frames
    with pytest.raises(Cancelled):
        drain(segment_paths(None, [video], out, cancel=token))
    assert list(out.iterdir()) == []
    drain(segment_paths(None, [video], out))
    assert [p.name for p in out.iterdir()] == ["clip.overlay.mp4"]
    assert cv2.VideoCapture(str(out / "clip.overlay.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 40


def test_nothing_overwrites_a_finished_model_unasked(taught):
    """Continue-or-start keeps it (above); a plain start is refused without replace; the CLI's
    --resume without an interrupted run is an error."""
    from tests.core.test_cli import run_ussl
    from ussl_core.errors import ProjectError
    from ussl_core.store.model_files import model_paths, write_card
    from ussl_core.training import train_student

    model = model_paths(taught, "g1_lowres_compact")["model"]
    model.write_bytes(b"a finished model")
    write_card(model, {"name": model.stem, "architecture": "lowres", "generation": 1})
    with Project.open(taught, write=True) as project:
        with pytest.raises(ProjectError, match="already trained; --replace"):
            drain(train_student(project, "lowres"))
        with pytest.raises(ProjectError, match="no interrupted run of g1_lowres_compact"):
            drain(train_student(project, "lowres", resume=True, require_checkpoint=True))
    for flags, fragment in ((["--resume"], "no interrupted run"), ([], "already trained; --replace")):
        done = run_ussl("train", taught, "--arch", "lowres", *flags)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and fragment in lines[0]
    assert model.read_bytes() == b"a finished model"

"""Full disks, read-only file systems and refused writes, through the `ussl` command: one line
naming the file and the cause, exit 2, nothing completed lost, and a re-run that converges to
the uninterrupted result.

The operating system's own errors come from a small tmpfs and a read-only bind mount where this
machine allows mounts (root on Linux); everywhere, and for the errors root never sees (EACCES),
the error is injected at the write layer (`USSL_FAIL_AT=point:n:ERRNO`, ussl_core.testhooks),
which raises exactly what the operating system would.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_ussl, stderr_lines
from tests.kill_harness import TRAIN_ARGS, Data, model_state, output_files, teacher_masks

CAUSES = {"ENOSPC": "the disk is full", "EROFS": "read-only file system", "EACCES": "permission denied"}
TF_NOISE = ("WARNING: All log messages", "I0000", "W0000", "E0000", "To enable the following")


@pytest.fixture(scope="module")
def data(harness_data) -> Data:
    return harness_data


@pytest.fixture(scope="module")
def clean_masks(data: Data) -> dict:
    return teacher_masks(data.taught)


def fresh_copy(source: Path, name: str) -> Path:
    """A copy of a project beside the data (projects name their sources by relative paths)."""
    target = source.parent / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    return target


def the_line(result: subprocess.CompletedProcess) -> str:
    """The one line a refused command prints (TensorFlow's start-up notes aside)."""
    lines = [line for line in stderr_lines(result) if not line.startswith(TF_NOISE)]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def tree_digest(root: Path) -> str:
    """Every file under a project (lock and SQLite side files aside), by content."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.startswith("project.sqlite-") or path.name.endswith(".lock") or path.parent.name == "logs":
            continue
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def can_mount(base: Path) -> bool:
    probe = base / "mount-probe"
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], check=True)
    return ok


# ----------------------------------------------------------------------------- injected faults
@pytest.mark.parametrize("code", list(CAUSES))
def test_a_refused_write_in_the_teacher_loses_only_the_shot_in_flight(data, clean_masks, code):
    root = fresh_copy(data.project, f"teacher-{code}")
    # One worker writes each shot's frames, then its masks: the 3rd write is the 2nd shot's.
    result = run_ussl("teacher", root, "--workers", "1", "--quiet", env={"USSL_FAIL_AT": f"shard:3:{code}"})
    line = the_line(result)
    assert line.startswith("ussl: error: ") and str(root / "arrays") in line and CAUSES[code] in line, line
    done = teacher_masks(root)
    assert len(done) == 30 and all(clean_masks[k] == v for k, v in done.items())
    assert run_ussl("teacher", root, "--workers", "1", "--quiet").returncode == 0
    assert teacher_masks(root) == clean_masks


def test_a_full_disk_while_training_keeps_the_last_epoch_and_resume_matches(data):
    reference = data.base / "trained"     # the same training, uninterrupted
    root = fresh_copy(data.taught, "train-full")
    # The 2nd model write is the checkpoint after epoch 2.
    result = run_ussl("train", root, *TRAIN_ARGS, "--quiet", env={"USSL_FAIL_AT": "model:2:ENOSPC"}, timeout=300)
    line = the_line(result)
    assert "g1_lowres_compact.ckpt" in line and "the disk is full" in line, line
    state = (root / "models" / "g1_lowres_compact.ckpt.json").read_text()
    assert '"epoch": 1' in state and not (root / "models" / "g1_lowres_compact.keras").exists()
    resumed = run_ussl("train", root, *TRAIN_ARGS, "--resume", "--quiet", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert model_state(root / "models", "g1_lowres_compact") == \
        model_state(reference / "models", "g1_lowres_compact")


def test_a_kill_between_checkpoint_and_state_resumes_exactly(data):
    """The checkpoint of epoch 2 renamed into place, its state not yet: resuming adopts the
    pending state instead of training epoch 2 again on top of it."""
    reference = data.base / "trained"
    root = fresh_copy(data.taught, "train-between")
    killed = run_ussl("train", root, *TRAIN_ARGS, "--quiet", env={"USSL_CRASH_AT": "checkpoint-saved:2"},
                      timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (root / "models" / "g1_lowres_compact.ckpt.pending.json").exists()
    resumed = run_ussl("train", root, *TRAIN_ARGS, "--resume", "--quiet", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert model_state(root / "models", "g1_lowres_compact") == \
        model_state(reference / "models", "g1_lowres_compact")
    assert not list((root / "models").glob("*.ckpt*"))


def test_a_full_disk_while_segmenting_keeps_whole_images_and_a_rerun_converges(data, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert run_ussl("segment", data.images, "--out", reference, "--model", data.model, "--quiet").returncode == 0
    result = run_ussl("segment", data.images, "--out", out, "--model", data.model, "--quiet",
                      env={"USSL_FAIL_AT": "png:5:ENOSPC"})
    line = the_line(result)
    assert str(out) in line and ".png" in line and "the disk is full" in line, line
    written = output_files(out)
    assert len(written) == 4 and all(output_files(reference)[k] == v for k, v in written.items())
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert run_ussl("segment", data.images, "--out", out, "--model", data.model, "--quiet").returncode == 0
    assert output_files(out) == output_files(reference)


def test_too_little_free_space_is_refused_before_writing(data):
    root = fresh_copy(data.project, "teacher-no-space")
    before = tree_digest(root / "arrays")
    result = run_ussl("teacher", root, "--workers", "1", "--quiet", env={"USSL_FREE_BYTES": "1000000"})
    line = the_line(result)
    assert "not enough free space for the shard" in line and "1 MB free" in line, line
    assert teacher_masks(root) == {}
    assert tree_digest(root / "arrays") == before     # not a byte written (the job's log aside)


# ----------------------------------------------------------------------------- real mounts
@pytest.mark.parametrize("precheck", [True, False], ids=["free-space check", "the kernel's ENOSPC"])
def test_a_small_tmpfs_fills_mid_run_and_the_rerun_converges(data, clean_masks, precheck):
    """The project on a tmpfs with room for about one and a half shots' shards. With the free
    space check the teacher stops before a write that would not fit; without it (free space
    reported as plenty) the kernel's ENOSPC stops it mid-write. Either way: one line, the
    completed shots kept, and after more room a re-run ends with the clean run's masks. Where
    mounts are refused, the same run with the error injected at the write layer."""
    root = data.base / f"tmpfs-{precheck}"
    if root.exists():
        subprocess.run(["umount", str(root)], capture_output=True)
        shutil.rmtree(root)
    project_bytes = sum(p.stat().st_size for p in data.project.rglob("*") if p.is_file())
    shot_bytes = sum(p.stat().st_size for p in (data.taught / "arrays").rglob("*.h5")) // 3
    env = {} if precheck else {"USSL_FREE_BYTES": str(10**12)}
    if can_mount(data.base):
        from ussl_core.diskspace import RESERVE_BYTES

        size = project_bytes + shot_bytes * 3 // 2 + (RESERVE_BYTES if precheck else 0) + 2**20
        root.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True)
        shutil.copytree(data.project, root, dirs_exist_ok=True)
    else:
        shutil.copytree(data.project, root)
        env["USSL_FAIL_AT"] = "shard:3:ENOSPC"
    try:
        result = run_ussl("teacher", root, "--workers", "1", "--quiet", env=env)
        line = the_line(result)
        assert str(root) in line and ("the disk is full" in line or "not enough free space" in line), line
        done = teacher_masks(root)
        assert 0 < len(done) < 90 and all(clean_masks[k] == v for k, v in done.items())
        if "USSL_FAIL_AT" not in env:
            subprocess.run(["mount", "-o", "remount,size=256m", str(root)], check=True)
        assert run_ussl("teacher", root, "--workers", "1", "--quiet").returncode == 0
        assert teacher_masks(root) == clean_masks
    finally:
        subprocess.run(["umount", str(root)], capture_output=True)


def test_a_read_only_project_can_be_viewed_and_refuses_writes_in_one_line(data):
    """A read-only bind mount of a project (where mounts are allowed; else the write layer's
    EROFS on its first write)."""
    source = fresh_copy(data.taught, "ro-source")
    for leftover in source.glob("project.sqlite-*"):
        leftover.unlink()
    before = tree_digest(source)
    status_before = run_ussl("status", source)
    root = data.base / "ro"
    root.mkdir(exist_ok=True)
    mounted = can_mount(data.base) and subprocess.run(
        ["mount", "--bind", str(source), str(root)], capture_output=True).returncode == 0
    try:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(root)], check=True)
            status = run_ussl("status", root)
            assert status.returncode == 0, status.stderr
            assert status.stdout.replace(str(root), "P") == status_before.stdout.replace(str(source), "P")
            refused = run_ussl("teacher", root, "--replace", "--discard-decisions", "--quiet")
            assert "read-only" in the_line(refused)
            refused = run_ussl("select", root, "--top-percent", "30")
            assert "read-only" in the_line(refused)
            assert tree_digest(source) == before
        else:
            masks = teacher_masks(source)
            refused = run_ussl("train", source, *TRAIN_ARGS, "--quiet", env={"USSL_FAIL_AT": "model:1:EROFS"},
                               timeout=300)
            assert "read-only file system" in the_line(refused)
            assert teacher_masks(source) == masks
    finally:
        if mounted:
            subprocess.run(["umount", str(root)], check=True)


def test_a_failed_write_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    """Reports, CSVs and figures go through ussl_core.atomic: the old file stays until the new
    one is whole, and a failed write leaves nothing behind."""
    from ussl_core.atomic import write_text_atomic

    target = tmp_path / "summary.json"
    target.write_text("the previous summary")
    monkeypatch.setenv("USSL_FAIL_AT", "atomic-test:2:ENOSPC")
    write_text_atomic(target, "first", point="atomic-test")
    assert target.read_text() == "first"
    with pytest.raises(OSError) as failed:
        write_text_atomic(target, "second", point="atomic-test")
    assert failed.value.errno == 28 and failed.value.filename == str(target)   # the file asked for
    assert target.read_text() == "first" and list(tmp_path.iterdir()) == [target]

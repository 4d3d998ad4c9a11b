"""`ussl check`: missing and corrupt files found, moved to quarantine and recomputed; decisions kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import make_davis
from tests.core.test_cli import run_ussl
from tests.tiny_models import save_tiny_models
from ussl_core.ingest import add_sources, davis_sources
from ussl_core.sample import SampleSpec
from ussl_core.store import Project
from ussl_core.store.integrity import Problem, check_project
from ussl_core.teacher.runner import producer_name, run_teacher


@pytest.fixture
def project_root(tmp_path):
    root = tmp_path / "p"
    davis = make_davis(tmp_path / "davis", n_videos=2, spec=SampleSpec(n_frames=6, width=32, height=24))
    with Project.create(root) as project:
        list(add_sources(project, davis_sources(davis)))
        list(run_teacher(project, workers=1))
    return root


def problems(root):
    with Project.open(root) as project:
        return [p for p in check_project(project) if isinstance(p, Problem)]


def test_a_sound_project_checks_clean(project_root):
    done = run_ussl("check", project_root)
    assert done.returncode == 0 and "sound" in done.stdout


def test_broken_files_are_found_quarantined_and_recomputed(project_root):
    with Project.open(project_root, write=True) as project:
        teacher = project.producer(producer_name("videopca"))
        masks_before = {m.frame_id: project.read_mask(m) for m in project.masks(teacher.id)}
        shots = project.shots()
        frames_shard = project.abspath(shots[0].frames_shard)
        mask_shard = project.mask_shard_path(teacher.name, shots[1].id)
        project.set_decision(project.masks(teacher.id)[-1].frame_id, teacher.id, "reject", "leaks")
    frames_shard.write_bytes(frames_shard.read_bytes()[:200])   # cut short
    mask_shard.unlink()                                          # gone
    models = save_tiny_models(project_root / "models")
    models["lowres"].with_suffix(".json").write_text("{broken")   # an unreadable card

    found = problems(project_root)
    assert sorted(p.kind for p in found) == ["card", "frames", "masks"]
    done = run_ussl("check", project_root, "--json")
    assert done.returncode == 1 and len(json.loads(done.stdout)) == 3

    done = run_ussl("check", project_root, "--repair", "--workers", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "run `ussl teacher` again for videopca@g1" in done.stdout
    quarantine = project_root / "quarantine"
    assert (quarantine / frames_shard.relative_to(project_root)).exists()
    assert (quarantine / "models" / "g1_lowres_tiny.keras").exists()
    assert problems(project_root) == []
    # The teacher recomputes exactly the lost shot: the same masks as before; the decision stays.
    assert run_ussl("teacher", project_root, "--workers", "1", "--quiet").returncode == 0
    with Project.open(project_root) as project:
        teacher = project.producer(producer_name("videopca"))
        after = {m.frame_id: project.read_mask(m) for m in project.masks(teacher.id)}
        assert len(project.decisions(teacher.id)) == 1
    assert after.keys() == masks_before.keys()
    for frame_id, mask in masks_before.items():
        np.testing.assert_array_equal(after[frame_id], mask)


def test_commands_on_a_damaged_shard_say_which_and_what_to_do(project_root, tmp_path):
    with Project.open(project_root) as project:
        teacher = project.producer(producer_name("videopca"))
        shard = project.mask_shard_path(teacher.name, project.shots()[0].id)
    shard.write_bytes(shard.read_bytes()[:300])
    done = run_ussl("export", project_root, "--masks", tmp_path / "masks", "--quiet")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ussl: error: {shard}: shard corrupt")
    assert "ussl check PROJECT --repair" in lines[0]


def test_a_damaged_checkpoint_state_is_one_line(project_root):
    from ussl_core.store.model_files import model_paths
    from ussl_core.training import TrainingSettings, build_or_resume

    paths = model_paths(project_root, "g1_lowres_compact")
    models = save_tiny_models(tmp := project_root / "tiny")
    paths["checkpoint"].write_bytes(models["lowres"].read_bytes())
    paths["state"].write_text("{not json")
    with pytest.raises(Exception) as info:
        build_or_resume(paths, True, lambda: None, TrainingSettings())
    assert "state is damaged" in str(info.value) and type(info.value).__name__ == "UsslError"
    assert tmp.exists()

"""The models shipped with ussl: segmenting without a project, and as a project's teacher.

The plumbing is tested with tiny stand-in models ($USSL_BUILTIN_DIR); the real shipped models
(ussl_core/builtin) are loaded with safe mode and segment an image in test_shipped_models_*.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import make_davis, run_ussl, stderr_lines
from tests.tiny_models import save_tiny_builtin, save_tiny_models
from ussl_core.builtin import BUILTIN_DIR, builtin_available, builtin_card, builtin_models
from ussl_core.store import Project


@pytest.fixture(scope="module")
def tiny_builtin(tmp_path_factory) -> Path:
    return save_tiny_builtin(tmp_path_factory.mktemp("builtin") / "models")


def write_photo(path: Path, width: int = 80, height: int = 60) -> Path:
    rng = np.random.default_rng(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return path


def test_segment_without_a_model_uses_the_builtin_ones(tmp_path, tiny_builtin):
    photos = tmp_path / "photos"
    write_photo(photos / "a.jpg")
    write_photo(photos / "b.png", 40, 30)
    env = {"USSL_BUILTIN_DIR": str(tiny_builtin)}
    done = run_ussl("segment", photos, "--out", tmp_path / "out", "--boxes", "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    assert "shipped with ussl" in done.stdout
    mask = cv2.imread(str(tmp_path / "out" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (60, 80) and mask.dtype == np.uint8
    assert cv2.imread(str(tmp_path / "out" / "b.png"), cv2.IMREAD_UNCHANGED).shape == (30, 40)
    assert set(json.loads((tmp_path / "out" / "boxes.json").read_text())) == {"a", "b"}
    # The earlier form (model or project first) still works.
    models = save_tiny_models(tmp_path / "project" / "models")
    done = run_ussl("segment", models["unet"], photos / "a.jpg", "--out", tmp_path / "out2",
                    "--ensemble", "g1_basic_unet_tiny", "--quiet")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out2" / "a.png").exists()
    # No shipped models and none named: one line saying what to do.
    done = run_ussl("segment", photos, "--out", tmp_path / "out3",
                    env={"USSL_BUILTIN_DIR": str(tmp_path / "none")})
    assert done.returncode == 2 and stderr_lines(done)[-1].startswith("ussl: error: ")
    assert "--model" in done.stderr


def test_inputs_of_the_same_name_never_overwrite_each_other(tmp_path, tiny_builtin):
    """Two folders that both hold x.png: two masks (x, x_2), the cut-outs and boxes of both,
    the files `ussl segment` and the Predict panel's export both write."""
    first, second = write_photo(tmp_path / "a" / "x.png"), write_photo(tmp_path / "b" / "x.png", 40, 30)
    done = run_ussl("segment", first.parent, second.parent, "--out", tmp_path / "out", "--boxes",
                    "--grabcut", "--quiet", env={"USSL_BUILTIN_DIR": str(tiny_builtin)})
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["boxes.csv", "boxes.json", "x.cutout.png", "x.png",
                                                    "x_2.cutout.png", "x_2.png"]
    assert cv2.imread(str(out / "x_2.png"), cv2.IMREAD_UNCHANGED).shape == (30, 40)
    assert cv2.imread(str(out / "x_2.cutout.png"), cv2.IMREAD_UNCHANGED).shape == (30, 40, 4)
    assert set(json.loads((out / "boxes.json").read_text())) == {"x", "x_2"}
    assert "wrote 2 masks" in done.stdout


def test_next_generation_from_the_builtin_teacher(tmp_path, tiny_builtin):
    davis = make_davis(tmp_path / "davis", n_videos=2)
    root = tmp_path / "project"
    env = {"USSL_BUILTIN_DIR": str(tiny_builtin)}
    assert run_ussl("init", root).returncode == 0
    assert run_ussl("add", root, davis, "--quiet").returncode == 0
    done = run_ussl("next-generation", root, "--teacher", "builtin", "--top-percent", "50",
                    "--workers", "1", "--quiet", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    with Project.open(root) as project:
        assert project.meta("generation") == "2"
        selection = project.active_selection()
        assert selection["generation"] == 2 and selection["n_selected"] > 0
        students = {p.name for p in project.producers() if p.kind == "student"}
    assert students == {"g1_basic_unet_builtin", "g1_lowres_builtin"}
    cards = {p.stem: json.loads(p.read_text()) for p in (root / "models").glob("*.json")}
    assert set(cards) == {"g1_basic_unet_builtin", "g1_lowres_builtin", "g1_evalseg_builtin"}
    assert all(c["builtin"] and c["generation"] == 1 for c in cards.values())
    # A project that trained its own generation 1 is not overwritten.
    other = tmp_path / "own"
    save_tiny_models(other / "models")
    assert run_ussl("init", other).returncode == 0
    done = run_ussl("next-generation", other, "--teacher", "builtin", env=env)
    assert done.returncode == 2 and "already has models" in done.stderr


# ----------------------------------------------------------------------------- the shipped models
def test_shipped_models_load_safely_segment_and_fit_the_size_budget():
    assert builtin_available(), f"{BUILTIN_DIR}: the shipped models are missing"
    card = builtin_card()
    students, evalseg = builtin_models()
    assert len(students) >= 2 and evalseg is not None
    total = sum(p.stat().st_size for p in BUILTIN_DIR.iterdir())
    assert total < 30 * 2**20, f"{total / 2**20:.1f} MB"
    assert {entry["licence"] for entry in card["data"]} <= {"Apache-2.0", "CC BY 4.0", "MIT"}
    from ussl_core.predict import Segmenter   # loads every model with safe_mode=True

    segmenter = Segmenter.builtin()
    image = np.zeros((120, 160, 3), np.uint8)
    image[30:90, 50:110] = (200, 40, 40)
    result = segmenter.segment([image], card["default_method"], with_scores=True)[0]
    assert result.mask.shape == (120, 160) and 0 <= result.mask.min() and result.mask.max() <= 1
    assert set(result.evalseg_scores) == {s.name for s in segmenter.students}

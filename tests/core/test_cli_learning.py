"""The learning half of the `ussl` command: train, evalseg, next-generation, segment, demo."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import make_davis, run_ussl, stderr_lines
from ussl_core.cli import main
from ussl_core.store import Project

STUDENTS = ("lowres", "basic_unet")
IMAGE_SIZES = {"wide": (60, 100), "tall": (130, 70)}   # (height, width)
VIDEO_FRAMES = 12


def ussl(*args) -> tuple[int, str, str]:
    """Run `ussl ARGS` in this process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def ok(*args) -> str:
    code, out, err = ussl(*args)
    assert code == 0, f"ussl {' '.join(map(str, args))} -> {code}\n{err[-3000:]}"
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """init/add/teacher/select, then `ussl train`, `ussl evalseg`, `ussl next-generation`."""
    tmp = tmp_path_factory.mktemp("cli-learning")
    davis = make_davis(tmp / "davis", n_videos=3)
    root = tmp / "project"
    ok("init", root)
    ok("add", root, davis, "--davis", "--quiet")
    ok("teacher", root, "--workers", "1", "--quiet")
    ok("select", root, "--top-percent", "50")
    outputs = {"train": ok("train", root, "--arch", ",".join(STUDENTS), "--epochs", "1",
                           "--batch-size", "4", "--quiet"),
               "evalseg": ok("evalseg", root, "--epochs", "1", "--batch-size", "8",
                             "--max-frames", "24", "--quiet"),
               "next": ok("next-generation", root, "--top-percent", "50", "--workers", "1", "--quiet")}
    images = tmp / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem, (h, w) in IMAGE_SIZES.items():
        picture = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(picture, (w // 4, h // 4), (w // 2, h // 2), (255, 40, 40), -1)
        cv2.imwrite(str(images / f"{stem}.{'png' if stem == 'wide' else 'jpg'}"), picture)
    return {"root": root, "images": images, "tmp": tmp, "out": outputs}


def test_train_evalseg_and_next_generation(project: dict) -> None:
    root = project["root"]
    models = root / "models"
    for arch in STUDENTS:
        card = json.loads((models / f"g1_{arch}_compact.json").read_text())
        assert (models / f"g1_{arch}_compact.keras").exists()
        assert card["architecture"] == arch and card["epochs"] == 1
        assert card["settings"]["batch_size"] == 4
        assert f"g1_{arch}_compact: saved" in project["out"]["train"]
    assert (models / "g1_evalseg_compact.keras").exists()
    assert "g1_evalseg_compact: saved" in project["out"]["evalseg"]
    assert "generation 2" in project["out"]["next"]
    with Project.open(root) as p:
        assert p.meta("generation") == "2"
        selection = p.active_selection()
        assert selection["method"] == "evalseg_top_percent" and selection["value"] == 50
        students = {x.id for x in p.producers() if x.kind == "student"}
        assert {pid for _, pid in p.selection_members(selection["id"])} == students
        jobs = {j["kind"]: j["status"] for j in p.jobs()}
    assert jobs["train"] == jobs["evalseg"] == jobs["next_generation"] == "done"


def test_train_unknown_architecture_is_one_line(project: dict) -> None:
    code, _, err = ussl("train", project["root"], "--arch", "lowres,resnet", "--epochs", "1")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ussl: error: ") and "resnet" in lines[0]


_SEGMENTERS: dict = {}


def _library_results(root: Path, pictures: dict[str, np.ndarray], method: str) -> dict:
    """What the library's Segmenter gives for the project's latest models (loaded once)."""
    from ussl_core.predict import Segmenter

    if root not in _SEGMENTERS:
        _SEGMENTERS[root] = Segmenter.from_project(root)
    segmenter = _SEGMENTERS[root]
    names = list(pictures)
    return dict(zip(names, segmenter.segment([pictures[n] for n in names], method)))


def _pictures(folder: Path) -> dict[str, np.ndarray]:
    from ussl_core.media import read_image

    return {p.stem: read_image(p) for p in sorted(folder.iterdir())}


def test_segment_image_folder_with_boxes(project: dict) -> None:
    from ussl_core.postprocess import BoxSettings, boxes_from_mask

    from ussl_core.segment import SegmentSettings

    out = project["tmp"] / "seg-default"
    printed = ok("segment", project["root"], project["images"], "--out", out, "--boxes", "--quiet")
    assert "wrote 2 masks" in printed
    pictures = _pictures(project["images"])
    expected = _library_results(project["root"], pictures, SegmentSettings().method)
    boxes = json.loads((out / "boxes.json").read_text())
    assert set(boxes) == set(IMAGE_SIZES)
    for stem, (h, w) in IMAGE_SIZES.items():
        written = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert written is not None and written.dtype == np.uint8 and written.shape == (h, w)
        want = np.rint(np.clip(expected[stem].mask, 0, 1) * 255)
        assert np.abs(written.astype(float) - want).max() <= 1
        assert boxes[stem] == [list(b) for b in boxes_from_mask(expected[stem].mask, None,
                                                                 BoxSettings(mode="all"))]
        for x0, y0, x1, y1 in boxes[stem]:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


@pytest.mark.parametrize("ensemble", ["basic_unet", "multiselect"])
def test_segment_with_another_ensemble(project: dict, ensemble: str) -> None:
    out = project["tmp"] / f"seg-{ensemble}"
    ok("segment", project["root"], project["images"], "--out", out, "--ensemble", ensemble, "--quiet")
    assert not (out / "boxes.json").exists()
    expected = _library_results(project["root"], _pictures(project["images"]), ensemble)
    for stem, (h, w) in IMAGE_SIZES.items():
        written = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert written.shape == (h, w) and written.dtype == np.uint8
        want = np.rint(np.clip(expected[stem].mask, 0, 1) * 255)
        assert np.abs(written.astype(float) - want).max() <= 1
    if ensemble == "basic_unet":
        single = project["tmp"] / "seg-single-model"
        ok("segment", project["root"] / "models" / "g1_basic_unet_compact.keras", project["images"],
           "--out", single, "--quiet")
        for stem in IMAGE_SIZES:
            a = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED).astype(int)
            b = cv2.imread(str(single / f"{stem}.png"), cv2.IMREAD_UNCHANGED).astype(int)
            assert np.abs(a - b).max() <= 1      # the named student alone, as from its .keras file


def test_segment_video_writes_overlay(project: dict) -> None:
    video = project["tmp"] / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 72))
    rng = np.random.default_rng(1)
    for i in range(VIDEO_FRAMES):
        frame = rng.integers(0, 60, (72, 96, 3), dtype=np.uint8)
        cv2.circle(frame, (20 + 4 * i, 36), 12, (40, 40, 250), -1)
        writer.write(frame)
    writer.release()
    out = project["tmp"] / "seg-video"
    ok("segment", project["root"], video, "--out", out, "--quiet")
    overlay = out / "clip.overlay.mp4"
    assert overlay.exists()
    capture = cv2.VideoCapture(str(overlay))
    frames = []
    while True:
        good, frame = capture.read()
        if not good:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == VIDEO_FRAMES
    assert all(f.shape == (72, 96, 3) for f in frames)


def test_segment_bad_model_path_is_one_line(project: dict) -> None:
    missing = project["tmp"] / "no-such-model.keras"
    result = run_ussl("segment", missing, project["images"], "--out", project["tmp"] / "never")
    assert result.returncode == 2, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ussl: error: ") and str(missing) in lines[0]
    assert not (project["tmp"] / "never").exists()
    for target, fragment in ((project["tmp"] / "images", "no trained models"),
                             (project["tmp"] / "notes.txt", "not a .keras model nor a project folder")):
        code, _, err = ussl("segment", project["images"], "--model", target, "--out", project["tmp"] / "never")
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
        assert not (project["tmp"] / "never").exists()


def test_demo_reduced_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    printed = ok("demo", "--out", out, "--reduced", "--archs", "lowres,basic_unet", "--workers", "1",
                 "--quiet")
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert (out / "report" / "summary.json").read_text() in printed
    assert summary["videos"] == 3 and summary["purity_source"] == "ground_truth"   # 2 + 1 added
    assert set(summary["max_mean_iou"]) == {"g1", "g2"}
    for generation, rows in summary["max_mean_iou"].items():
        assert {"multi_net", "multiselect_net"} <= set(rows)
        assert {f"{generation}_lowres_compact", f"{generation}_basic_unet_compact"} <= set(rows)
        assert all(0.0 <= v <= 1.0 for v in rows.values())
    assert (out / "report" / "purity.png").exists() and (out / "report" / "table.md").exists()
    assert list((out / "report" / "examples").glob("*.png"))
    with Project.open(out / "project") as p:
        assert p.meta("generation") == "2"

"""The Predict panel's Qt-free state and work (ussl_core.views.predict), without Qt and, but for
one test that loads models, without TensorFlow: a stand-in Segmenter of two students."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from ussl_core.ensemble import COMMON_SIZE
from ussl_core.export import soft_to_uint8
from ussl_core.media import read_image
from ussl_core.progress import CancelToken
from ussl_core.store import Project
from ussl_core.views.predict import (DEFAULT_METHOD, FAILED, NO_MODELS, READY, FilmStripImages,
                                     ImageResult, Task, choose_method, export_blocked, load_models,
                                     method_choices, models_fingerprint, models_hint, progress_text,
                                     render, run_task, skipped_line, student_tiles, students_heading,
                                     thumbnail, usable_method, view_summary)

THUMB = (96, 72)
SQUARE, FLAT = "g1_square_tiny", "g1_flat_tiny"


class StandInSegmenter:
    """Two students: SQUARE sees the centre quarter of the picture (1.0), FLAT sees 0.6
    everywhere; the stand-in EvalSeg-Net rates a mask by its mean."""

    def __init__(self, evalseg: bool = True, fail: bool = False) -> None:
        self.students = [SimpleNamespace(name=SQUARE, architecture="basic_unet"),
                         SimpleNamespace(name=FLAT, architecture="lowres")]
        self.evalseg = object() if evalseg else None
        self.fail = fail

    def student_masks(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        if self.fail:
            raise RuntimeError("the model broke")
        w, h = COMMON_SIZE
        square = np.zeros((h, w), np.float32)
        square[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
        return [{SQUARE: square, FLAT: np.full((h, w), 0.6, np.float32)} for _ in images]

    def evalseg_scores(self, image: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
        return {name: float(mask.mean()) for name, mask in masks.items()} if self.evalseg else {}


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def segmented(images: FilmStripImages, segmenter, row: int = 0, method: str = "multi") -> None:
    """Run every task the strip asks for, as the panel does one thread at a time."""
    while (task := images.next_task(row, method)) is not None:
        assert images.accept(run_task(segmenter, task, THUMB))


# ----------------------------------------------------------------------------- one image


def test_thumbnail_fits_and_never_enlarges():
    assert thumbnail(np.zeros((480, 640, 3), np.uint8), THUMB).shape == (72, 96, 3)
    assert thumbnail(np.zeros((400, 100, 3), np.uint8), THUMB).shape == (72, 18, 3)
    assert thumbnail(np.zeros((20, 30, 3), np.uint8), THUMB).shape == (20, 30, 3)


def test_run_task_segments_renders_and_names_bad_files(tmp_path):
    path = write_image(tmp_path / "a.png", 64, 48)
    segmenter = StandInSegmenter()
    done = run_task(segmenter, Task("segment", path, "multi", make_view=True), THUMB)
    result, view = done.result, done.view
    assert not done.error and result.size == (64, 48) and result.thumbnail.shape == (48, 64, 3)
    assert set(result.student_masks) == {SQUARE, FLAT} and result.pick == FLAT   # mean 0.6 > 0.25
    # Multi-Net: the product, at the input's size; one box around the centre quarter.
    assert view.mask.shape == (48, 64) and view.mask.dtype == np.float32
    assert view.mask.max() == pytest.approx(0.6) and view.mask[0, 0] == 0
    (x0, y0, x1, y1), = view.boxes
    assert abs(x0 - 16) <= 1 and abs(y0 - 12) <= 1 and abs(x1 - 48) <= 1 and abs(y1 - 36) <= 1
    assert view.cutout.shape == (48, 64, 4)
    np.testing.assert_array_equal(view.image, read_image(path))

    # Views only, of one student, from the kept segmentation (the students do not run again).
    again = run_task(StandInSegmenter(fail=True), Task("render", path, SQUARE, True, result), THUMB)
    assert again.result is None and again.view.method == SQUARE and again.view.mask.max() == 1.0
    assert run_task(segmenter, Task("segment", path, "multi", make_view=False), THUMB).view is None

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a picture at all")
    failed = run_task(segmenter, Task("segment", bad, "multi", True), THUMB)
    assert failed.result is None and failed.error.startswith(f"{bad}: ")
    broken = run_task(StandInSegmenter(fail=True), Task("segment", path, "multi", True), THUMB)
    assert broken.error == f"{path}: RuntimeError: the model broke"


def test_render_without_cutout_and_multiselect(tmp_path):
    path = write_image(tmp_path / "a.png", 40, 30)
    result = run_task(StandInSegmenter(), Task("segment", path, "multi", False), THUMB).result
    image = read_image(path)
    picked = render(result, image, "multiselect", cutout=False)
    assert picked.cutout is None and picked.boxes == [(0, 0, 40, 30)]      # FLAT: 0.6 everywhere
    np.testing.assert_allclose(picked.mask, 0.6, atol=1e-6)
    np.testing.assert_allclose(render(result, image, "mean", cutout=False).mask.max(), 0.8, atol=1e-6)


# ----------------------------------------------------------------------------- the film strip


def test_the_strip_adds_once_and_orders_its_tasks(tmp_path):
    paths = [write_image(tmp_path / f"im{i}.png", 32, 24, seed=i) for i in range(4)]
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    images = FilmStripImages(cache_size=3)
    added, problems = images.add([*paths[:2], notes])
    assert added == paths[:2] and list(problems) == [notes] and images.errors == problems
    added, _ = images.add(paths)
    assert added == paths[2:] and images.paths == paths

    # The shown image (row 2) first, then every other image in order, then the neighbours' views.
    segmenter = StandInSegmenter()
    order = []
    while (task := images.next_task(2, "multi")) is not None:
        order.append((task.kind, task.path.name, task.make_view))
        images.accept(run_task(segmenter, task, THUMB))
    assert order == [("segment", "im2.png", True), ("segment", "im0.png", False),
                     ("segment", "im1.png", True), ("segment", "im3.png", True)]
    assert set(images.results) == set(paths) and images.segmented() == 4
    assert all(images.view(p, "multi") is not None for p in paths[1:]) and images.view(paths[0], "multi") is None

    # Another method: views again, the shown image's first, made from the kept segmentations.
    task = images.next_task(2, FLAT)
    assert (task.kind, task.path, task.result) == ("render", paths[2], images.results[paths[2]])
    segmented(images, segmenter, row=2, method=FLAT)
    assert images.view(paths[2], FLAT) is not None
    assert sum(images.view(p, m) is not None for p in paths for m in ("multi", FLAT)) == 3   # the cache

    # A file taken off: what a late task made of it is not kept.
    late = run_task(segmenter, Task("segment", paths[0], "multi", True), THUMB)
    assert images.remove(paths[0], "gone") == 0 and images.errors[paths[0]] == "gone"
    assert not images.accept(late)
    images.forget_results()
    assert not images.results and images.next_task(0, "multi").kind == "segment"
    images.clear()
    assert images.paths == [] and images.next_task(0, "multi") is None


def test_export_writes_masks_cutouts_and_boxes_and_skips_vanished_files(tmp_path):
    first = write_image(tmp_path / "in" / "a.png", 64, 48)
    second = write_image(tmp_path / "in" / "more" / "a.png", 40, 30, seed=1)
    waiting = write_image(tmp_path / "in" / "c.png", 20, 20)
    images = FilmStripImages()
    images.add([first, second])
    segmented(images, StandInSegmenter())
    images.add([waiting])
    assert images.export_job(tmp_path / "none", "multi", [waiting]) is None

    job = images.export_job(tmp_path / "out", FLAT, images.paths)
    assert job.left_out == 1 and [view for _, view in job.items] == [None, None]   # no FLAT views yet
    exported = job.run(CancelToken())
    names = sorted(p.name for p in exported.written)
    assert names == ["a.cutout.png", "a.png", "a_2.cutout.png", "a_2.png", "boxes.csv", "boxes.json"]
    assert exported.images == 2 and not exported.skipped
    assert exported.summary() == f"Exported 2 images to {tmp_path / 'out'}; 1 not segmented yet were left out"
    mask = cv2.imread(str(tmp_path / "out" / "a_2.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (30, 40) and np.all(mask == soft_to_uint8(np.float32(0.6)))
    assert json.loads((tmp_path / "out" / "boxes.json").read_text()) == {"a": [[0, 0, 64, 48]],
                                                                          "a_2": [[0, 0, 40, 30]]}

    # Masks only, from the cached views (the files are not read again); without cached views, a
    # file gone since it was segmented is skipped, named.
    second.unlink()
    cached = images.export_job(tmp_path / "cached", "multi", images.paths, boxes=False, cutouts=False)
    assert [view for _, view in cached.items] == [images.view(first, "multi"), images.view(second, "multi")]
    assert [p.name for p in cached.run(CancelToken()).written] == ["a.png", "a_2.png"]
    exported = images.export_job(tmp_path / "masks", FLAT, images.paths, cutouts=False).run(CancelToken())
    assert [p.name for p in exported.written] == ["a.png", "boxes.json", "boxes.csv"]
    assert exported.images == 1 and len(exported.skipped) == 1 and str(second) in exported.skipped[0]


# ----------------------------------------------------------------------------- models


def test_models_load_only_when_their_files_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("USSL_BUILTIN_DIR", str(tmp_path / "no-builtin-models"))
    root = tmp_path / "proj"
    Project.create(root).close()
    fingerprint = models_fingerprint(root)
    assert load_models(root, fingerprint).unchanged          # nothing read, no TensorFlow
    bare = load_models(root, None)
    assert not bare.unchanged and bare.segmenter is None and bare.fingerprint == fingerprint
    assert bare.missing == f"{root}: no trained models; train one with `ussl train`"


def test_methods_offered_chosen_and_kept():
    rated = method_choices(StandInSegmenter())
    assert [c.name for c in rated] == ["multi", "mean", "multiselect", SQUARE, FLAT]
    assert all(c.enabled for c in rated) and rated[3].architecture == "basic_unet"
    unrated = method_choices(StandInSegmenter(evalseg=False))
    assert not unrated[2].enabled and "EvalSeg-Net" in unrated[2].tip
    assert [c.name for c in method_choices(None)] == ["multi", "mean", "multiselect"]

    assert choose_method("lowres", rated) == FLAT and choose_method("mean", rated) == "mean"
    with pytest.raises(ValueError, match="unknown method"):
        choose_method("nothing", rated)
    with pytest.raises(ValueError, match="not available"):
        choose_method("multiselect", unrated)
    with pytest.raises(ValueError, match="not available"):
        choose_method(SQUARE, method_choices(None))

    assert usable_method(FLAT, rated) == FLAT
    assert usable_method(FLAT, method_choices(None)) == DEFAULT_METHOD     # its student is gone
    assert usable_method("multiselect", unrated) == (DEFAULT_METHOD if DEFAULT_METHOD != "multiselect"
                                                     else "multi")


# ----------------------------------------------------------------------------- texts


def test_texts_of_the_panel(tmp_path):
    path = write_image(tmp_path / "a.png", 64, 48)
    done = run_task(StandInSegmenter(), Task("segment", path, "multiselect", True), THUMB)
    result = done.result
    assert view_summary(path, result, done.view, 2, 5) == (
        f"a.png  \u00b7  64\u00d748  \u00b7  MultiSelect-Net (picked {FLAT})  \u00b7  1 box  \u00b7  2 of 5")

    tiles = student_tiles([SQUARE, FLAT], result, SQUARE)
    assert [t.picked for t in tiles] == [False, True]
    assert tiles[0].caption == f"{SQUARE}\n0.250" and tiles[1].caption == f"{FLAT}\n\u2605 0.600"
    assert tiles[0].tooltip.endswith("; shown above") and "MultiSelect-Net's pick" in tiles[1].tooltip
    assert tiles[0].mask is result.student_masks[SQUARE]
    empty = student_tiles([SQUARE], None, "multi")[0]
    assert empty.mask is None and empty.caption == SQUARE and "no EvalSeg-Net" in empty.tooltip
    unscored = ImageResult(path, (64, 48), result.student_masks, {}, result.thumbnail)
    assert students_heading([], None) == "Students: none loaded"
    assert "no scores" in students_heading([SQUARE], unscored)
    assert "\u2605" in students_heading([SQUARE], result)

    assert models_hint(READY, "project", True, "") == ""
    assert "This project has no trained models yet" in models_hint(READY, "builtin", True, "")
    assert "No project is open" in models_hint(READY, "builtin", False, "")
    assert "Training panel" in models_hint(NO_MODELS, None, True, "")
    assert models_hint(FAILED, None, True, "x.keras: broken").endswith("x.keras: broken")
    assert progress_text(3, 1, True) == "Segmenting 2 of 3\u2026"
    assert progress_text(3, 3, True) == progress_text(3, 0, False) == "3 images"
    assert progress_text(1, 0, False) == "1 image" and progress_text(0, 0, True) == ""
    assert export_blocked(True, True, True, True) == "An export is running"
    assert export_blocked(False, False, True, True).startswith("Tick")
    assert export_blocked(False, True, True, False) == ""
    assert export_blocked(False, True, False, False) == "Nothing segmented yet: the project has no models loaded"
    assert skipped_line(path, f"{path}: truncated") == "Skipped a.png: truncated"
    assert skipped_line(path, "cannot read") == "Skipped a.png: cannot read"

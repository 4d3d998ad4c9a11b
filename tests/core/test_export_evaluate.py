"""Tests of exporting masks as PNGs and of evaluating folders of masks against ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ussl_core.errors import UsslError
from ussl_core.evaluate import evaluate_folders, read_soft_mask
from ussl_core.export import export_masks, soft_to_uint8
from ussl_core.ingest import SourceSpec, add_sources
from ussl_core.metrics import evaluate_pairs
from ussl_core.postprocess import upsample_mask
from ussl_core.progress import CancelToken, Cancelled
from ussl_core.sample import SampleSpec, generate_video, write_frame_folder
from ussl_core.store import Project
from ussl_core.teacher.runner import producer_name, run_teacher

# ----------------------------------------------------------------------------- export


@pytest.fixture
def taught(tmp_path):
    project = Project.create(tmp_path / "p")
    project.set_meta("working_size", json.dumps([48, 36]))
    specs = []
    for seed, (w, h) in enumerate([(128, 96), (100, 60)]):
        frames, _ = generate_video(SampleSpec(n_frames=6, width=w, height=h, seed=seed))
        write_frame_folder(tmp_path / "src" / f"v{seed}", frames)
        specs.append(SourceSpec(tmp_path / "src" / f"v{seed}"))
    list(add_sources(project, specs))
    list(run_teacher(project, workers=1))
    yield project, project.producer(producer_name("videopca")).id
    project.close()


def test_export_masks_at_the_original_size(taught, tmp_path):
    project, pid = taught
    out = tmp_path / "out"
    events = list(export_masks(project, pid, out))
    assert [e.done for e in events] == list(range(1, 13)) and events[-1].total == 12
    files = sorted(out.rglob("*.png"))
    assert len(files) == 12
    assert {p.parent.name for p in files} == {"v0", "v1"}
    videos = {v.id: v for v in project.videos()}
    frames = {f.id: f for f in project.frames()}
    for mask, soft in project.read_masks(project.masks(pid)):
        video, frame = videos[mask.video_id], frames[mask.frame_id]
        image = cv2.imread(str(out / video.name / f"{frame.name}.png"), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.shape == (video.height, video.width)
        assert soft.shape == (36, 48)  # stored at the working size
        assert np.array_equal(image, soft_to_uint8(upsample_mask(soft, (video.width, video.height))))
    assert any(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).max() == 255 for p in files)


def test_export_errors_and_cancel(taught, tmp_path):
    project, pid = taught
    other = project.ensure_producer("nothing@g1", "teacher", 1)
    with pytest.raises(UsslError, match="no masks"):
        list(export_masks(project, other, tmp_path / "none"))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        list(export_masks(project, pid, tmp_path / "cancelled", cancel=token))
    assert not list((tmp_path / "cancelled").rglob("*.png"))


def test_soft_to_uint8_rounds_and_clips():
    soft = np.array([-0.5, 0.0, 0.5 / 255, 0.499, 1.0, 1.7], np.float32)
    assert list(soft_to_uint8(soft)) == [0, 0, 0, 127, 255, 255]


# ----------------------------------------------------------------------------- evaluate


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def disc(size: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    image = np.zeros((size[1], size[0]), np.uint8)
    cv2.circle(image, centre, radius, 255, -1)
    return image


@pytest.fixture
def folders(tmp_path):
    """Nested ground truth (a/ and b/ with the same frame names) and matching predictions."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    truths = {}
    for video, shift in (("a", 0), ("b", 10)):
        for i in range(3):
            key = f"{video}/{i:05d}"
            truths[key] = disc((64, 48), (20 + shift + i, 24), 10)
            write_png(gt_dir / f"{key}.png", truths[key])
    return gt_dir, pred_dir, truths


def test_evaluate_nested_folders(folders):
    gt_dir, pred_dir, truths = folders
    for key, truth in truths.items():
        # Predictions at half size, soft, in JPEG-free 8-bit PNG.
        small = cv2.resize(truth, (32, 24), interpolation=cv2.INTER_AREA)
        write_png(pred_dir / f"{key}.png", small)
    result = evaluate_folders(pred_dir, gt_dir)
    assert result["n_images"] == 6 and result["n_missing_predictions"] == 0
    assert result["max_mean_iou"] > 0.9
    assert result["corloc"] == 1.0
    # Same figures as scoring the pairs directly.
    pairs = [(read_soft_mask(pred_dir / f"{k}.png"), truths[k] > 0) for k in sorted(truths)]
    direct = evaluate_pairs(pairs)
    for name, value in direct.items():
        assert result[name] == pytest.approx(value), name


def test_evaluate_missing_prediction_counts_as_empty(folders):
    gt_dir, pred_dir, truths = folders
    for key, truth in truths.items():
        if key != "b/00001":
            write_png(pred_dir / f"{key}.png", truth)
    # A prediction in the wrong folder does not count for b/00001.
    write_png(pred_dir / "00001.png", truths["b/00001"])
    result = evaluate_folders(pred_dir, gt_dir)
    assert result["n_missing_predictions"] == 1 and result["n_images"] == 6
    assert result["corloc"] == pytest.approx(5 / 6)
    assert result["jaccard"] == pytest.approx(5 / 6)
    assert result["max_mean_iou"] == pytest.approx(5 / 6)


def test_evaluate_errors(folders, tmp_path):
    gt_dir, pred_dir, truths = folders
    write_png(pred_dir / "other" / "00000.png", truths["a/00000"])
    with pytest.raises(UsslError, match="no prediction is named like a ground-truth"):
        evaluate_folders(pred_dir, gt_dir)
    with pytest.raises(UsslError, match="nowhere: does not exist"):
        evaluate_folders(tmp_path / "nowhere", gt_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsslError, match="no ground-truth masks"):
        evaluate_folders(pred_dir, tmp_path / "empty")


def test_read_soft_mask_8_and_16_bit(tmp_path):
    values8 = np.array([[0, 128, 255]], np.uint8)
    write_png(tmp_path / "m8.png", values8)
    np.testing.assert_allclose(read_soft_mask(tmp_path / "m8.png"), [[0.0, 128 / 255, 1.0]], rtol=1e-6)

    values16 = np.array([[0, 1, 32768, 65535]], np.uint16)
    write_png(tmp_path / "m16.png", values16)
    soft = read_soft_mask(tmp_path / "m16.png")
    assert soft.dtype == np.float32
    np.testing.assert_allclose(soft, [[0.0, 1 / 65535, 32768 / 65535, 1.0]], rtol=1e-6)
    assert 0 < soft[0, 1] < 1 / 255  # the precision of 16 bits is kept

    colour = np.zeros((1, 2, 3), np.uint8)
    colour[0, 1] = (0, 200, 40)
    write_png(tmp_path / "rgb.png", colour)
    np.testing.assert_allclose(read_soft_mask(tmp_path / "rgb.png"), [[0.0, 200 / 255]], rtol=1e-6)

    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1] = (0, 0, 100, 255)  # alpha does not count as foreground
    rgba[0, 0, 3] = 255
    write_png(tmp_path / "rgba.png", rgba)
    np.testing.assert_allclose(read_soft_mask(tmp_path / "rgba.png"), [[0.0, 100 / 255]], rtol=1e-6)

    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UsslError, match="bad.png"):
        read_soft_mask(tmp_path / "bad.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UsslError, match="empty.png"):
        read_soft_mask(tmp_path / "empty.png")

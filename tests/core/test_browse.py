"""ussl_core.browse: the per-image rows' facts and scores, without TensorFlow (a stand-in
predictor gives the students' masks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import make_davis
from ussl_core.browse import (DISAGREEMENT, FRAME_ORDER, TEACHER_SCORE, FrameResult,
                              compute_batch, disagreement, gt_iou, key_value, list_frames,
                              read_images, score_frame, sort_keys, sort_order,
                              teacher_producers)
from ussl_core.ensemble import COMMON_SIZE
from ussl_core.errors import UsslError
from ussl_core.ingest import add_sources, davis_sources
from ussl_core.store import Project
from ussl_core.teacher.runner import run_teacher


def box(shape, top, left, bottom, right, value=1.0) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    mask[top:bottom, left:right] = value
    return mask


# ----------------------------------------------------------------------------- pure scores
def test_gt_iou_upsamples_and_thresholds_at_one_half():
    gt = box((40, 80), 0, 0, 40, 40) > 0               # left half of an 80 x 40 image
    soft = box((20, 20), 0, 0, 20, 10, 0.9)            # left half, at another size
    assert gt_iou(soft, gt) == pytest.approx(1.0, abs=0.03)
    assert gt_iou(soft * 0.5, gt) == 0.0               # 0.45 < 0.5: nothing is foreground
    quarter = box((20, 20), 0, 0, 20, 5, 0.9)
    assert gt_iou(quarter, gt) == pytest.approx(0.5, abs=0.05)


def test_disagreement_is_one_minus_iou_at_multi_nets_size():
    multi = box((128, 128), 0, 0, 128, 64)
    assert disagreement(box((72, 96), 0, 0, 72, 48), multi) == pytest.approx(0.0, abs=0.02)
    assert disagreement(box((72, 96), 0, 48, 72, 96), multi) == pytest.approx(1.0, abs=0.02)
    assert disagreement(np.zeros((72, 96)), np.zeros((128, 128))) == 0.0   # both empty agree
    assert disagreement(box((72, 96), 0, 0, 72, 24), multi) == pytest.approx(0.5, abs=0.02)


def test_score_frame_picks_the_best_rated_student_and_scores_against_gt():
    gt = box((64, 64), 0, 0, 64, 32) > 0
    students = {"left": box(COMMON_SIZE, 0, 0, 128, 64), "all": np.ones(COMMON_SIZE, np.float32)}
    teacher = box((72, 96), 0, 0, 72, 96)                 # everything
    result = score_frame(7, teacher, gt, students, {"left": 0.4, "all": 0.9})
    assert result.chosen == "all" and result.selected_score == 0.9
    assert result.iou["left"] == pytest.approx(1.0) and result.iou["all"] == pytest.approx(0.5)
    assert result.multiselect_iou == result.iou["all"]
    assert result.multi_net_iou == pytest.approx(1.0)      # product = left half
    assert result.teacher_iou == pytest.approx(0.5)
    assert result.iou_gain == pytest.approx(0.5)
    assert result.disagreement == pytest.approx(0.5, abs=0.02)
    assert set(result.student_masks) == {"left", "all"}
    assert result.student_masks["left"].dtype == np.uint8 and result.student_masks["all"].min() == 255

    no_gt = score_frame(8, teacher, None, students, {})
    assert no_gt.chosen is None and math.isnan(no_gt.multi_net_iou) and no_gt.iou == {}
    assert math.isnan(no_gt.teacher_iou) and no_gt.disagreement == pytest.approx(0.5, abs=0.02)
    only_teacher = score_frame(9, teacher, gt)
    assert only_teacher.teacher_iou == pytest.approx(0.5) and math.isnan(only_teacher.disagreement)


def test_sort_order_is_stable_with_missing_values_last():
    values = np.array([0.2, math.nan, 0.9, 0.2, math.nan, 0.5])
    assert sort_order(values, descending=True).tolist() == [2, 5, 0, 3, 1, 4]
    assert sort_order(values, descending=False).tolist() == [0, 3, 5, 2, 1, 4]


def test_sort_keys_and_values():
    assert sort_keys([], False) == [FRAME_ORDER, TEACHER_SCORE, "teacher IoU"]
    keys = sort_keys(["a", "b"], True)
    assert {DISAGREEMENT, "IoU gain", "Multi-Net IoU", "MultiSelect-Net EvalSeg", "a EvalSeg",
            "b IoU"} <= set(keys)
    assert "a EvalSeg" not in sort_keys(["a"], False)
    result = FrameResult(1, teacher_iou=0.25, evalseg={"a": 0.7}, iou={"a": 0.5},
                         multi_net_iou=0.75, chosen="a", disagreement=0.1)
    from ussl_core.browse import BrowseFrame

    frame = BrowseFrame(1, 1, "v", 0, "0", None, 0, "", None, teacher_score=0.3)
    assert key_value("a EvalSeg", frame, result) == 0.7
    assert key_value("a IoU", frame, result) == 0.5
    assert key_value("IoU gain", frame, result) == 0.5
    assert key_value("MultiSelect-Net EvalSeg", frame, result) == 0.7
    assert key_value(TEACHER_SCORE, frame, None) == 0.3
    assert key_value(FRAME_ORDER, frame, None, 12) == 12
    assert math.isnan(key_value(DISAGREEMENT, frame, None))
    with pytest.raises(KeyError):
        key_value("nonsense", frame, result)


# ----------------------------------------------------------------------------- on a project
class HalfPredictor:
    """A stand-in for StudentPredictor: two students, left half and the whole image."""

    def __init__(self) -> None:
        self.calls = []

    def predict(self, images):
        self.calls.append(len(images))
        masks = [{"left": box(COMMON_SIZE, 0, 0, 128, 64), "all": np.ones(COMMON_SIZE, np.float32)}
                 for _ in images]
        return masks, [{"left": float(im.mean()) / 255, "all": 0.5} for im in images]


class BrokenPredictor:
    def predict(self, images):
        raise UsslError("cannot load the generation-1 models: broken")


@pytest.fixture(scope="module")
def project_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("browse")
    project = Project.create(base / "project")
    project.set_meta("working_size", "[96, 72]")
    for _ in add_sources(project, davis_sources(make_davis(base / "davis", n_videos=2))):
        pass
    project.close()
    return base / "project"


def test_frames_images_and_batches(project_root):
    with Project.open(project_root) as project:
        before = list_frames(project)
        size = project.working_size
    assert len(before) == 40 and all(f.frames_shard is None and not f.has_teacher for f in before)
    decoded = read_images(before[:3] + before[25:27], size)   # from the sources (no shards yet)
    assert all(im.shape == (72, 96, 3) for im in decoded)

    with Project.open(project_root, write=True) as project:
        for _ in run_teacher(project, workers=1):
            pass
    with Project.open(project_root) as project:
        teacher = teacher_producers(project)[0]
        frames = list_frames(project, teacher.id)
        masks = {m.frame_id: m for m in project.masks(teacher.id)}
    assert [f.frame_id for f in frames] == [f.frame_id for f in before]
    assert all(f.frames_shard and f.has_gt for f in frames)
    assert [f.teacher_score for f in frames] == [masks[f.frame_id].score for f in frames]
    stored = read_images(frames[:3] + frames[25:27], size)
    for a, b in zip(decoded, stored):   # the same pixels, from the source or the shard
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0

    predictor = HalfPredictor()
    results, warning = compute_batch(frames[:5], size, predictor)
    assert warning == "" and predictor.calls == [5] and [r.frame_id for r in results] == [
        f.frame_id for f in frames[:5]]
    for result, image in zip(results, read_images(frames[:5], size)):
        assert result.evalseg["left"] == pytest.approx(float(image.mean()) / 255, abs=1e-6)
        assert result.chosen == max(result.evalseg, key=result.evalseg.get)
        assert 0 <= result.teacher_iou <= 1 and not math.isnan(result.disagreement)

    teacher_only, warning = compute_batch(frames[:3], size, BrokenPredictor())
    assert "broken" in warning
    assert [r.teacher_iou for r in teacher_only] == [r.teacher_iou for r in results[:3]]
    assert all(r.student_masks == {} and r.chosen is None for r in teacher_only)
    plain, warning = compute_batch(frames[:3], size, None)
    assert warning == "" and [r.teacher_iou for r in plain] == [r.teacher_iou for r in results[:3]]


def test_browse_does_not_import_tensorflow_keras_or_qt():
    from tests.core.test_light_imports import HEAVY, run_probe

    assert run_probe(["ussl_core.browse"], HEAVY) == {"ussl_core.browse": []}

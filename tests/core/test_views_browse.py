"""ussl_core.views.browse: the Per-image panel's state without Qt or TensorFlow (a stand-in
predictor gives the students' masks): the rows' facts and scores, reading the store, the
table's columns, cells and orders, the large view's tiles."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_davis
from ussl_core.views.browse import (DISAGREEMENT, FRAME_ORDER, NO_FRAMES_HINT, NO_MODELS_HINT,
                                    TEACHER_SCORE, BrowseFrame, BrowseState, FrameResult,
                                    GenerationInfo, RecentlyUsed, cell_of, compute_batch,
                                    disagreement, filtered_positions, fmt, generation_label,
                                    grey_image, gt_iou, hint_text, key_value, list_frames,
                                    make_columns, make_renderer, next_batch, number_text,
                                    ordered_view, payload_of, progress_text, read_gt, read_images,
                                    read_row, read_state, read_teacher_mask, results_key,
                                    row_facts, row_summary, row_tiles, score_frame, sort_keys,
                                    sort_order, teacher_producers, tooltip_of)
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
    batch = compute_batch(frames[:5], size, predictor)
    results, warning = batch.results, batch.warning
    assert warning == "" and predictor.calls == [5] and [r.frame_id for r in results] == [
        f.frame_id for f in frames[:5]]
    for result, image in zip(results, read_images(frames[:5], size)):
        assert result.evalseg["left"] == pytest.approx(float(image.mean()) / 255, abs=1e-6)
        assert result.chosen == max(result.evalseg, key=result.evalseg.get)
        assert 0 <= result.teacher_iou <= 1 and not math.isnan(result.disagreement)

    batch = compute_batch(frames[:3], size, BrokenPredictor())
    teacher_only, warning = batch.results, batch.warning
    assert "broken" in warning
    assert [r.teacher_iou for r in teacher_only] == [r.teacher_iou for r in results[:3]]
    assert all(r.student_masks == {} and r.chosen is None for r in teacher_only)
    batch = compute_batch(frames[:3], size, None)
    plain, warning = batch.results, batch.warning
    assert warning == "" and [r.teacher_iou for r in plain] == [r.teacher_iou for r in results[:3]]


def test_browse_does_not_import_tensorflow_keras_or_qt():
    from tests.core.test_light_imports import HEAVY, run_probe

    assert run_probe(["ussl_core.views.browse"], HEAVY) == {"ussl_core.views.browse": []}


# ----------------------------------------------------------------------------- the panel's state
def frame(frame_id: int, video_id: int = 1, has_gt: bool = True, teacher: bool = True,
          score: float = 0.5) -> BrowseFrame:
    """A row's facts without a project (for the pure shaping functions)."""
    return BrowseFrame(frame_id, video_id, f"v{video_id}", frame_id, str(frame_id), None, 0, "",
                       "/gt.png" if has_gt else None, score if teacher else math.nan,
                       "/masks.h5" if teacher else None)


@pytest.fixture(scope="module")
def taught_root(tmp_path_factory):
    """Two sample videos and the teacher's masks, no students (made once, only read)."""
    base = tmp_path_factory.mktemp("browse_state")
    project = Project.create(base / "project")
    project.set_meta("working_size", "[96, 72]")
    for _ in add_sources(project, davis_sources(make_davis(base / "davis", n_videos=2))):
        pass
    for _ in run_teacher(project, workers=1):
        pass
    project.close()
    return base / "project"


def test_read_state_lists_frames_videos_and_teachers(taught_root):
    state = read_state(taught_root, None)
    with Project.open(taught_root) as project:
        teacher = teacher_producers(project)[0]
        frames = list_frames(project, teacher.id)
        videos = project.videos()
    assert state.root == taught_root and state.working_size == (96, 72)
    assert (state.teachers, state.teacher, state.teacher_id) == ([teacher.name], teacher.name,
                                                                 teacher.id)
    assert state.frames == frames and len(frames) == 40
    assert state.videos == [(v.id, v.name, v.width, v.height) for v in videos]
    assert len(state.videos) == 2 and state.generations == {}     # no models folder yet
    assert [shard for shard, _ in state.teacher_signature] == sorted({f.teacher_shard for f in frames})
    assert read_state(taught_root, "no such teacher").teacher == teacher.name   # the default


def test_results_key_changes_when_the_teacher_or_a_model_is_rewritten():
    state = BrowseState(Path("p"), (96, 72), ["t"], "t", 1, (("m.h5", 1),), [], [], {})
    info = GenerationInfo(1, ("a", "b"), True, (("a.keras", 5),))
    key = results_key(state, info)
    assert results_key(replace(state), replace(info)) == key
    assert results_key(replace(state, teacher_signature=(("m.h5", 2),)), info) != key
    assert results_key(state, replace(info, signature=(("a.keras", 6),))) != key
    assert results_key(state, None) != key


def test_recently_used_makes_each_value_once_and_drops_the_oldest():
    made = []
    kept: RecentlyUsed[str, str] = RecentlyUsed(2)

    def make(name):
        return lambda: made.append(name) or name.upper()

    assert kept.get("a", make("a")) == "A"
    assert kept.get("b", make("b")) == "B"
    assert kept.get("a", make("a")) == "A" and made == ["a", "b"]    # kept, and now the latest
    kept.get("c", make("c"))
    assert kept.peek("b") is None and kept.peek("a") == "A" and len(kept) == 2
    kept.clear()
    assert len(kept) == 0 and kept.peek("a") is None


def test_ordered_view_filters_a_video_and_sorts_with_missing_values_last():
    frames = [frame(i, video_id=1 + i % 2, score=s) for i, s in enumerate([0.3, 0.9, 0.1, 0.7, 0.5])]
    results = {0: FrameResult(0, disagreement=0.2), 3: FrameResult(3, disagreement=0.8),
               4: FrameResult(4, disagreement=0.5)}
    assert filtered_positions(frames, None).tolist() == [0, 1, 2, 3, 4]
    assert filtered_positions(frames, 2).tolist() == [1, 3]
    assert ordered_view(frames, results, None, FRAME_ORDER, False).tolist() == [0, 1, 2, 3, 4]
    assert ordered_view(frames, results, None, FRAME_ORDER, True).tolist() == [4, 3, 2, 1, 0]
    assert ordered_view(frames, results, None, TEACHER_SCORE, True).tolist() == [1, 3, 4, 0, 2]
    assert ordered_view(frames, results, None, DISAGREEMENT, True).tolist() == [3, 4, 0, 1, 2]
    assert ordered_view(frames, results, None, DISAGREEMENT, False).tolist() == [0, 4, 3, 1, 2]
    assert ordered_view(frames, results, 1, DISAGREEMENT, True).tolist() == [4, 0, 2]


def test_next_batch_starts_at_the_visible_rows_then_wraps_then_other_videos():
    frames = [frame(i, video_id=1 if i < 6 else 2) for i in range(10)]
    view = np.arange(6, dtype=np.int64)         # the first video's rows are shown
    results = {2: FrameResult(2)}

    def ids(batch):
        return [f.frame_id for f in batch]

    assert ids(next_batch(frames, view, 3, results, size=4)) == [3, 4, 5, 0]
    assert ids(next_batch(frames, view, 3, results, size=8)) == [3, 4, 5, 0, 1, 6, 7, 8]
    assert next_batch(frames, view, 0, {i: FrameResult(i) for i in range(10)}) == []


def test_columns_follow_the_generation_and_sort_by_known_keys():
    assert [c.kind for c in make_columns(None)] == ["frame", "gt", "teacher"]
    columns = make_columns(GenerationInfo(1, ("a", "b"), True, ()))
    assert [c.title for c in columns] == ["Frame", "Ground truth", "Teacher", "a", "b", "Multi-Net",
                                          "MultiSelect-Net", "Disagreement", "IoU gain"]
    keys = sort_keys(["a", "b"], True)
    assert all(c.key in keys for c in columns if c.key is not None)
    assert [c.image for c in columns][-3:] == [True, False, False]
    without = make_columns(GenerationInfo(1, ("a",), False, ()))
    select = next(c for c in without if c.kind == "select")
    assert select.key is None and "needs an EvalSeg-Net" in select.tip
    assert next(c for c in without if c.kind == "student").key == "a IoU"


def test_cells_say_what_each_row_has():
    columns = {c.student or c.kind: c for c in make_columns(GenerationInfo(3, ("left", "all"), True, ()))}
    gt = box((64, 64), 0, 0, 64, 32) > 0
    students = {"left": box(COMMON_SIZE, 0, 0, 128, 64), "all": np.ones(COMMON_SIZE, np.float32)}
    result = score_frame(7, box((72, 96), 0, 0, 72, 96), gt, students, {"left": 0.4, "all": 0.9})
    row = frame(7, score=0.25)
    assert cell_of(columns["frame"], row, result, 3, 5) == (("frame", 7), "v1 \u00b7 7", "", False)
    assert cell_of(columns["teacher"], row, result, 3, 5) == (
        ("teacher", 5, 7), "sel 0.250 \u00b7 IoU 0.50", "", False)
    key, caption, badge, dim = cell_of(columns["all"], row, result, 3, 5)
    assert (key, caption, badge, dim) == (("student", 3, "all", 7), "ES 0.90 \u00b7 IoU 0.50",
                                          "picked", False)
    assert cell_of(columns["left"], row, result, 3, 5)[2] == ""
    assert cell_of(columns["select"], row, result, 3, 5)[0] == key   # its pick's thumbnail
    assert cell_of(columns["multi"], row, result, 3, 5)[0] == ("multi", 3, 7)
    # Not computed yet; computed without students; no ground truth; no teacher mask.
    assert cell_of(columns["all"], row, None, 3, 5) == (None, "computing\u2026", "", True)
    assert cell_of(columns["all"], row, FrameResult(7), 3, 5) == (None, "not available", "", True)
    bare = frame(8, has_gt=False, teacher=False)
    assert cell_of(columns["gt"], bare, None, 3, 5) == (None, "no ground truth", "", True)
    assert cell_of(columns["teacher"], bare, None, 3, 5) == (None, "no teacher mask", "", True)
    # What the thumbnail thread is given to draw.
    assert payload_of(columns["teacher"], row, result, (40, 30)) == ("teacher", row, (40, 30))
    kind, mask, _ = payload_of(columns["select"], row, result, (40, 30))
    assert kind == "student" and mask is result.student_masks["all"]
    kind, masks, _ = payload_of(columns["multi"], row, result, (40, 30))
    assert kind == "multi" and len(masks) == 2
    assert payload_of(columns["left"], row, None, (40, 30)) == ("none", None, (40, 30))
    # The number columns and the tooltips.
    assert number_text(columns["disagreement"], result) == f"{result.disagreement:.3f}"
    assert number_text(columns["gain"], result) == f"{result.iou_gain:+.3f}"
    assert number_text(columns["gain"], result).startswith("+")
    assert number_text(columns["gain"], None) == number_text(columns["disagreement"], None) == "\u2014"
    assert "MultiSelect-Net picked this student" in tooltip_of(columns["all"], row, result)
    assert "MultiSelect-Net picked this student" not in tooltip_of(columns["left"], row, result)
    assert "MultiSelect-Net picked all" in tooltip_of(columns["select"], row, result)


def test_row_facts_are_plain_copies():
    row = frame(4, score=0.25)
    facts = row_facts(row, None)
    assert facts["frame_id"] == 4 and facts["teacher_score"] == 0.25 and not facts["computed"]
    assert math.isnan(facts["teacher_iou"]) and facts["evalseg"] == {} and facts["chosen"] is None
    result = FrameResult(4, teacher_iou=0.5, evalseg={"a": 0.7}, iou={"a": 0.6},
                         multi_net_iou=0.75, chosen="a")
    facts = row_facts(row, result)
    assert facts["computed"] and facts["iou_gain"] == 0.25 and math.isnan(facts["multiselect_iou"])
    facts["evalseg"]["a"] = 0.0
    assert result.evalseg == {"a": 0.7}


def test_hints_and_progress_say_what_is_missing():
    empty = BrowseState(Path("p"), (96, 72), [], None, None, (), [], [], {})
    listed = replace(empty, frames=[frame(1), frame(2)])
    with_es, without_es = GenerationInfo(2, ("a",), True, ()), GenerationInfo(2, ("a", "b"), False, ())
    assert hint_text(empty, None) == NO_FRAMES_HINT
    assert hint_text(listed, None) == NO_MODELS_HINT
    assert "Generation 2 has no EvalSeg-Net" in hint_text(listed, without_es)
    assert hint_text(listed, with_es) == ""
    assert hint_text(listed, with_es, "cannot load") == "cannot load"
    assert hint_text(listed, None, "cannot load") == NO_MODELS_HINT + "\ncannot load"
    assert generation_label(without_es) == "2 (2 students, no EvalSeg-Net)"
    assert generation_label(with_es) == "2 (1 students)"
    frames = [frame(i) for i in range(3)]
    assert progress_text(frames, {0: FrameResult(0)}, True) == "computing students' masks: 1 / 3 rows"
    assert progress_text(frames, {}, False) == "computing scores: 0 / 3 rows"
    assert progress_text(frames, {i: FrameResult(i) for i in range(3)}, True) == "3 rows"


def test_grey_image_scales_a_soft_mask_to_bytes():
    soft = np.array([[0.0, 0.5], [1.0, 1.5]], np.float32)
    assert grey_image(soft, (2, 2)).tolist() == [[0, 128], [255, 255]]
    assert grey_image(np.ones((64, 64)), (48, 36)).shape == (36, 48)


def test_renderer_draws_each_kind_of_cell(taught_root):
    row = read_state(taught_root, None).frames[3]
    render = make_renderer()
    size = (48, 36)
    image = render(("frame", row, size))
    assert image.shape == (36, 48, 3) and image.dtype == np.uint8
    assert np.array_equal(image, read_images([row], size)[0])
    assert np.array_equal(render(("teacher", row, size)), grey_image(read_teacher_mask(row), size))
    gt = render(("gt", row, size))
    assert np.array_equal(gt, grey_image(read_gt(row).astype(np.float32), size)) and gt.max() == 255
    full = np.full((64, 64), 255, np.uint8)
    assert (render(("student", full, size)) == 255).all()
    half = np.zeros((64, 64), np.uint8)
    half[:, :32] = 255
    multi = render(("multi", (full, half), size))     # the product: the left half
    assert multi[:, :20].min() == 255 and multi[:, 28:].max() == 0
    with pytest.raises(ValueError):
        render(("none", None, size))


def test_large_view_reads_the_row_again_and_captions_each_tile(taught_root):
    state = read_state(taught_root, None)
    row = state.frames[5]
    predictor = HalfPredictor()
    images = read_row(row, state.working_size, (120, 90), predictor)
    assert predictor.calls == [1] and images.image.shape == (72, 96, 3)
    assert images.teacher is not None and images.gt is not None
    assert set(images.students) == set(images.scores) == {"left", "all"}
    result = compute_batch([row], state.working_size, HalfPredictor()).results[0]
    columns = [c for c in make_columns(GenerationInfo(1, ("left", "all"), True, ())) if c.image]
    tiles = row_tiles(columns, row, result, images)
    by_title = {c.title: tile for c, tile in tiles.items()}
    assert list(by_title) == ["Frame", "Ground truth", "Teacher", "left", "all", "Multi-Net",
                              "MultiSelect-Net"]
    assert all(tile.image.shape[:2] == (90, 120) for tile in tiles.values())
    chosen = max(images.scores, key=images.scores.get)
    assert [by_title[n].picked for n in ("left", "all")] == [chosen == "left", chosen == "all"]
    assert not by_title["MultiSelect-Net"].picked and by_title["MultiSelect-Net"].caption.startswith(chosen)
    assert by_title["Teacher"].caption == (f"sel {row.teacher_score:.3f} \u00b7 "
                                           f"IoU {fmt(result.teacher_iou)}")
    assert f"disagreement {result.disagreement:.3f}" in row_summary(row, result)
    # Without students and before the row is computed: what is stored, without IoU captions.
    plain = read_row(row, state.working_size, (120, 90))
    assert plain.students == {} and plain.scores == {}
    tiles = row_tiles(columns, row, None, plain)
    assert [c.kind for c in tiles] == ["frame", "gt", "teacher"]
    assert tiles[columns[2]].caption == f"sel {row.teacher_score:.3f}"
    assert row_summary(row, None) == f"{row.video}, frame {row.idx} ({row.name})"

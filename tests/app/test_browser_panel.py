"""The per-image browser with real widgets on a generated project: two sample videos with
ground truth, the teacher's masks, and saved students of two generations.

Generation 1 is two colour students (a 1 x 1 convolution and a sigmoid: masks that follow the
object, differ from frame to frame, and cross in size so that MultiSelect-Net's pick changes)
with the tiny mean-scoring EvalSeg-Net; generation 2 is tests.tiny_models' set. Every value
the panel shows is checked against a computation made here from the store and the models.
"""

from __future__ import annotations

import math
import os
import shutil

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from app.context import ProjectContext, StoreChange  # noqa: E402
from app.panels.browser import BrowserPanel  # noqa: E402
from app.widgets.thumbnails import CellRole  # noqa: E402
from tests.conftest import make_davis  # noqa: E402
from tests.tiny_models import save_model_with_card, save_tiny_models, scoring_evalseg  # noqa: E402
from ussl_core.ingest import add_sources, davis_sources  # noqa: E402
from ussl_core.purity import read_ground_truth  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher.runner import run_teacher  # noqa: E402
from ussl_core.views.browse import NO_MODELS_HINT  # noqa: E402

WAIT_MS = 60_000
COLOUR_STUDENTS = {"g1_colour_a": ([0.0264, -0.0657, -0.0002], 0.149),
                   "g1_colour_b": ([0.03, -0.085, 0.0], 1.1)}


def colour_student(weights, bias):
    """A 32 x 32 student whose mask is sigmoid(w . rgb + b) per pixel."""
    import keras

    image = keras.Input((32, 32, 3), name="image")
    mask = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(image)
    model = keras.Model(image, mask, name="colour")
    model.get_layer("mask").set_weights([np.array(weights, np.float32).reshape(1, 1, 3, 1),
                                         np.array([bias], np.float32)])
    return model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The project without models (built once); sources keep their relative place."""
    base = tmp_path_factory.mktemp("browser")
    davis = make_davis(base / "davis", n_videos=2)
    project = Project.create(base / "project")
    project.set_meta("working_size", "[96, 72]")
    for _ in add_sources(project, davis_sources(davis)):
        pass
    for _ in run_teacher(project, workers=1):
        pass
    project.close()
    return base


@pytest.fixture(scope="module")
def with_models(built, tmp_path_factory):
    base = tmp_path_factory.mktemp("browser_models")
    shutil.copytree(built, base / "copy")
    models = base / "copy" / "project" / "models"
    for name, (weights, bias) in COLOUR_STUDENTS.items():
        save_model_with_card(colour_student(weights, bias), models, name, "colour", 1)
    save_model_with_card(scoring_evalseg(32), models, "g1_evalseg_tiny", "evalseg", 1)
    save_tiny_models(models, generation=2)
    return base / "copy" / "project"


def open_panel(qtbot, root):
    context = ProjectContext()
    context.open(root)
    panel = BrowserPanel(context)
    qtbot.addWidget(panel)
    panel.resize(1300, 700)
    panel.show()
    qtbot.waitUntil(lambda: panel.state is not None, timeout=WAIT_MS)
    return context, panel


@pytest.fixture
def models_panel(qtbot, with_models):
    context, panel = open_panel(qtbot, with_models)
    yield panel
    panel.shutdown()
    context.shutdown()


@pytest.fixture
def plain_panel(qtbot, built):
    context, panel = open_panel(qtbot, built / "project")
    yield panel
    panel.shutdown()
    context.shutdown()


def direct_iou(soft: np.ndarray, gt: np.ndarray) -> float:
    """IoU at 0.5 after bilinear upsampling to the ground truth's size, computed here."""
    pred = cv2.resize(soft.astype(np.float32), (gt.shape[1], gt.shape[0]),
                      interpolation=cv2.INTER_LINEAR) > 0.5
    union = np.count_nonzero(pred | gt)
    return np.count_nonzero(pred & gt) / union if union else 1.0


def expected_rows(root, generation: int) -> dict[int, dict]:
    """Per frame id: teacher score and IoU, the students' EvalSeg scores and IoUs, Multi-Net
    IoU, the pick and the disagreement, straight from the store and a Segmenter."""
    from ussl_core.predict import Segmenter

    segmenter = Segmenter.from_project(root, generation)
    out = {}
    with Project.open(root) as project:
        teacher = project.default_producer()
        masks = {m.frame_id: m for m in project.masks(teacher.id)}
        shots = {s.id: s for s in project.shots()}
        for frame in project.frames():
            shot = shots[frame.shot_id]
            image = project.read_frames(shot, [frame.idx - shot.start])[0]
            students = segmenter.student_masks([image])[0]
            scores = segmenter.evalseg_scores(image, students)
            gt = read_ground_truth(project.abspath(frame.gt_path))
            soft = project.read_mask(masks[frame.id])
            multi = np.prod(np.stack(list(students.values())), axis=0)
            small_teacher = cv2.resize(soft, multi.shape[::-1], interpolation=cv2.INTER_LINEAR)
            a, b = small_teacher > 0.5, multi > 0.5
            union = np.count_nonzero(a | b)
            out[frame.id] = {
                "teacher_score": masks[frame.id].score, "teacher_iou": direct_iou(soft, gt),
                "evalseg": scores, "iou": {n: direct_iou(m, gt) for n, m in students.items()},
                "multi_net_iou": direct_iou(multi, gt), "chosen": max(scores, key=scores.get),
                "disagreement": 1 - (np.count_nonzero(a & b) / union if union else 1.0)}
    return out


def column_of(panel, kind: str, student: str | None = None) -> int:
    return next(i for i, c in enumerate(panel.model.columns)
                if c.kind == kind and (student is None or c.student == student))


def test_scores_marks_and_sorting_match_direct_computation(qtbot, models_panel, with_models):
    panel = models_panel
    assert panel.generations() == [1, 2] and panel.generation == 2   # the latest by default
    panel.set_generation(1)
    assert [c.title for c in panel.model.columns] == [
        "Frame", "Ground truth", "Teacher", "g1_colour_a", "g1_colour_b", "Multi-Net",
        "MultiSelect-Net", "Disagreement", "IoU gain"]
    qtbot.waitUntil(panel.is_complete, timeout=WAIT_MS)
    assert panel.hint_text() == ""
    rows = panel.rows()
    expected = expected_rows(with_models, 1)
    assert len(rows) == 40 and {r["frame_id"] for r in rows} == set(expected)
    for row in rows:
        want = expected[row["frame_id"]]
        assert row["computed"] and row["has_gt"]
        assert row["teacher_score"] == pytest.approx(want["teacher_score"], abs=1e-9)
        assert row["teacher_iou"] == pytest.approx(want["teacher_iou"], abs=1e-9)
        assert row["evalseg"].keys() == want["evalseg"].keys()
        for name, score in want["evalseg"].items():
            assert row["evalseg"][name] == pytest.approx(score, abs=1e-5)
        for name, value in want["iou"].items():
            assert row["iou"][name] == pytest.approx(value, abs=5e-3)
        assert row["multi_net_iou"] == pytest.approx(want["multi_net_iou"], abs=5e-3)
        assert row["disagreement"] == pytest.approx(want["disagreement"], abs=5e-3)
        assert row["iou_gain"] == pytest.approx(row["multi_net_iou"] - row["teacher_iou"])
        # MultiSelect-Net: the student with the highest EvalSeg score, and its IoU.
        assert row["chosen"] == max(row["evalseg"], key=row["evalseg"].get)
        assert row["multiselect_iou"] == row["iou"][row["chosen"]]
    picks = [r["chosen"] for r in rows]
    assert set(picks) == set(COLOUR_STUDENTS), "the sample data should make both students win"
    assert 0 < np.mean([v["teacher_iou"] for v in expected.values()]) < 1

    # The mark in the table: on the picked student's cell only, and MultiSelect shows its mask.
    model = panel.model
    for r, row in enumerate(rows):
        for name in COLOUR_STUDENTS:
            _, caption, badge, _ = model.data(model.index(r, column_of(panel, "student", name)),
                                              CellRole)
            assert badge == ("picked" if name == row["chosen"] else "")
            assert f"ES {row['evalseg'][name]:.2f}" in caption
        key, caption, _, _ = model.data(model.index(r, column_of(panel, "select")), CellRole)
        assert key[2] == row["chosen"] and f"IoU {row['multiselect_iou']:.2f}" in caption

    # Sorting by disagreement: highest first, as computed here; the header does it too.
    panel.sort_by("disagreement")
    got = panel.rows()
    want_order = sorted(expected, key=lambda f: -expected[f]["disagreement"])
    assert [round(r["disagreement"], 6) for r in got] == sorted(
        (round(r["disagreement"], 6) for r in got), reverse=True)
    assert np.allclose([r["disagreement"] for r in got],
                       [expected[f]["disagreement"] for f in want_order], atol=5e-3)
    assert len({round(r["disagreement"], 4) for r in got}) > 20     # not a degenerate order
    assert panel.table.horizontalHeader().sortIndicatorSection() == column_of(panel, "disagreement")
    panel.table.horizontalHeader().sectionClicked.emit(column_of(panel, "disagreement"))
    assert panel.sort_key == ("disagreement", False)   # the same header again: lowest first
    assert [r["disagreement"] for r in panel.rows()] == sorted(r["disagreement"] for r in got)
    panel.table.horizontalHeader().sectionClicked.emit(column_of(panel, "teacher"))
    assert panel.sort_key == ("teacher score", True)
    scores = [r["teacher_score"] for r in panel.rows()]
    assert scores == sorted(scores, reverse=True)
    panel.sort_by("g1_colour_b IoU", descending=False)
    ious = [r["iou"]["g1_colour_b"] for r in panel.rows()]
    assert ious == sorted(ious)
    with pytest.raises(KeyError):
        panel.sort_by("no such score")

    # Filter by video: only its rows, still in the chosen order.
    second = panel.state.videos[1][0]
    panel.set_video(second)
    shown = panel.rows()
    assert len(shown) == 20 and {r["video_id"] for r in shown} == {second}
    assert [r["iou"]["g1_colour_b"] for r in shown] == sorted(r["iou"]["g1_colour_b"] for r in shown)
    panel.set_video(None)
    assert len(panel.rows()) == 40

    # Another generation is computed once; switching back uses what is cached.
    panel.set_generation(2)
    assert [c.student for c in panel.model.columns if c.kind == "student"] == [
        "g2_basic_unet_tiny", "g2_lowres_tiny"]
    qtbot.waitUntil(panel.is_complete, timeout=WAIT_MS)
    assert all(r["chosen"] == "g2_lowres_tiny" for r in panel.rows())   # constant 0.7 wins
    batches = panel.batches_computed
    panel.set_generation(1)
    assert panel.is_complete() and panel.batches_computed == batches
    assert {r["frame_id"]: r["chosen"] for r in panel.rows()} == {
        r["frame_id"]: r["chosen"] for r in rows}


def test_double_click_opens_the_rows_masks_side_by_side(qtbot, models_panel):
    panel = models_panel
    panel.set_generation(1)
    qtbot.waitUntil(panel.is_complete, timeout=WAIT_MS)
    panel.sort_by("disagreement")
    row = panel.rows()[0]
    index = panel.model.index(0, 0)
    rect = panel.table.visualRect(index)
    # (a view emits doubleClicked for a double click that follows a press on the same row)
    qtbot.mouseClick(panel.table.viewport(), Qt.LeftButton, pos=rect.center())
    qtbot.mouseDClick(panel.table.viewport(), Qt.LeftButton, pos=rect.center())
    dialog = panel.dialog
    assert dialog is not None and dialog.isVisible() and dialog.frame.frame_id == row["frame_id"]
    qtbot.waitUntil(lambda: dialog.is_loaded, timeout=WAIT_MS)
    tiles = {column.title: tile for column, tile in dialog.tiles.items()}
    assert list(tiles) == ["Frame", "Ground truth", "Teacher", "g1_colour_a", "g1_colour_b",
                           "Multi-Net", "MultiSelect-Net"]
    assert all(tile.image is not None for tile in tiles.values())
    assert [t.picked for t in tiles.values()] == [
        False, False, False, row["chosen"] == "g1_colour_a", row["chosen"] == "g1_colour_b",
        False, False]
    assert row["chosen"] in tiles["MultiSelect-Net"].caption
    assert f"disagreement {row['disagreement']:.3f}" in dialog.info.text()


def test_without_models_rows_show_teacher_and_ground_truth_with_a_hint(qtbot, plain_panel, built):
    panel = plain_panel
    qtbot.waitUntil(panel.is_complete, timeout=WAIT_MS)
    assert panel.hint_text() == NO_MODELS_HINT and "after training" in panel.hint_text()
    assert panel.generations() == [] and not panel.generation_combo.isEnabled()
    assert [c.title for c in panel.model.columns] == ["Frame", "Ground truth", "Teacher"]
    assert panel.sort_keys() == ["frame", "teacher score", "teacher IoU"]
    rows = panel.rows()
    assert len(rows) == 40
    with Project.open(built / "project") as project:
        teacher = project.default_producer()
        masks = {m.frame_id: m for m in project.masks(teacher.id)}
        gts = {f.id: read_ground_truth(project.abspath(f.gt_path)) for f in project.frames()}
        for row in rows:
            mask = masks[row["frame_id"]]
            assert row["teacher_score"] == pytest.approx(mask.score)
            assert row["teacher_iou"] == pytest.approx(
                direct_iou(project.read_mask(mask), gts[row["frame_id"]]), abs=1e-9)
            assert row["evalseg"] == {} and row["chosen"] is None and math.isnan(row["disagreement"])
    panel.sort_by("teacher IoU")
    ious = [r["teacher_iou"] for r in panel.rows()]
    assert ious == sorted(ious, reverse=True) and ious[0] > ious[-1]
    # The table paints its cells (thumbnails are made in the loader's thread).
    panel.table.viewport().repaint()
    qtbot.waitUntil(lambda: panel.loader.rendered >= 3, timeout=WAIT_MS)


def test_a_job_writing_the_store_keeps_the_scroll_position_and_the_current_row(qtbot, plain_panel):
    """A settled change of models (a job's end) re-reads the state and rebuilds the table: the researcher's
    place in it (scrolled far down, a row selected) must survive."""
    panel = plain_panel
    panel.resize(1300, 300)
    qtbot.waitUntil(panel.is_complete, timeout=WAIT_MS)
    panel.sort_by("teacher score")
    bar = panel.table.verticalScrollBar()
    assert bar.maximum() > 0
    panel.table.setCurrentIndex(panel.model.index(30, 0))
    current_frame = panel.model.frame_at(30).frame_id
    target = bar.maximum() * 2 // 3 + 7   # not on a row boundary
    bar.setValue(target)
    top_frame = panel.model.frame_at(panel.table.rowAt(0)).frame_id
    loads = []
    panel.state_loaded.connect(lambda: loads.append(True))
    panel.context.changed.emit(StoreChange(frozenset({"models"})))
    qtbot.waitUntil(lambda: bool(loads), timeout=WAIT_MS)
    assert bar.value() == target
    assert panel.model.frame_at(panel.table.rowAt(0)).frame_id == top_frame
    assert panel.model.frame_at(panel.table.currentIndex().row()).frame_id == current_frame


@pytest.fixture
def counted_panel(qtbot, built, tmp_path):
    """A panel on a copy of the project (the test writes to it), complete, and the list its
    state re-reads are counted in."""
    shutil.copytree(built, tmp_path / "copy")
    root = tmp_path / "copy" / "project"
    context, panel = open_panel(qtbot, root)
    qtbot.waitUntil(panel.is_complete, timeout=WAIT_MS)
    loads = []
    panel.state_loaded.connect(lambda: loads.append(True))
    yield root, panel, loads
    panel.shutdown()
    context.shutdown()


def test_a_write_that_changes_nothing_shown_is_not_re_read(qtbot, counted_panel):
    """An applied selection (or a decision) changes no frame, mask or model: no re-read, which
    would compete with the window just as the next job starts. New masks are re-read."""
    root, panel, loads = counted_panel
    with Project.open(root, write=True) as project:
        producer = project.default_producer()
        frames = [m.frame_id for m in project.masks(producer.id)][:5]
        project.save_selection(producer.id, "top_percent", 10.0, False, frames, 0, 0)
    assert panel.context.notice_changes().areas == {"selections"}
    panel.context.changed.emit(StoreChange(frozenset({"masks"}), live=True))   # a job still runs
    qtbot.wait(500)
    assert loads == []
    with Project.open(root, write=True) as project:   # the teacher runs again: new masks
        for _ in run_teacher(project, workers=1, replace=True):
            pass
    assert "masks" in panel.context.notice_changes().areas
    qtbot.waitUntil(lambda: bool(loads), timeout=WAIT_MS)


def test_a_hidden_panel_re_reads_when_shown(qtbot, counted_panel):
    root, panel, loads = counted_panel
    panel.hide()
    panel.context.changed.emit(StoreChange(frozenset({"videos"})))
    qtbot.wait(500)
    assert loads == []
    panel.show()
    qtbot.waitUntil(lambda: bool(loads), timeout=WAIT_MS)

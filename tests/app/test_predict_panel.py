"""The Predict panel with real widgets and tiny saved models: drop images and folders, switch
methods, read every student's EvalSeg-Net score, export, bad files, and a project without models."""

import csv
import json
import os
import shutil

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from app.context import ProjectContext  # noqa: E402
from app.panels.predict import DEFAULT_METHOD, NO_MODELS, NO_PROJECT, READY, PredictPanel  # noqa: E402
from tests.app.test_videos_panel import send_drop  # noqa: E402
from tests.tiny_models import STUDENT_CONSTANT, save_tiny_builtin, save_tiny_models  # noqa: E402
from ussl_core.export import soft_to_uint8  # noqa: E402
from ussl_core.media import read_image  # noqa: E402
from ussl_core.postprocess import grabcut_refine  # noqa: E402
from ussl_core.segment import output_stems  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.views.predict import expand_paths  # noqa: E402

WAIT = 60_000          # ms: loading TensorFlow and the models on a busy 2-core machine
UNET, LOWRES = "g1_basic_unet_tiny", "g1_lowres_tiny"


def write_image(path, width, height, seed=0):
    """A noisy picture with a bright rectangle, written losslessly (PNG) or as JPEG."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    image[height // 4: 3 * height // 4, width // 3: 2 * width // 3] = (230, 200, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict") / "models"
    save_tiny_models(folder)
    return folder


def make_context(root, models=None) -> ProjectContext:
    Project.create(root).close()
    if models is not None:
        shutil.copytree(models, root / "models", dirs_exist_ok=True)
    context = ProjectContext()
    context.open(root)
    return context


@pytest.fixture
def context(tmp_path, tiny_models):
    ctx = make_context(tmp_path / "proj", tiny_models)
    yield ctx
    ctx.shutdown()


def open_panel(qtbot, context) -> PredictPanel:
    panel = PredictPanel(context)
    qtbot.addWidget(panel)
    panel.resize(1000, 720)
    panel.show()
    return panel


@pytest.fixture
def panel(qtbot, context):
    widget = open_panel(qtbot, context)
    qtbot.waitUntil(lambda: widget.models_state == READY, timeout=WAIT)
    return widget


def settle(qtbot, panel) -> None:
    qtbot.waitUntil(panel.is_idle, timeout=WAIT)


# ----------------------------------------------------------------------------- pure helpers


def test_expand_paths_and_output_stems(tmp_path):
    folder = tmp_path / "shots"
    for name in ("img10.png", "img2.png", "img1.jpg"):
        write_image(folder / name, 8, 6)
    (folder / "notes.txt").write_text("x")
    single = write_image(tmp_path / "one.png", 8, 6)
    images, problems = expand_paths([folder, single, tmp_path / "missing.png", folder / "notes.txt",
                                     tmp_path / "empty"])
    assert [p.name for p in images] == ["img1.jpg", "img2.png", "img10.png", "one.png"]
    assert set(problems) == {tmp_path / "missing.png", folder / "notes.txt", tmp_path / "empty"}
    assert "does not exist" in problems[tmp_path / "missing.png"]
    assert "notes.txt: not an image file" in problems[folder / "notes.txt"]
    stems = output_stems([tmp_path / "a.png", tmp_path / "x" / "a.jpg", tmp_path / "b.png",
                          tmp_path / "y" / "a.png"])
    assert list(stems.values()) == ["a", "a_2", "b", "a_3"]


# ----------------------------------------------------------------------------- the panel


def test_drop_segment_switch_methods_scores_and_keys(qtbot, panel, tmp_path):
    assert panel.method == DEFAULT_METHOD
    assert panel.method_names() == ["multi", "mean", "multiselect", UNET, LOWRES]
    panel.set_method("multi")
    assert not panel.hint_label.isVisible()
    folder = tmp_path / "pictures"
    write_image(folder / "frame10.png", 64, 48, seed=1)
    write_image(folder / "frame2.png", 40, 56, seed=2)
    single = write_image(tmp_path / "single.png", 50, 40, seed=3)
    assert send_drop(panel, [folder, single]) == (True, True)
    assert [p.name for p in panel.paths] == ["frame2.png", "frame10.png", "single.png"]
    assert panel.strip.count() == 3 and panel.current_path == folder / "frame2.png"
    settle(qtbot, panel)
    assert set(panel.results) == set(panel.paths) and not panel.errors

    segmenter = panel.segmenter
    for path in panel.paths:
        image = read_image(path)
        result = panel.results[path]
        assert result.size == (image.shape[1], image.shape[0])
        masks = segmenter.student_masks([image])[0]
        expected = segmenter.evalseg_scores(image, masks)
        assert set(result.scores) == {UNET, LOWRES}
        for name in expected:
            assert result.scores[name] == pytest.approx(expected[name], abs=1e-5)
            np.testing.assert_allclose(result.student_masks[name], masks[name], atol=1e-5)

    # The shown image: the Multi-Net mask at the input's size, as Segmenter.segment makes it.
    path = panel.current_path
    image = read_image(path)
    view = panel.rendered()
    multi = segmenter.segment([image], "multi")[0].mask
    assert view.mask.shape == image.shape[:2]
    np.testing.assert_allclose(view.mask, multi, atol=1e-5)
    np.testing.assert_array_equal(panel.input_tile.image, image)
    assert panel.overlay_tile.boxes == view.boxes and panel.cutout_tile.image.shape == (56, 40, 4)

    # Every student's mask captioned with its score; MultiSelect-Net's pick is marked.
    result = panel.results[path]
    pick = max(result.scores, key=result.scores.get)
    assert list(panel.student_tiles) == [UNET, LOWRES]
    for name, tile in panel.student_tiles.items():
        assert f"{result.scores[name]:.3f}" in tile.caption and name in tile.caption
        assert tile.marked == (name == pick) and ("\u2605" in tile.caption) == (name == pick)
        np.testing.assert_array_equal(tile.image, result.student_masks[name])

    # One student: LowRes-Net outputs 0.7 everywhere.
    panel.set_method("lowres")            # by architecture
    assert panel.method == LOWRES and panel.method_combo.currentData() == LOWRES
    qtbot.waitUntil(lambda: panel.rendered() is not None, timeout=WAIT)
    lowres = panel.rendered().mask
    np.testing.assert_allclose(lowres, STUDENT_CONSTANT, atol=1e-5)
    assert np.abs(lowres - multi).max() > 0.1
    assert panel.overlay_tile.boxes == [(0, 0, 40, 56)]
    np.testing.assert_allclose(panel.mask_tile.image, lowres)

    panel.set_method("multiselect")
    qtbot.waitUntil(lambda: panel.rendered() is not None, timeout=WAIT)
    np.testing.assert_allclose(panel.rendered().mask,
                               segmenter.segment([image], "multiselect")[0].mask, atol=1e-5)
    assert f"picked {pick}" in panel.info_label.text()
    with pytest.raises(ValueError):
        panel.set_method("no_such_student")

    # Left / Right move in the film strip, from the panel or the strip itself.
    qtbot.keyClick(panel, Qt.Key_Right)
    assert panel.current_path == folder / "frame10.png"
    qtbot.waitUntil(lambda: panel.rendered() is not None, timeout=WAIT)
    assert panel.input_tile.image.shape == (48, 64, 3)
    qtbot.keyClick(panel.strip, Qt.Key_Right)
    assert panel.current_path == single
    qtbot.keyClick(panel, Qt.Key_Right)        # stays at the end
    assert panel.current_path == single
    qtbot.keyClick(panel, Qt.Key_Left)
    assert panel.current_path == folder / "frame10.png"
    # Dropping the same images again adds nothing.
    assert panel.add_paths([folder]) == [] and len(panel.paths) == 3
    settle(qtbot, panel)


def test_export_masks_boxes_and_cutouts(qtbot, panel, tmp_path):
    first = write_image(tmp_path / "in" / "a.png", 64, 48, seed=4)
    second = write_image(tmp_path / "in" / "more" / "a.jpg", 50, 40, seed=5)
    panel.add_paths([first, second])
    panel.set_method(LOWRES)
    settle(qtbot, panel)
    assert panel.export_all_button.isEnabled() and panel.export_current_button.isEnabled()

    out = tmp_path / "out"
    with qtbot.waitSignal(panel.exported, timeout=WAIT) as done:
        assert panel.export(out, "all") is not None
    written = {p.name for p in done.args[0]}
    assert written == {"a.png", "a.cutout.png", "a_2.png", "a_2.cutout.png", "boxes.json", "boxes.csv"}
    assert written == {p.name for p in out.iterdir()}
    level = soft_to_uint8(np.float32(STUDENT_CONSTANT))
    for stem, source in (("a", first), ("a_2", second)):
        image = read_image(source)
        mask = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]   # 8-bit, input size
        assert np.all(mask == level)
        cutout = cv2.cvtColor(cv2.imread(str(out / f"{stem}.cutout.png"), cv2.IMREAD_UNCHANGED),
                              cv2.COLOR_BGRA2RGBA)
        assert cutout.shape == image.shape[:2] + (4,)
        np.testing.assert_array_equal(cutout[..., :3], image)
        assert np.all(cutout[..., 3] == 255)      # a mask of 0.7 everywhere keeps everything
    assert json.loads((out / "boxes.json").read_text()) == {"a": [[0, 0, 64, 48]], "a_2": [[0, 0, 50, 40]]}
    with (out / "boxes.csv").open() as f:
        assert list(csv.reader(f)) == [["image", "x0", "y0", "x1", "y1"],
                                       ["a", "0", "0", "64", "48"], ["a_2", "0", "0", "50", "40"]]
    assert "Exported 2 images" in panel.progress_label.text()

    # The current image only, with Multi-Net, masks and cut-outs (no boxes).
    panel.set_method("multi")
    settle(qtbot, panel)
    assert panel.current_path == first
    single = tmp_path / "single"
    with qtbot.waitSignal(panel.exported, timeout=WAIT) as done:
        panel.export(single, "current", boxes=False)
    assert sorted(p.name for p in single.iterdir()) == ["a.cutout.png", "a.png"]
    image = read_image(first)
    soft = panel.segmenter.segment([image], "multi")[0].mask
    mask = cv2.imread(str(single / "a.png"), cv2.IMREAD_UNCHANGED)
    assert np.abs(mask.astype(int) - soft_to_uint8(soft)).max() <= 1
    alpha = cv2.imread(str(single / "a.cutout.png"), cv2.IMREAD_UNCHANGED)[..., 3]
    np.testing.assert_array_equal(alpha, grabcut_refine(image, soft) * 255)

    # Nothing ticked: nothing to do, and the buttons say why.
    panel.masks_check.setChecked(False)
    panel.boxes_check.setChecked(False)
    panel.cutouts_check.setChecked(False)
    assert not panel.export_all_button.isEnabled() and "Tick" in panel.export_all_button.toolTip()
    assert panel.export(tmp_path / "none", "all") is None and not (tmp_path / "none").exists()


def test_bad_files_are_named_and_skipped(qtbot, panel, tmp_path):
    good = write_image(tmp_path / "good.png", 64, 48)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(os.urandom(2000))
    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 120, np.uint8))[1].tobytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    later = write_image(tmp_path / "later.png", 30, 20)
    assert send_drop(panel, [bad, good, notes, truncated, later]) == (True, True)
    settle(qtbot, panel)
    assert panel.paths == [good, later] and set(panel.results) == {good, later}
    assert set(panel.errors) == {bad, truncated, notes}
    assert "not a readable image" in panel.errors[bad]
    assert "truncated" in panel.errors[truncated] and "not an image file" in panel.errors[notes]
    message = panel.message_label.text()
    assert panel.message_row.isVisible()
    for path in (bad, truncated, notes):
        assert sum(path.name in line for line in message.splitlines()) == 1
    assert panel.current_path == good and panel.rendered().mask.shape == (48, 64)
    panel.dismiss_button.click()
    assert not panel.message_row.isVisible()


def test_no_models_says_so_then_loads_them(qtbot, tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("USSL_BUILTIN_DIR", str(tmp_path / "no-builtin-models"))
    empty = ProjectContext()
    try:
        idle = open_panel(qtbot, empty)
        assert idle.models_state == NO_PROJECT and "Open a project" in idle.hint_label.text()
    finally:
        empty.shutdown()

    context = make_context(tmp_path / "bare")
    try:
        panel = open_panel(qtbot, context)
        qtbot.waitUntil(lambda: panel.models_state == NO_MODELS, timeout=WAIT)
        assert panel.hint_label.isVisible()
        assert "no trained models" in panel.hint_label.text()
        assert "Training panel" in panel.hint_label.text()
        picture = write_image(tmp_path / "p.png", 32, 24)
        assert send_drop(panel, [picture]) == (True, True)
        assert panel.paths == [picture] and not panel.results and panel.is_idle()
        assert not panel.export_current_button.isEnabled()
        assert "no models" in panel.export_current_button.toolTip()
        assert not panel.method_combo.isEnabled()

        # Models arrive (a training job wrote them): the panel reloads and segments.
        shutil.copytree(tiny_models, context.root / "models", dirs_exist_ok=True)
        context.refresh()
        qtbot.waitUntil(lambda: panel.models_state == READY, timeout=WAIT)
        assert not panel.hint_label.isVisible()
        settle(qtbot, panel)
        assert panel.rendered(picture).mask.shape == (24, 32)
        loaded = panel.segmenter
        context.refresh()     # nothing changed on disk: the same models stay loaded
        settle(qtbot, panel)
        assert panel.segmenter is loaded and picture in panel.results
    finally:
        context.shutdown()


def test_without_a_project_or_its_models_the_builtin_models_segment(qtbot, tmp_path, monkeypatch):
    """A freshly installed app: no project, an image dropped, a mask, boxes and a cut-out from the
    models shipped with ussl (tiny stand-ins here; the real ones are tested in test_builtin)."""
    monkeypatch.setenv("USSL_BUILTIN_DIR", str(save_tiny_builtin(tmp_path / "builtin")))
    fresh = ProjectContext()
    try:
        panel = open_panel(qtbot, fresh)
        picture = write_image(tmp_path / "photo.png", 64, 48)
        assert send_drop(panel, [picture]) == (True, True)
        qtbot.waitUntil(lambda: panel.models_state == READY, timeout=WAIT)
        assert panel.models_source == "builtin"
        assert "No project is open" in panel.hint_label.text() and "shipped with ussl" in panel.hint_label.text()
        panel.set_method("g2_lowres_tiny")      # a constant 0.7: foreground everywhere
        settle(qtbot, panel)
        view = panel.rendered(picture)
        assert view.mask.shape == (48, 64) and view.mask.min() > 0.5
        assert view.boxes == [(0, 0, 64, 48)] and view.cutout is not None
    finally:
        fresh.shutdown()
    bare = make_context(tmp_path / "bare")      # a project without trained models: the same
    try:
        panel = open_panel(qtbot, bare)
        qtbot.waitUntil(lambda: panel.models_state == READY, timeout=WAIT)
        assert panel.models_source == "builtin"
        assert "This project has no trained models yet" in panel.hint_label.text()
    finally:
        bare.shutdown()


def test_choosing_a_far_image_in_the_strip_shows_its_views(qtbot, panel, tmp_path):
    """Views are made for the shown image and its neighbours; one further away is made when
    it is chosen (it used to wait for some other event)."""
    paths = [write_image(tmp_path / f"im{i}.png", 48, 40, seed=i) for i in range(5)]
    panel.add_paths(paths)
    settle(qtbot, panel)
    assert panel.rendered(paths[4]) is None          # not a neighbour of the first image
    panel.strip.setCurrentRow(4)
    qtbot.waitUntil(lambda: panel.rendered() is not None, timeout=WAIT)
    assert panel.current_path == paths[4] and panel.input_tile.image is not None

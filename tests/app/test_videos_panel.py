"""The Videos panel with real widgets: drop a DAVIS root, run the teacher, view and scrub masks,
cancel; and its two reusable widgets (MaskView, SettingsForm)."""

import os
from dataclasses import asdict, dataclass

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage  # noqa: E402
from PySide6.QtWidgets import (QApplication, QCheckBox, QDoubleSpinBox, QLineEdit,  # noqa: E402
                               QSpinBox)

from app.context import ProjectContext  # noqa: E402
from app.panels.videos import VideosPanel  # noqa: E402
from app.widgets.mask_view import MaskView  # noqa: E402
from app.widgets.settings_form import SettingsForm  # noqa: E402
from tests.conftest import make_davis  # noqa: E402
from ussl_core.ingest import add_sources, davis_sources  # noqa: E402
from ussl_core.sample import SampleSpec  # noqa: E402
from ussl_core.steps import AddStep  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher import VideoPCASettings  # noqa: E402

JOB_TIMEOUT = 120_000   # ms; a child process starts, on a busy 2-core machine
TEACHER, GT = 4, 5      # table columns


def pixels(image: QImage) -> np.ndarray:
    """A QImage as an H x W x 3 uint8 array (copied)."""
    image = image.convertToFormat(QImage.Format_RGB888)
    data = np.frombuffer(image.constBits(), np.uint8, image.bytesPerLine() * image.height())
    return data.reshape(image.height(), image.bytesPerLine())[:, : image.width() * 3] \
        .reshape(image.height(), image.width(), 3).copy()


def send_drop(widget, paths) -> tuple[bool, bool]:
    """Drag local files onto `widget` and drop them: (enter accepted, drop accepted)."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    enter = QDragEnterEvent(pos.toPoint(), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False, False
    drop = QDropEvent(pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(widget, drop)
    return True, drop.isAccepted()


def column(panel, col) -> list[str]:
    model = panel.model
    return [model.data(model.index(r, col)) for r in range(model.rowCount())]


@pytest.fixture
def context(tmp_path):
    Project.create(tmp_path / "proj").close()
    ctx = ProjectContext()
    ctx.open(tmp_path / "proj")
    yield ctx
    ctx.shutdown()


@pytest.fixture
def panel(qtbot, context):
    widget = VideosPanel(context)
    qtbot.addWidget(widget)
    widget.resize(1100, 640)
    widget.show()
    return widget


# ----------------------------------------------------------------------------- the panel


def test_drop_add_run_teacher_view_and_scrub(qtbot, context, panel, sample_davis):
    assert panel.add_videos_button.isEnabled() and panel.run_button.isEnabled()
    with qtbot.waitSignal(context.job_finished, timeout=JOB_TIMEOUT) as finished:
        assert send_drop(panel, [sample_davis]) == (True, True)
        # While the job runs, writing actions are off and the panel says why.
        assert context.busy
        for button in (panel.add_videos_button, panel.add_folder_button, panel.run_button):
            assert not button.isEnabled() and "job is running" in button.toolTip()
        assert panel.busy_label.text()
        assert send_drop(panel, [sample_davis]) == (False, False)
    assert finished.args == ["add", "done"]
    qtbot.waitUntil(lambda: panel.model.rowCount() == 2, timeout=10_000)
    assert column(panel, 0) == ["sample-00", "sample-01"]
    assert column(panel, 1) == ["20", "20"] and column(panel, 3) == ["96\u00d772", "96\u00d772"]
    assert column(panel, TEACHER) == ["\u2014", "\u2014"] and column(panel, GT) == ["yes", "yes"]
    assert panel.add_videos_button.isEnabled() and not panel.busy_label.text()

    # Before the teacher ran there is no frames shard: the viewer decodes the source.
    qtbot.waitUntil(panel.view.has_frame, timeout=10_000)
    assert panel.view.frame.shape == (72, 96, 3) and not panel.view.has_mask()
    assert panel.producer_combo.currentData() is None

    panel.workers_spin.setValue(1)
    with qtbot.waitSignal(context.job_finished, timeout=JOB_TIMEOUT) as finished:
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)
        assert not panel.run_button.isEnabled() and panel.progress_row.isVisible()
    assert finished.args == ["teacher", "done"]
    assert not panel.progress_row.isVisible() and "done" in panel.status_label.text()
    qtbot.waitUntil(lambda: column(panel, TEACHER) == ["done", "done"], timeout=10_000)
    assert panel.producer_combo.currentData() == "videopca@g1"
    qtbot.waitUntil(panel.view.has_mask, timeout=10_000)
    assert panel.view.has_ground_truth()
    assert "score" in panel.frame_label.text()

    # Scrubbing shows other frames (and their masks).
    first = panel.view.frame.copy()
    first_mask = panel.view.mask.copy()
    panel.slider.setValue(12)
    qtbot.waitUntil(lambda: panel.frame_label.text().startswith("13 / 20")
                    and not np.array_equal(panel.view.frame, first), timeout=10_000)
    qtbot.waitUntil(lambda: panel.view.has_mask() and not np.array_equal(panel.view.mask, first_mask),
                    timeout=10_000)

    # Opacity and side by side change what is drawn.
    before = pixels(panel.view.grab().toImage())
    panel.opacity_slider.setValue(100)
    assert panel.view.opacity == 1.0
    assert not np.array_equal(before, pixels(panel.view.grab().toImage()))
    panel.side_check.setChecked(True)
    assert panel.view.mode == "side_by_side" and len(panel.view.panel_rects()) == 3
    side = pixels(panel.view.grab().toImage())
    assert side.shape == before.shape and not np.array_equal(before, side)

    # Selecting the other video shows its frames.
    panel.table.selectRow(1)
    qtbot.waitUntil(lambda: panel.viewer.detail is not None
                    and panel.viewer.detail.video.name == "sample-01"
                    and panel.view.has_mask(), timeout=10_000)

    # Play advances frames by itself.
    start = panel.slider.value()
    panel.play_button.click()
    qtbot.waitUntil(lambda: panel.slider.value() != start, timeout=5_000)
    panel.play_button.click()
    assert not panel.viewer.player.isActive()


def test_cancel_a_running_teacher(qtbot, context, panel, tmp_path):
    root = make_davis(tmp_path / "davis", n_videos=3, spec=SampleSpec(n_frames=30, width=96, height=72))
    with Project.open(context.root, write=True) as project:
        list(add_sources(project, davis_sources(root)))
    context.refresh()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 3, timeout=10_000)
    panel.workers_spin.setValue(1)
    with qtbot.waitSignal(context.job_progress, timeout=JOB_TIMEOUT):
        qtbot.mouseClick(panel.run_button, Qt.LeftButton)
    assert panel.cancel_button.isVisible() and panel.cancel_button.isEnabled()
    with qtbot.waitSignal(context.job_finished, timeout=JOB_TIMEOUT) as finished:
        qtbot.mouseClick(panel.cancel_button, Qt.LeftButton)
        assert not panel.cancel_button.isEnabled()
    assert finished.args == ["teacher", "cancelled"]
    assert not panel.progress_row.isVisible() and "cancelled" in panel.status_label.text()
    assert panel.run_button.isEnabled() and panel.add_folder_button.isEnabled()


def test_added_paths_become_add_jobs(qtbot, context, panel, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(context, "run_job", lambda spec: started.append(spec) or object())
    davis = make_davis(tmp_path / "davis", n_videos=1, spec=SampleSpec(n_frames=6, width=32, height=24))
    frames = tmp_path / "frames"
    frames.mkdir()
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    image = tmp_path / "still.png"
    image.write_bytes(b"")
    panel.images_check.setChecked(True)
    specs = panel.add_paths([davis, frames, video, image])
    assert specs == [AddStep((str(davis),), davis=True), AddStep((str(frames),), images=True),
                     AddStep((str(video),))]
    assert started == specs[:1] and panel._queue == specs[1:]   # one job at a time
    assert "still.png" in panel.status_label.text()


# ----------------------------------------------------------------------------- widgets


def test_mask_view_colours_only_where_the_mask_is(qtbot):
    view = MaskView()
    qtbot.addWidget(view)
    view.resize(204, 104)
    frame = np.full((50, 100, 3), 100, np.uint8)
    mask = np.zeros((10, 20), np.float32)   # another size: stretched over the frame
    mask[:, :10] = 1.0
    view.set_frame(frame)
    view.set_mask(mask)
    view.set_opacity(0.8)
    image = pixels(view.grab().toImage())
    left, right = image[52, 50].astype(int), image[52, 150].astype(int)
    assert left[0] > left[1] + 100 and left[0] > 180           # red where the mask is 1
    assert np.all(np.abs(right - 100) <= 2)                     # the frame where it is 0
    view.set_opacity(0.0)
    assert np.all(np.abs(pixels(view.grab().toImage())[52, 50].astype(int) - 100) <= 2)


def test_mask_view_outline_and_side_by_side(qtbot):
    view = MaskView()
    qtbot.addWidget(view)
    view.resize(300, 100)
    view.set_frame(np.full((40, 40, 3), 90, np.uint8))
    view.set_mask(np.ones((40, 40), np.float32))
    plain = pixels(view.grab().toImage())
    gt = np.zeros((80, 80), bool)
    gt[20:60, 20:60] = True
    view.set_ground_truth(gt)
    outlined = pixels(view.grab().toImage())
    cyan = (outlined[..., 2].astype(int) > 200) & (outlined[..., 0].astype(int) < 150)
    assert cyan.any() and not ((plain[..., 2] > 200) & (plain[..., 0] < 150)).any()
    view.set_mode("side_by_side")
    rects = view.panel_rects()
    assert [kind for kind, _ in rects] == ["frame", "mask", "overlay"]
    assert all(abs(r.width() - r.height()) < 1 for _, r in rects)   # aspect ratio kept
    with pytest.raises(ValueError):
        view.set_mode("tiles")
    view.set_mask(None)
    view.set_frame(None)
    assert not view.has_frame() and view.panel_rects() == []


def test_settings_form_round_trip(qtbot):
    form = SettingsForm(VideoPCASettings, columns=2)
    qtbot.addWidget(form)
    assert isinstance(form.editor("n_components"), QSpinBox)
    assert isinstance(form.editor("blur_sigma"), QDoubleSpinBox)
    assert form.editor("blur_sigma").decimals() == 4
    assert isinstance(form.editor("normalise_histograms"), QCheckBox)
    # Untouched, the exact defaults come back (1/3 is shown as 0.3333 but not changed).
    assert form.values() == asdict(VideoPCASettings())
    form.set_values({"n_components": 5, "blur_sigma": 2.5, "normalise_histograms": False})
    values = form.values()
    assert (values["n_components"], values["blur_sigma"], values["normalise_histograms"]) == (5, 2.5, False)
    assert VideoPCASettings(**values).n_components == 5
    form.editor("centre_sigma_ratio").setValue(0.25)
    assert form.values()["centre_sigma_ratio"] == 0.25
    again = SettingsForm(VideoPCASettings)
    qtbot.addWidget(again)
    again.set_values(form.values())
    assert again.values() == form.values()
    form.reset()
    assert form.values() == asdict(VideoPCASettings())
    with pytest.raises(ValueError):
        form.set_values({"no_such_field": 1})


def test_settings_form_text_and_other_fields(qtbot):
    @dataclass(frozen=True)
    class Other:
        name: str = "basic"
        archs: tuple = ("lowres", "dense_unet")

    form = SettingsForm(Other)
    qtbot.addWidget(form)
    assert isinstance(form.editor("name"), QLineEdit)
    assert form.values() == {"name": "basic", "archs": ("lowres", "dense_unet")}
    form.set_values({"name": "x", "archs": ("lowres",)})
    assert Other(**form.values()) == Other("x", ("lowres",))


def test_settings_form_optional_fields_say_not_set_and_give_none(qtbot):
    from ussl_core.generations import GenerationSettings

    form = SettingsForm(GenerationSettings)
    qtbot.addWidget(form)
    threshold = form.editor("threshold")
    assert isinstance(threshold, QLineEdit) and threshold.placeholderText() == "not set"
    assert form.values()["threshold"] is None and form.values()["top_percent"] is None
    form.set_values({"top_percent": 12.5})
    assert GenerationSettings(**form.values()).top_percent == 12.5
    assert form.editor("batch").value() == 32   # a field with a default shows it


def test_teacher_on_a_local_dask_cluster_shows_its_dashboard(qtbot, context, panel, sample_davis):
    with Project.open(context.root, write=True) as project:
        list(add_sources(project, davis_sources(sample_davis)))
    panel.request_state()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 2, timeout=10_000)
    panel.cluster_edit.setText("nowhere")   # refused in the status line, nothing started
    assert not panel.workers_spin.isEnabled()
    assert panel.run_teacher() is None and not context.busy
    assert "not a scheduler address" in panel.status_label.text()

    panel.cluster_edit.setText("local:2")
    with qtbot.waitSignal(context.job_finished, timeout=JOB_TIMEOUT) as finished:
        step = panel.run_teacher()
        assert step is not None and step.cluster == "local:2"
        qtbot.waitUntil(panel.dashboard_label.isVisible, timeout=JOB_TIMEOUT)
        assert 'href="http://127.0.0.1:' in panel.dashboard_label.text()
    assert finished.args == ["teacher", "done"]
    assert not panel.dashboard_label.isVisible()
    qtbot.waitUntil(lambda: column(panel, TEACHER) == ["done", "done"], timeout=10_000)
    panel.cluster_edit.clear()
    assert panel.workers_spin.isEnabled()

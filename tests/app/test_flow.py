"""The whole flow through the real window on a generated sample, as a researcher would go:
create a project, drop a video on the window, run the teacher, audit with the keyboard (approve,
reject, undo), move the cut-off and apply it, train one compact student for one epoch from the
Training panel, drop an image and get its mask, export it, and cancel a running job."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QFileDialog, QMessageBox  # noqa: E402

from app.window import MainWindow  # noqa: E402
from tests.app.test_videos_panel import send_drop  # noqa: E402
from ussl_core.sample import SampleSpec, generate_video  # noqa: E402
from ussl_core.store import Project  # noqa: E402

JOB_MS = 180_000


def write_video(path, spec: SampleSpec) -> np.ndarray:
    frames, _ = generate_video(spec)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                             (spec.width, spec.height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return frames


def test_the_whole_flow(qtbot, tmp_path, monkeypatch):
    spec = SampleSpec(n_frames=30, width=160, height=120)
    frames = write_video(tmp_path / "clip.avi", spec)
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    panels = {panel.title: panel for panel in window.panels}
    context = window.context

    # Create a project from the File menu (the dialog answered).
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "proj"), ""))
    window.new_project_dialog()
    assert window.windowTitle() == "proj — ussl"

    # Drop the video on the window: it is added in a job.
    with qtbot.waitSignal(context.job_finished, timeout=JOB_MS) as finished:
        assert send_drop(window, [tmp_path / "clip.avi"]) == (True, True)
    assert finished.args == ["add", "done"]
    assert window.tabs.currentWidget() is panels["Videos"]
    assert [v.name for v in context.project.videos()] == ["clip"]

    # Run the teacher in the worker.
    with qtbot.waitSignal(context.job_finished, timeout=JOB_MS) as finished:
        panels["Videos"].run_button.click()
    assert finished.args == ["teacher", "done"]
    producer = context.project.producer("videopca@g1")
    assert len(context.project.masks(producer.id)) == 30

    # Audit with the keyboard: approve the first, reject the second, undo the reject.
    audit = panels["Audit"]
    window.tabs.setCurrentWidget(audit)
    qtbot.waitUntil(lambda: audit.model.rowCount() == 30 and audit.curve is not None, timeout=30_000)
    audit.grid.setFocus()
    audit.grid.setCurrentIndex(audit.model.index(0))
    qtbot.keyClick(audit.grid, Qt.Key_A)
    qtbot.keyClick(audit.grid, Qt.Key_Right)
    qtbot.keyClick(audit.grid, Qt.Key_R)
    with Project.open(context.root) as project:
        decisions = sorted(d["decision"] for d in project.decisions(producer.id).values())
    assert decisions == ["approve", "reject"]
    qtbot.keyClick(audit.grid, Qt.Key_Z, Qt.ControlModifier)
    with Project.open(context.root) as project:
        decisions = {d["decision"] for d in project.decisions(producer.id).values()}
    assert "reject" not in decisions and "approve" in decisions

    # Move the cut-off and apply the selection.
    audit.percent_spin.setValue(50.0)
    with qtbot.waitSignal(audit.selection_applied, timeout=30_000):
        audit.apply_button.click()
    selection = context.project.active_selection()
    assert selection["value"] == 50.0 and selection["n_selected"] == 15

    # Train one compact student for one epoch from the Training panel.
    training = panels["Training"]
    window.tabs.setCurrentWidget(training)
    training.set_selected_models(["basic_unet"])
    training.settings_form.set_values({"epochs": 1, "batch_size": 4})
    with qtbot.waitSignal(context.job_finished, timeout=JOB_MS) as finished:
        training.train_button.click()
    assert finished.args == ["train", "done"]
    assert (context.root / "models" / "g1_basic_unet_compact.keras").exists()
    assert training.history.rowCount() == 1

    # Drop an image on the window: the Predict panel segments it; export its mask.
    predict = panels["Predict"]
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), cv2.cvtColor(frames[5], cv2.COLOR_RGB2BGR))
    assert predict.segmenter is None      # models load when the panel is needed, not before
    with qtbot.waitSignal(predict.image_done, timeout=60_000):
        assert send_drop(window, [image]) == (True, True)
    assert predict.models_state == "ready"
    assert window.tabs.currentWidget() is predict
    assert image in predict.results and image not in predict.errors
    with qtbot.waitSignal(predict.exported, timeout=30_000) as exported:
        predict.export(tmp_path / "out", "current")
    mask = cv2.imread(str(tmp_path / "out" / "frame.png"), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.shape == (120, 160)
    assert (tmp_path / "out" / "frame.png") in exported.args[0]

    # Cancel a running job from the status bar (training BasicU-Net again: the panel asks first).
    window.tabs.setCurrentWidget(training)
    training.settings_form.set_values({"epochs": 50})
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *args, **kwargs: asked.append(args[2]) or QMessageBox.Yes)
    started = []
    context.job_progress.connect(lambda e: started.append(e) if e.metrics.get("event") == "batch" else None)
    with qtbot.waitSignal(context.job_finished, timeout=JOB_MS) as finished:
        training.train_button.click()
        qtbot.waitUntil(lambda: bool(started), timeout=JOB_MS)
        window.cancel_button.click()
    assert finished.args == ["train", "cancelled"]
    assert len(asked) == 1 and "g1_basic_unet_compact is already trained" in asked[0]
    assert (context.root / "models" / "g1_basic_unet_compact.keras").exists()   # kept: cancelled
    assert context.job is None and training.train_button.isEnabled()
    window.close()

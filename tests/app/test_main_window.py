import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.window import MainWindow  # noqa: E402
from ussl_core.store import Project  # noqa: E402


def test_start_page_then_open_project(qtbot, tmp_path):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    assert window.windowTitle() == "ussl"
    Project.create(tmp_path / "proj").close()
    assert window.open_project(tmp_path / "proj")
    assert window.windowTitle() == "proj — ussl"
    window.close_project()
    assert window.windowTitle() == "ussl"


def test_opening_a_non_project_warns_and_keeps_state(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    window = MainWindow()
    qtbot.addWidget(window)
    assert not window.open_project(tmp_path)
    assert shown and str(tmp_path) in shown[0]
    assert window.project is None
    window.close()


def test_every_panel_is_a_tab_with_a_shortcut(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles == ["Videos", "Audit", "Training", "Generations", "Predict", "Per-image"]
    view = next(m for m in window.menuBar().findChildren(type(window.recent_menu)) if m.title() == "&View")
    view.actions()[3].trigger()
    assert window.tabs.currentIndex() == 3
    window.close()


def test_panel_and_geometry_are_restored(qtbot, tmp_path):
    Project.create(tmp_path / "proj").close()
    window = MainWindow()
    qtbot.addWidget(window)
    window.open_project(tmp_path / "proj")
    window.tabs.setCurrentIndex(2)
    window.resize(711, 477)      # within the offscreen screen (800 x 600)
    window.close()
    again = MainWindow()
    qtbot.addWidget(again)
    assert again.tabs.currentIndex() == 2 and again.size().width() == 711
    assert again.recent_menu.actions()[0].text() == str(tmp_path / "proj")
    again.close()


def test_status_bar_shows_the_job_with_eta_and_cancel(qtbot):
    from ussl_core.progress import Progress

    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.context.job_started.emit("teacher")
    assert window.cancel_action.isEnabled() and window.cancel_button.isVisible()
    window.context.job_progress.emit(Progress(10, 100, "bear shot 0", stage="teacher"))
    qtbot.wait(50)
    window.context.job_progress.emit(Progress(20, 100, "bear shot 1", stage="teacher"))
    assert window.job_label.text() == "teacher: bear shot 1"
    assert window.job_progress.value() == 20 and window.job_eta.text().startswith("ETA 0:0")
    window.context.job_finished.emit("teacher", "cancelled")
    assert not window.cancel_action.isEnabled() and window.job_eta.text() == ""
    assert window.job_label.text() == "teacher: cancelled"
    window.close()


def test_the_sample_project_is_made_on_first_use_then_opened(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    root = window.sample_project_root()
    assert not root.exists()
    with qtbot.waitSignal(window.context.project_changed, timeout=120_000):
        window.sample_button.click()
        assert not window.sample_button.isEnabled() and "Making" in window.start_message.text()
    assert window.context.root == root and window.windowTitle() == "project — ussl"
    project = window.context.project
    assert len(project.videos()) == 4 and project.active_selection()["n_selected"] > 0
    window.close_project()
    with qtbot.waitSignal(window.context.project_changed, timeout=5_000):
        window.open_sample_project()          # already made: opened at once, no job
    assert window.context.job is None and window.context.root == root
    window.close()


def test_a_fresh_app_segments_dropped_images_with_the_shipped_models(qtbot, tmp_path, monkeypatch):
    """No project: the start page invites images; a drop shows the Predict panel alone, the
    shipped models (tiny stand-ins here) segment them; closing returns to the start page."""
    import numpy as np
    from PySide6.QtGui import QImage

    from tests.app.test_videos_panel import send_drop
    from tests.tiny_models import save_tiny_builtin

    monkeypatch.setenv("USSL_BUILTIN_DIR", str(save_tiny_builtin(tmp_path / "builtin")))
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    assert window._stack.currentIndex() == 0 and window.segment_button.isVisible()
    image = tmp_path / "photo.png"
    QImage(64, 48, QImage.Format_RGB888).save(str(image))
    (tmp_path / "notes.txt").write_text("x")
    assert send_drop(window, [tmp_path / "notes.txt"]) == (False, False)   # only images without a project
    assert send_drop(window, [image]) == (True, True)
    predict = window.tabs.currentWidget()
    assert window._stack.currentIndex() == 1 and predict.title == "Predict"
    enabled = [window.tabs.isTabEnabled(i) for i in range(window.tabs.count())]
    assert enabled == [t == "Predict" for t in (window.tabs.tabText(i) for i in range(window.tabs.count()))]
    qtbot.waitUntil(lambda: predict.rendered(image) is not None, timeout=120_000)
    assert predict.models_source == "builtin" and predict.rendered(image).mask.shape == (48, 64)
    assert np.isfinite(predict.rendered(image).mask).all()
    window.close_project()
    assert window._stack.currentIndex() == 0
    window.close()


def test_check_project_reports_and_repairs(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from tests.conftest import make_davis
    from ussl_core.ingest import add_sources, davis_sources
    from ussl_core.sample import SampleSpec
    from ussl_core.store.integrity import Problem, check_project
    from ussl_core.teacher.runner import run_teacher

    root = tmp_path / "p"
    davis = make_davis(tmp_path / "davis", n_videos=1, spec=SampleSpec(n_frames=6, width=32, height=24))
    with Project.create(root) as project:
        list(add_sources(project, davis_sources(davis)))
        list(run_teacher(project, workers=1))
        shard = project.abspath(project.shots()[0].frames_shard)
    shard.write_bytes(b"")
    reports = []

    def answer(box):   # instead of waiting for a person: read the report, press Repair
        reports.append(box.text())
        next(b for b in box.buttons() if b.text() == "Repair").click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", answer)
    window = MainWindow()
    qtbot.addWidget(window)
    assert window.open_project(root)
    with qtbot.waitSignal(window.context.job_finished, timeout=120_000) as finished:
        window.check_project()
    assert finished.args == ["repair", "done"]
    assert "1 problem(s) found" in reports[0] and "frame shard" in reports[0]
    with Project.open(root) as project:
        assert [p for p in check_project(project) if isinstance(p, Problem)] == []
    assert (root / "quarantine" / shard.relative_to(root)).exists()

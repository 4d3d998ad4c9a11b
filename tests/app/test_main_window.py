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

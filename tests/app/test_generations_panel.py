"""The Generations panel on a generated project: where Algorithm 1 stands, and the next
generation started from the panel (with new unlabeled data) in a real job."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtWidgets import QLabel  # noqa: E402

from app.context import ProjectContext  # noqa: E402
from app.panels.generations import GenerationsPanel  # noqa: E402
from tests.conftest import make_davis  # noqa: E402
from tests.tiny_models import save_tiny_models  # noqa: E402
from ussl_core.ingest import add_sources, davis_sources  # noqa: E402
from ussl_core.selection import SelectionSettings, select  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher.runner import producer_name, run_teacher  # noqa: E402

JOB_TIMEOUT = 180_000


def make_project(root, teacher: bool = True, selected: bool = True, models: bool = True):
    davis = make_davis(root / "davis", n_videos=2)
    with Project.create(root / "project") as project:
        for _ in add_sources(project, davis_sources(davis)):
            pass
        if teacher:
            for _ in run_teacher(project, "videopca", workers=1):
                pass
        if selected:
            select(project, project.producer(producer_name("videopca")).id,
                   SelectionSettings(top_percent=50))
    if models:
        save_tiny_models(root / "project" / "models")
    return root / "project"


@pytest.fixture
def open_panel(qtbot):
    contexts = []

    def make(root):
        context = ProjectContext()
        context.open(root)
        contexts.append(context)
        panel = GenerationsPanel(context)
        qtbot.addWidget(panel)
        panel.resize(1100, 700)
        panel.show()
        return context, panel

    yield make
    for context in contexts:
        context.shutdown()


def cells(panel, row):
    return [panel.table.item(row, c).text() for c in range(panel.table.columnCount())]


def test_next_steps_follow_the_project(open_panel, tmp_path):
    context, panel = open_panel(make_project(tmp_path / "a", teacher=False, selected=False, models=False))
    assert cells(panel, 0)[-1].startswith("add videos and run the teacher")
    assert not panel.evalseg_button.isEnabled() and not panel.next_button.isEnabled()
    context2, panel2 = open_panel(make_project(tmp_path / "b", selected=False, models=False))
    assert cells(panel2, 0)[1] == "videopca@g1"
    assert cells(panel2, 0)[-1].startswith("choose the cut-off")
    context3, panel3 = open_panel(make_project(tmp_path / "c", models=False))
    assert cells(panel3, 0)[-1].startswith("train the students")
    assert "Training panel" in panel3.evalseg_button.toolTip()


def test_start_the_next_generation_with_new_data(qtbot, open_panel, tmp_path):
    root = make_project(tmp_path)
    context, panel = open_panel(root)
    row = cells(panel, 0)
    assert row[:2] == ["1", "videopca@g1"]
    assert row[3] == "g1_basic_unet_tiny, g1_lowres_tiny" and row[4] == "g1_evalseg_tiny"
    assert row[5] == "Mean-Net, Multi-Net, MultiSelect-Net" and row[6] == "start generation 2"
    with Project.open(root) as project:
        assert row[2] == f"{project.active_selection()['n_selected']} pairs"
        videos_before = len(project.videos())
    assert panel.next_button.isEnabled()

    extra = make_davis(tmp_path / "extra", n_videos=1)
    panel.add_sources([extra])
    panel.add_sources([extra])                       # listed once
    panel.davis_box.setChecked(True)
    assert panel.sources() == [str(extra)]
    panel.generation_form.set_values({"threshold": 0.8})
    with qtbot.waitSignal(context.job_finished, timeout=JOB_TIMEOUT) as finished:
        assert panel.start_next_generation() is not None
        assert not panel.next_button.isEnabled() and panel.cancel_button.isEnabled()
    assert finished.args == ["next_generation", "done"], panel.progress.status_label.text()
    assert panel.table.rowCount() == 2 and panel.sources() == []
    second = cells(panel, 1)
    with Project.open(root) as project:
        assert len(project.videos()) == videos_before + 1
        selection = project.active_selection()
        assert selection["generation"] == 2
    assert second[:3] == ["2", "generation 1 students", f"{selection['n_selected']} pairs"]
    assert second[3] == "none" and second[-1].startswith("train the students")
    assert cells(panel, 0)[-1] == "done"
    assert "Generation 2" in panel.headline.text()
    # Generation 2 has no students yet: nothing to score or start.
    assert not panel.next_button.isEnabled() and not panel.evalseg_button.isEnabled()


def test_the_generation_form_starts_at_the_generation_settings(open_panel, tmp_path):
    from ussl_core.generations import GenerationSettings

    _, panel = open_panel(make_project(tmp_path))
    assert GenerationSettings(**panel.generation_form.values()) == GenerationSettings()
    rule = GenerationSettings()
    said = f"best {rule.top_percent:g} % of each video's, at most {rule.max_per_video} of one video"
    assert any(said in label.text() for label in panel.findChildren(QLabel))


def test_actions_wait_while_another_job_runs(open_panel, tmp_path):
    context, panel = open_panel(make_project(tmp_path))
    assert panel.next_button.isEnabled()
    context.job = object()
    context.busy_changed.emit(True)
    assert not panel.next_button.isEnabled() and "job is running" in panel.next_button.toolTip()
    context.job = None
    context.busy_changed.emit(False)
    assert panel.next_button.isEnabled()


def test_a_fresh_project_starts_generation_2_from_the_builtin_models(open_panel, tmp_path, qtbot,
                                                                    monkeypatch):
    from tests.tiny_models import save_tiny_builtin

    monkeypatch.setenv("USSL_BUILTIN_DIR", str(save_tiny_builtin(tmp_path / "builtin")))
    context, panel = open_panel(make_project(tmp_path, teacher=False, selected=False, models=False))
    assert panel.builtin_button.isEnabled() and not panel.next_button.isEnabled()
    panel.generation_form.set_values({"threshold": None, "top_percent": 50.0})
    with qtbot.waitSignal(context.job_finished, timeout=JOB_TIMEOUT) as finished:
        assert panel.builtin_button.click() is None
    assert finished.args == ["next_generation", "done"], panel.progress.status_label.text()
    assert panel.table.rowCount() == 2
    assert cells(panel, 0)[3] == "g1_basic_unet_builtin, g1_lowres_builtin"
    assert cells(panel, 1)[1] == "generation 1 students"
    assert not panel.builtin_button.isEnabled()      # generation 1 now has models

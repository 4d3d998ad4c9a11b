"""The Training panel with real widgets and real child-process training on a generated project:
train, watch the losses, read the card; stop after an epoch and resume; busy elsewhere."""

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from app.context import ProjectContext  # noqa: E402
from app.panels.training import LossMonitor, TrainingPanel  # noqa: E402
from ussl_core.store.model_files import architecture_from_name, interrupted_runs  # noqa: E402
from tests.conftest import make_davis  # noqa: E402
from ussl_core.ingest import add_sources, davis_sources  # noqa: E402
from ussl_core.selection import SelectionSettings, select  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher.runner import producer_name, run_teacher  # noqa: E402

JOB_TIMEOUT = 180_000   # ms: a child process imports TensorFlow on a busy 2-core machine


@pytest.fixture
def project_root(tmp_path):
    """2 generated videos of 20 frames, VideoPCA masks, the top 50 % selected."""
    davis = make_davis(tmp_path / "davis", n_videos=3)
    with Project.create(tmp_path / "project") as project:
        for _ in add_sources(project, davis_sources(davis)):
            pass
        for _ in run_teacher(project, "videopca", workers=1):
            pass
        select(project, project.producer(producer_name("videopca")).id, SelectionSettings(top_percent=50))
    return tmp_path / "project"


@pytest.fixture
def context(project_root):
    ctx = ProjectContext()
    ctx.open(project_root)
    yield ctx
    ctx.shutdown()


@pytest.fixture
def panel(qtbot, context):
    widget = TrainingPanel(context)
    qtbot.addWidget(widget)
    widget.resize(1200, 760)
    widget.show()
    return widget


def test_train_one_model_live_losses_and_its_card(qtbot, context, panel, project_root):
    panel.set_selected_models(["basic_unet"])
    panel.settings_form.set_values({"epochs": 2, "batch_size": 4})
    assert panel.train_button.isEnabled() and not panel.stop_button.isEnabled()
    with qtbot.waitSignal(context.job_finished, timeout=JOB_TIMEOUT) as finished:
        panel.train_button.click()
        assert panel.stop_button.isEnabled() and not panel.train_button.isEnabled()
    assert finished.args == ["train", "done"], panel.progress.status_label.text()
    name = "g1_basic_unet_compact"
    card = json.loads((project_root / "models" / f"{name}.json").read_text())
    # The monitor saw every batch and both epochs, with the card's losses.
    series = panel.monitor.series[name]
    assert series["epoch"] == [1, 2]
    assert series["loss"] == pytest.approx([r["loss"] for r in card["history"]])
    assert len(series["batch_loss"]) == 2 * card["training_data"]["train_pairs"] // 4 + \
        2 * (card["training_data"]["train_pairs"] % 4 > 0)
    assert panel.monitor.best_epoch(name) == card["best_epoch"]
    # The history lists the run; selecting it shows its card.
    assert panel.history.rowCount() == 1 and panel.history.item(0, 0).text() == name
    panel.history.selectRow(0)
    shown = json.loads(panel.card_view.toPlainText())
    assert shown["name"] == name and shown["epochs"] == 2
    # ... and its losses in the monitor (epochs only: batches are not in the card).
    assert panel.monitor.series[name]["loss"] == pytest.approx([r["loss"] for r in card["history"]])
    assert panel.monitor.series[name]["batch_loss"] == []
    assert "Finished" in panel.progress.status_label.text()
    assert panel.train_button.isEnabled() and not panel.stop_button.isEnabled()


def test_stop_after_this_epoch_then_resume(qtbot, context, panel, project_root):
    panel.set_selected_models(["basic_unet"])
    panel.settings_form.set_values({"epochs": 3, "batch_size": 4})
    stopped = []

    def stop_on_first_batch(event):
        if event.metrics.get("event") == "batch" and not stopped:
            stopped.append(event.metrics["epoch"])
            panel.stop_button.click()

    context.job_progress.connect(stop_on_first_batch)
    with qtbot.waitSignal(context.job_finished, timeout=JOB_TIMEOUT) as finished:
        panel.train_button.click()
    context.job_progress.disconnect(stop_on_first_batch)
    assert finished.args == ["train", "cancelled"]
    assert stopped == [1]
    # The first epoch was kept as a checkpoint; no finished model yet.
    models = project_root / "models"
    assert interrupted_runs(models) == [{"name": "g1_basic_unet_compact", "epoch": 1,
                                         "architecture": "basic_unet", "preset": "compact"}]
    assert not (models / "g1_basic_unet_compact.keras").exists()
    assert "after epoch 1" in panel.interrupted_label.text()
    assert panel.resume_button.isEnabled()
    panel.set_selected_models([])   # Resume takes the interrupted run's architecture itself
    assert panel.resume_button.isEnabled() and not panel.train_button.isEnabled()
    assert panel.training_step(resume=True).archs == ("basic_unet",)
    with qtbot.waitSignal(context.job_finished, timeout=JOB_TIMEOUT) as finished:
        panel.resume_button.click()
    assert finished.args == ["train", "done"]
    card = json.loads((models / "g1_basic_unet_compact.json").read_text())
    assert [r["epoch"] for r in card["history"]] == [1, 2, 3]
    assert panel.monitor.series["g1_basic_unet_compact"]["epoch"] == [2, 3]
    assert interrupted_runs(models) == [] and panel.interrupted_label.text() == ""


def test_actions_wait_while_another_job_runs(qtbot, context, panel):
    assert panel.train_button.isEnabled()
    context.job = object()            # another panel's job holds the project
    context.busy_changed.emit(True)
    assert not panel.train_button.isEnabled() and "job is running" in panel.train_button.toolTip()
    assert not panel.stop_button.isEnabled()   # not this panel's job to stop
    context.job = None
    context.busy_changed.emit(False)
    assert panel.train_button.isEnabled()
    panel.set_selected_models([])
    assert not panel.train_button.isEnabled()


def test_bad_settings_are_refused_before_a_job_starts(qtbot, context, panel):
    # A value outside its declared range cannot be entered: the editors keep the ranges ...
    panel.settings_form.set_values({"learning_rate": 0.0, "validation_share": 1.0})
    assert 0 < panel.settings_form.values()["learning_rate"] < 1e-3
    assert panel.settings_form.values()["validation_share"] < 1
    # ... and what only the fields together make wrong is refused before a job starts.
    panel.settings_form.set_values({"crop_fraction": 0.5, "min_crop_fraction": 0.6})
    assert panel.start_training() is None and context.job is None
    assert "min_crop_fraction must be at most crop_fraction" in panel.progress.status_label.text()


def test_loss_monitor_best_epoch_and_throttled_redraws(qtbot):
    monitor = LossMonitor()
    qtbot.addWidget(monitor)
    draws = monitor.draws
    for epoch, (loss, val) in enumerate([(0.3, 0.2), (0.2, 0.1), (0.1, 0.15)], start=1):
        for batch in range(1, 51):
            monitor.add({"event": "batch", "model": "m", "epoch": epoch, "batch": batch,
                         "steps": 50, "loss": loss})
        monitor.add({"event": "epoch", "model": "m", "epoch": epoch, "loss": loss, "val_loss": val})
    assert monitor.best_epoch("m") == 2          # lowest validation loss, not training loss
    assert monitor.series["m"]["batch_x"][49] == pytest.approx(1.0)
    qtbot.wait(600)
    assert 1 <= monitor.draws - draws <= 2       # 153 updates, at most a couple of paints
    monitor.add({"event": "epoch", "model": "n", "epoch": 1, "loss": 0.5})
    assert monitor.best_epoch("n") == 1          # no validation: the training loss decides


def test_loss_monitor_blits_the_lines_until_an_axis_limit_steps(qtbot):
    """A redraw inside the same limits repaints only the lines over the saved axes; a loss
    leaving the current decade, or a new model in the legend, draws everything again."""
    monitor = LossMonitor()
    qtbot.addWidget(monitor)
    monitor.resize(600, 300)
    monitor.show()
    monitor.reset(planned_epochs=4)
    qtbot.wait(500)

    def batch(epoch, number, loss, model="m"):
        monitor.add({"event": "batch", "model": model, "epoch": epoch, "batch": number,
                     "steps": 10, "loss": loss})
        qtbot.wait(450)   # one throttled redraw per update

    batch(1, 1, 0.5)
    qtbot.waitUntil(lambda: monitor.axes.get_ylim() == pytest.approx((0.1, 1.0)), timeout=5000)
    full, blits = monitor.full_draws, monitor.blits
    assert monitor.axes.get_xlim()[1] == pytest.approx(4 * 1.03)   # the planned epochs
    for number, loss in ((2, 0.4), (3, 0.3), (4, 0.2)):
        batch(1, number, loss)
    assert monitor.full_draws == full and monitor.blits == blits + 3
    batch(1, 5, 0.05)                                   # into the next decade down
    assert monitor.axes.get_ylim() == pytest.approx((0.01, 1.0))
    assert monitor.full_draws == full + 1
    batch(1, 1, 0.3, model="other")                     # a second model: the legend grows
    assert monitor.full_draws == full + 2
    assert [t.get_text() for t in monitor.axes.get_legend().get_texts()] == ["m", "other"]


def test_architecture_from_default_names():
    assert architecture_from_name("g1_basic_unet_compact") == "basic_unet"
    assert architecture_from_name("g12_evalseg_paper") == "evalseg"
    assert architecture_from_name("my_model") is None


def test_the_form_and_predict_defaults_are_the_settings_dataclasses(qtbot, context):
    import dataclasses

    from app.panels.predict import PredictPanel
    from ussl_core.segment import SegmentSettings
    from ussl_core.training import TrainingSettings

    panel = TrainingPanel(context)
    qtbot.addWidget(panel)
    assert panel.settings_form.values() == dataclasses.asdict(TrainingSettings())
    predict = PredictPanel(context)
    qtbot.addWidget(predict)
    assert predict.method == SegmentSettings().method

"""The Audit panel with real widgets: grid, keys, undo/redo, filters, cut-off, selection, busy."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backend_bases import MouseEvent  # noqa: E402
from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt  # noqa: E402

from app.context import ProjectContext  # noqa: E402
from app.panels.audit import BUSY_MESSAGE, AuditPanel  # noqa: E402
from app.widgets.thumbnails import BadgeRole, DimRole, KeyRole, RecordRole  # noqa: E402
from tests.conftest import make_davis  # noqa: E402
from ussl_core.ingest import add_sources, davis_sources  # noqa: E402
from ussl_core.purity import n_kept, purity_curve  # noqa: E402
from ussl_core.selection import SelectionSettings  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher.runner import run_teacher  # noqa: E402

WAIT_MS = 20000


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two 20-frame sample videos with ground truth, the teacher's 40 masks (built once)."""
    base = tmp_path_factory.mktemp("audit")
    davis = make_davis(base / "davis", n_videos=2)
    project = Project.create(base / "project")
    project.set_meta("working_size", "[96, 72]")   # small: the teacher runs in a second
    for _ in add_sources(project, davis_sources(davis)):
        pass
    for _ in run_teacher(project, workers=1):
        pass
    project.close()
    return base


@pytest.fixture
def root(built, tmp_path):
    """A private copy (decisions and selections are written); sources keep their relative place."""
    shutil.copytree(built, tmp_path / "copy")
    return tmp_path / "copy" / "project"


@pytest.fixture
def context(root):
    context = ProjectContext()
    context.open(root)
    yield context
    context.shutdown()


@pytest.fixture
def panel(qtbot, context):
    panel = AuditPanel(context)
    qtbot.addWidget(panel)
    panel.resize(1100, 700)
    panel.show()
    qtbot.waitUntil(lambda: panel.model.rowCount() > 0 and panel.curve is not None, timeout=WAIT_MS)
    yield panel
    panel.shutdown()


def store_masks(root):
    with Project.open(root) as project:
        producer = project.default_producer()
        return producer.id, project.masks(producer.id)


def store_decisions(root) -> dict[int, str]:
    """frame_id -> current decision, read with a fresh read-only Project."""
    with Project.open(root) as project:
        producer = project.default_producer()
        return {f: d["decision"] for (f, _), d in project.decisions(producer.id).items()}


def select_rows(panel, *rows):
    model, selection = panel.model, QItemSelection()
    for row in rows:
        selection.select(model.index(row), model.index(row))
    panel.grid.selectionModel().setCurrentIndex(model.index(rows[0]), QItemSelectionModel.NoUpdate)
    panel.grid.selectionModel().select(selection, QItemSelectionModel.ClearAndSelect)


def record(panel, row):
    return panel.model.data(panel.model.index(row), RecordRole)


def badge(panel, row):
    return panel.model.data(panel.model.index(row), BadgeRole)


# ----------------------------------------------------------------------------- grid


def test_grid_lists_masks_best_score_first(panel, root):
    _, masks = store_masks(root)
    assert panel.model.rowCount() == len(masks) == 40
    scores = [record(panel, row).score for row in range(panel.model.rowCount())]
    assert scores == sorted((m.score for m in masks), reverse=True)
    assert {record(panel, row).frame_id for row in range(40)} == {m.frame_id for m in masks}
    assert panel.count_label.text() == "40 masks"
    assert panel.grid.uniformItemSizes() and panel.grid.layoutMode() == panel.grid.LayoutMode.Batched
    assert panel.grid.currentIndex().row() == 0


def test_thumbnails_arrive_lazily_for_visible_cells_only(qtbot, context):
    panel = AuditPanel(context)
    qtbot.addWidget(panel)
    panel.resize(620, 420)      # a few cells visible out of 40
    panel.show()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 40, timeout=WAIT_MS)
    keys = [panel.model.data(panel.model.index(r), KeyRole) for r in range(40)]
    first, last = keys[0], keys[-1]
    qtbot.waitUntil(lambda: first in panel.cache, timeout=WAIT_MS)
    qtbot.wait(200)
    assert 0 < len(panel.cache) < 40          # only what was painted was made
    assert last not in panel.cache
    panel.grid.scrollToBottom()
    qtbot.waitUntil(lambda: last in panel.cache, timeout=WAIT_MS)
    assert panel.delegate.painted > 0
    panel.shutdown()


# ----------------------------------------------------------------------------- decisions


def test_keys_decide_and_undo_redo_through_the_store(qtbot, panel, root):
    grid = panel.grid
    a, b, c = (record(panel, row).frame_id for row in range(3))

    select_rows(panel, 0)
    qtbot.keyClick(grid, Qt.Key_A)
    assert store_decisions(root) == {a: "approve"}
    assert badge(panel, 0) == "approve"
    assert grid.currentIndex().row() == 1       # moves on to the next mask

    select_rows(panel, 1, 2)
    qtbot.keyClick(grid, Qt.Key_R)
    assert store_decisions(root) == {a: "approve", b: "reject", c: "reject"}
    assert badge(panel, 1) == badge(panel, 2) == "reject"

    select_rows(panel, 0)
    qtbot.keyClick(grid, Qt.Key_U)
    assert store_decisions(root) == {b: "reject", c: "reject"}
    assert badge(panel, 0) == ""

    qtbot.keyClick(grid, Qt.Key_Z, Qt.ControlModifier)           # undo the clear
    assert store_decisions(root) == {a: "approve", b: "reject", c: "reject"}
    assert badge(panel, 0) == "approve"
    qtbot.keyClick(grid, Qt.Key_Z, Qt.ControlModifier)           # undo the two rejects
    assert store_decisions(root) == {a: "approve"}
    assert badge(panel, 1) == badge(panel, 2) == ""
    qtbot.keyClick(grid, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)   # redo them
    assert store_decisions(root) == {a: "approve", b: "reject", c: "reject"}
    assert badge(panel, 2) == "reject"

    panel.undo_button.click()
    assert store_decisions(root) == {a: "approve"}
    panel.redo_button.click()
    assert store_decisions(root) == {a: "approve", b: "reject", c: "reject"}
    assert "Redid" in panel.status_label.text()


def test_decisions_are_refused_while_busy_or_locked(qtbot, panel, context, root):
    grid = panel.grid
    select_rows(panel, 0)
    context.job = object()          # what run_job holds while a job runs
    context.busy_changed.emit(True)
    try:
        qtbot.keyClick(grid, Qt.Key_A)
        assert store_decisions(root) == {}
        assert badge(panel, 0) == ""
        assert panel.status_label.text() == BUSY_MESSAGE
        assert not panel.apply_button.isEnabled()
    finally:
        context.job = None
        context.busy_changed.emit(False)
    assert panel.apply_button.isEnabled()

    # Another process (a CLI run) holds the write lock: a message, no crash, nothing changes.
    with Project.open(root, write=True, holder="ussl teacher"):
        qtbot.keyClick(grid, Qt.Key_A)
        assert badge(panel, 0) == ""
        assert "being written" in panel.status_label.text()
    assert store_decisions(root) == {}
    qtbot.keyClick(grid, Qt.Key_A)
    assert store_decisions(root) == {record(panel, 0).frame_id: "approve"}


def test_a_job_s_writes_show_after_refresh(qtbot, panel, context, root):
    producer_id, _ = store_masks(root)
    frame = record(panel, 5).frame_id
    with Project.open(root, write=True) as project:   # e.g. `ussl decisions import` meanwhile
        project.set_decision(frame, producer_id, "reject")
    context.refresh()                                  # what the context does after a job
    qtbot.waitUntil(lambda: badge(panel, 5) == "reject", timeout=WAIT_MS)
    assert record(panel, 5).frame_id == frame


def test_a_job_that_changes_nothing_shown_costs_no_re_read(qtbot, panel, context, root):
    """After a training job (models only) the masks, decisions and curve are not read again:
    that work would compete with the window for nothing."""
    reads = []
    panel.table_loaded.connect(lambda: reads.append("table"))
    panel.curve_loaded.connect(lambda: reads.append("curve"))
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "g1_basic_unet_compact.keras").write_bytes(b"a model")
    context.refresh()
    qtbot.wait(300)
    assert reads == []
    producer_id, _ = store_masks(root)
    with Project.open(root, write=True) as project:   # then a change it shows: read again
        project.set_decision(record(panel, 2).frame_id, producer_id, "approve")
    context.refresh()
    qtbot.waitUntil(lambda: "table" in reads and badge(panel, 2) == "approve", timeout=WAIT_MS)


# ----------------------------------------------------------------------------- filters


def test_filters_reduce_the_rows(qtbot, panel, root):
    _, masks = store_masks(root)
    video = panel.video_combo.itemData(1)
    panel.video_combo.setCurrentIndex(1)
    rows = panel.model.rowCount()
    assert rows == sum(m.video_id == video for m in masks) == 20
    assert all(record(panel, r).video_id == video for r in range(rows))
    assert panel.count_label.text() == "20 of 40 masks"

    panel.video_combo.setCurrentIndex(0)
    middle = float(np.median([m.score for m in masks]))
    panel.score_min.setValue(middle)
    assert 0 < panel.model.rowCount() < 40
    assert all(record(panel, r).score >= middle - 1e-3 for r in range(panel.model.rowCount()))
    panel.score_min.setValue(panel.score_min.minimum())
    assert panel.model.rowCount() == 40

    select_rows(panel, 0, 1, 2)
    qtbot.keyClick(panel.grid, Qt.Key_R)
    panel.decision_combo.setCurrentText("Rejected")
    assert panel.model.rowCount() == 3
    panel.decision_combo.setCurrentText("Undecided")
    assert panel.model.rowCount() == 37
    panel.decision_combo.setCurrentText("Approved")
    assert panel.model.rowCount() == 0


# ----------------------------------------------------------------------------- purity and cut-off


def over_all_videos(panel) -> None:
    """The cut-off over all masks together, without a cap per video."""
    panel.per_video_check.setChecked(False)
    panel.cap_spin.setValue(0)


def test_curve_source_and_cutoff_in_sync(qtbot, panel):
    assert panel.curve.source == "ground_truth"
    assert "ground truth" in panel.source_label.text()
    # The cut-off starts at the selection defaults: the top 20 % of each video, at most 20 of one.
    assert panel.plot.line_x == pytest.approx(20.0)
    assert panel.per_video_check.isChecked() and panel.cap_spin.value() == 20
    assert panel.selection_settings() == SelectionSettings()
    over_all_videos(panel)

    panel.percent_spin.setValue(25.0)
    assert panel.plot.line_x == pytest.approx(25.0)
    assert panel.kept_by_score() == n_kept(25.0, 40) == 10
    assert "Keeps <b>10</b> of 40" in panel.kept_label.text()
    assert sum(not panel.model.data(panel.model.index(r), DimRole) for r in range(40)) == 10

    # Dragging the line with the mouse moves the spin box (and the line).
    ax = panel.plot.axes
    panel.plot.draw()
    x, y = ax.transData.transform((60.0, 0.5))
    for name in ("button_press_event", "motion_notify_event", "button_release_event"):
        panel.plot.callbacks.process(name, MouseEvent(name, panel.plot, x, y, button=1))
    assert panel.percent_spin.value() == pytest.approx(60.0, abs=0.6)
    assert panel.plot.line_x == pytest.approx(panel.percent_spin.value())
    assert panel.kept_by_score() == n_kept(panel.percent_spin.value(), 40)

    # Threshold mode: the line sits at the share of masks above the score.
    panel.mode_combo.setCurrentIndex(1)
    scores = np.array([record(panel, r).score for r in range(40)])
    threshold = float(np.round(scores[15], 3))
    panel.threshold_spin.setValue(threshold)
    kept = int(np.count_nonzero(scores > panel.threshold_spin.value()))
    assert panel.kept_by_score() == kept
    assert panel.plot.line_x == pytest.approx(100.0 * kept / 40)
    assert f"Keeps <b>{kept}</b>" in panel.kept_label.text()


def test_decisions_curve_without_ground_truth(qtbot, context, root):
    with Project.open(root, write=True) as project:
        project.conn.execute("UPDATE frames SET gt_path=NULL")
    panel = AuditPanel(context)
    qtbot.addWidget(panel)
    panel.show()
    qtbot.waitUntil(lambda: panel.curve is not None, timeout=WAIT_MS)
    assert panel.curve.source == "decisions"
    assert "0 audited" in panel.source_label.text()
    select_rows(panel, 0, 1)
    qtbot.keyClick(panel.grid, Qt.Key_A)
    # The curve follows the decisions (recomputed off the GUI thread, shortly after).
    qtbot.waitUntil(lambda: "2 audited" in panel.source_label.text(), timeout=WAIT_MS)
    with Project.open(root) as project:   # the same curve as ussl_core computes from the store
        expected = purity_curve(project, project.default_producer().id)
    assert panel.curve.source == expected.source == "decisions"
    assert panel.curve.n_audited == expected.n_audited
    assert panel.curve.approved_share == expected.approved_share
    assert panel.curve.n_kept == expected.n_kept
    panel.shutdown()


# ----------------------------------------------------------------------------- selection


def test_apply_selection_keeps_approved_and_drops_rejected(qtbot, panel, root):
    producer_id, masks = store_masks(root)
    top = record(panel, 0).frame_id
    bottom = record(panel, 39).frame_id
    select_rows(panel, 0)
    qtbot.keyClick(panel.grid, Qt.Key_R)
    select_rows(panel, 39)
    qtbot.keyClick(panel.grid, Qt.Key_A)
    over_all_videos(panel)
    panel.percent_spin.setValue(25.0)
    assert "+1 approved" in panel.kept_label.text() and "−1 rejected" in panel.kept_label.text()

    with qtbot.waitSignal(panel.selection_applied, timeout=10_000):
        panel.apply_button.click()
        assert not panel.apply_button.isEnabled()     # written in a thread, not on the GUI's
    assert panel.apply_button.isEnabled()
    with Project.open(root) as project:
        active = project.active_selection()
        members = {f for f, _ in project.selection_members(active["id"])}
    by_score = {record(panel, r).frame_id for r in range(10)}
    assert members == (by_score | {bottom}) - {top}
    assert active["n_selected"] == 10 and active["method"] == "top_percent" and active["value"] == 25.0
    assert active["n_approved_added"] == 1 and active["n_rejected_removed"] == 1
    assert "10 masks selected" in panel.status_label.text()
    assert "1 approved added" in panel.status_label.text()
    assert "1 rejected removed" in panel.status_label.text()
    assert "Active selection: 10 masks" in panel.selection_label.text()

    # Threshold mode writes a threshold selection.
    panel.mode_combo.setCurrentIndex(1)
    panel.threshold_spin.setValue(0.0)
    with qtbot.waitSignal(panel.selection_applied, timeout=10_000):
        panel.apply_button.click()
    with Project.open(root) as project:
        active = project.active_selection()
        members = {f for f, _ in project.selection_members(active["id"])}
    assert active["method"] == "threshold"
    assert top not in members and bottom in members

    # Opened again, the panel starts from the active selection's cut-off.
    other = AuditPanel(panel.context)
    qtbot.addWidget(other)
    assert other.threshold_mode and other.threshold_spin.value() == pytest.approx(0.0)
    other.shutdown()


# ----------------------------------------------------------------------------- large view


def test_space_opens_the_large_view(qtbot, panel, root):
    select_rows(panel, 3)
    qtbot.keyClick(panel.grid, Qt.Key_Space)
    dialog = panel.dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.record.frame_id == record(panel, 3).frame_id
    qtbot.waitUntil(lambda: dialog.view.has_frame() and dialog.view.has_mask(), timeout=WAIT_MS)
    assert dialog.view.has_ground_truth()
    qtbot.keyClick(dialog, Qt.Key_Right)
    assert dialog.record.frame_id == record(panel, 4).frame_id
    select_rows(panel, 4, 5, 6)                 # A in the view decides the mask it shows only
    qtbot.keyClick(dialog, Qt.Key_A)
    assert store_decisions(root) == {record(panel, 4).frame_id: "approve"}
    assert dialog.record.frame_id == record(panel, 5).frame_id    # and moves on
    assert "rank 6 of 40" in dialog.info.text()
    qtbot.keyClick(dialog, Qt.Key_Space)
    assert not dialog.isVisible()


def test_main_window_has_the_audit_tab(qtbot):
    from app.window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert "Audit" in titles
    window.close()


def test_a_hidden_panel_re_reads_once_when_shown(qtbot, panel, context, root):
    """Jobs end while the researcher is on another panel: the audit re-reads when it is shown,
    once, instead of competing with the window after every job."""
    reads = []
    panel.table_loaded.connect(lambda: reads.append("table"))
    producer_id, _ = store_masks(root)
    frame = record(panel, 3).frame_id
    panel.hide()
    for decision in ("reject", "approve"):
        with Project.open(root, write=True) as project:
            project.set_decision(frame, producer_id, decision)
        context.refresh()
    qtbot.wait(300)
    assert reads == []
    panel.show()
    qtbot.waitUntil(lambda: reads == ["table"] and badge(panel, 3) == "approve", timeout=WAIT_MS)
    qtbot.wait(300)
    assert reads == ["table"]

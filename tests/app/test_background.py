"""Typed background calls (only the latest result of a key arrives) and the context's one change
signal (which areas of the store moved)."""

import os
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QWidget  # noqa: E402

from app.background import BackgroundCalls  # noqa: E402
from app.context import ProjectContext, StoreChange  # noqa: E402
from ussl_core.errors import ProjectError  # noqa: E402
from ussl_core.store import Project  # noqa: E402


def make_calls(qtbot):
    context = ProjectContext()
    owner = QWidget()
    qtbot.addWidget(owner)
    return context, owner, BackgroundCalls(context, owner)


def test_a_result_arrives_typed_on_the_gui_thread(qtbot):
    context, _, calls = make_calls(qtbot)
    got = []
    calls.run("sum", lambda cancel: (threading.current_thread().name, 1 + 2), got.append)
    qtbot.waitUntil(lambda: bool(got), timeout=5000)
    thread_name, value = got[0]
    assert value == 3 and thread_name != threading.main_thread().name
    context.shutdown()


def test_only_the_latest_call_of_a_key_is_delivered(qtbot):
    context, _, calls = make_calls(qtbot)
    release = threading.Event()
    got = []

    def slow(cancel):
        release.wait(5)
        return "old"

    calls.run("state", slow, got.append)
    calls.run("state", lambda cancel: "new", got.append)
    calls.run("other", lambda cancel: "other key", got.append)
    release.set()
    qtbot.waitUntil(lambda: "new" in got and "other key" in got, timeout=5000)
    qtbot.wait(200)
    assert "old" not in got
    context.shutdown()


def test_forget_drops_results_in_flight_and_errors_come_as_one_line(qtbot):
    context, _, calls = make_calls(qtbot)
    release = threading.Event()
    got, errors = [], []
    calls.run("state", lambda cancel: release.wait(5) and "stale", got.append)
    calls.forget()                       # another project opened
    release.set()

    def fails(cancel):
        raise ProjectError("/data/p/project.sqlite: not a ussl catalog")

    calls.run("fails", fails, got.append, errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    qtbot.wait(200)
    assert got == [] and errors == ["/data/p/project.sqlite: not a ussl catalog"]
    context.shutdown()


def test_coalesced_calls_run_once_more_after_the_running_one(qtbot):
    context, _, calls = make_calls(qtbot)
    release = threading.Event()
    runs, got = [], []

    def read(tag):
        def work(cancel):
            runs.append(tag)
            if tag == "first":
                release.wait(5)
            return tag
        return work

    calls.run("state", read("first"), got.append, coalesce=True)
    calls.run("state", read("second"), got.append, coalesce=True)
    calls.run("state", read("third"), got.append, coalesce=True)
    release.set()
    qtbot.waitUntil(lambda: got == ["first", "third"], timeout=5000)
    assert runs == ["first", "third"]
    context.shutdown()


def test_no_result_reaches_a_widget_that_is_gone(qtbot):
    context = ProjectContext()
    owner = QWidget()
    calls = BackgroundCalls(context, owner)
    release = threading.Event()
    got = []
    calls.run("state", lambda cancel: release.wait(5) and "late", got.append)
    owner.deleteLater()
    qtbot.wait(100)
    release.set()
    qtbot.wait(300)
    assert got == []
    context.shutdown()


def test_the_context_says_which_areas_a_write_changed(qtbot, tmp_path):
    Project.create(tmp_path / "p").close()
    context = ProjectContext()
    context.open(tmp_path / "p")
    heard = []
    context.changed.connect(heard.append)
    context.write(lambda project: project.set_meta("note", "nothing a view shows"))
    assert heard == []
    (tmp_path / "p" / "models").mkdir(exist_ok=True)
    (tmp_path / "p" / "models" / "g1_lowres_compact.json").write_text("{}")
    context.refresh()                     # what a job's end does
    assert heard == [StoreChange(frozenset({"models"}), live=False)]
    context.shutdown()


def test_on_finished_follows_every_ended_call_but_not_one_stopped_from_outside(qtbot):
    context, _, calls = make_calls(qtbot)
    release = threading.Event()
    ended = []
    calls.run("task", lambda cancel: release.wait(5), print, on_finished=lambda: ended.append("dropped"))
    calls.cancel("task")              # dropped by the panel: its end is still heard
    release.set()
    qtbot.waitUntil(lambda: ended == ["dropped"], timeout=5000)
    calls.run("task", lambda cancel: "quick", print, on_finished=lambda: ended.append("quick"))
    qtbot.waitUntil(lambda: ended == ["dropped", "quick"], timeout=5000)
    outside = threading.Event()
    worker = calls.run("task", lambda cancel: outside.wait(5), print,
                       on_finished=lambda: ended.append("after shutdown"))
    worker.cancel()                   # the window closing (context.shutdown cancels workers)
    outside.set()
    worker.wait(5000)
    qtbot.wait(200)
    assert ended == ["dropped", "quick"]
    context.shutdown()

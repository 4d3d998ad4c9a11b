"""The worker mechanism: a generator in a thread, and a job in a child process, with cancel."""

import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


from app.workers import GeneratorWorker, JobWorker  # noqa: E402
from ussl_core.errors import UsslError  # noqa: E402
from ussl_core.progress import Progress  # noqa: E402
from ussl_core.store import Project  # noqa: E402


def test_generator_worker_emits_progress_then_result(qtbot):
    def events(cancel):
        for i in range(3):
            yield Progress(i + 1, 3, f"step {i + 1}")

    worker = GeneratorWorker(events)
    seen = []
    worker.progress.connect(lambda p: seen.append(p.done))
    with qtbot.waitSignal(worker.result, timeout=5000) as blocker:
        worker.start()
    worker.wait()
    assert seen == [1, 2, 3] and blocker.args[0].done == 3


def test_generator_worker_reports_user_errors_in_one_line(qtbot):
    def events(cancel):
        yield Progress(0, 1)
        raise UsslError("/data/clip.mp4: truncated")

    worker = GeneratorWorker(events)
    with qtbot.waitSignal(worker.error, timeout=5000) as blocker:
        worker.start()
    worker.wait()
    assert blocker.args == ["/data/clip.mp4: truncated", ""]


def test_generator_worker_cancel(qtbot):
    def events(cancel):
        for i in range(1000):
            time.sleep(0.01)
            yield Progress(i, 1000)

    worker = GeneratorWorker(events)
    worker.progress.connect(lambda p: p.done == 3 and worker.cancel())
    with qtbot.waitSignal(worker.cancelled, timeout=5000):
        worker.start()
    worker.wait()


def test_job_worker_runs_the_teacher_in_a_child_process(qtbot, tmp_path, sample_davis):
    project = tmp_path / "p"
    Project.create(project).close()
    add = JobWorker({"kind": "add", "project": str(project), "sources": [str(sample_davis)], "davis": True})
    with qtbot.waitSignal(add.result, timeout=60000):
        add.start()
    add.wait()
    teacher = JobWorker({"kind": "teacher", "project": str(project), "workers": 1})
    events = []
    teacher.progress.connect(events.append)
    with qtbot.waitSignal(teacher.result, timeout=60000):
        teacher.start()
    teacher.wait()
    frames = [e for e in events if e.stage == "teacher"]
    assert frames and frames[-1].done == frames[-1].total > 0
    assert events[-1].stage == "purity"   # then the masks are measured against ground truth
    with Project.open(project) as p:
        assert p.mask_count(p.producer("videopca@g1").id) == frames[-1].total


def test_job_worker_error_is_one_line(qtbot, tmp_path):
    worker = JobWorker({"kind": "teacher", "project": str(tmp_path / "missing")})
    with qtbot.waitSignal(worker.error, timeout=60000) as blocker:
        worker.start()
    worker.wait()
    assert "missing" in blocker.args[0] and "\n" not in blocker.args[0]


def test_job_worker_cancel_stops_the_child(qtbot, tmp_path, sample_davis):
    project = tmp_path / "p"
    Project.create(project).close()
    worker = JobWorker({"kind": "add", "project": str(project), "sources": [str(sample_davis)], "davis": True})
    worker.cancel()  # before it starts: the child is stopped as soon as it exists
    with qtbot.waitSignal(worker.cancelled, timeout=60000):
        worker.start()
    worker.wait()
    assert worker.process.returncode != 0


def test_a_child_that_writes_much_to_stderr_does_not_block(qtbot, monkeypatch):
    import sys

    import app.workers as workers

    script = ("import sys, json\n"
              "for _ in range(300): sys.stderr.write('warning ' + 'x' * 1000 + '\\n')\n"
              "sys.stderr.write('the last line\\n')\n"
              "print(json.dumps({'result': 'done'}), flush=True)\n")
    monkeypatch.setattr(workers, "job_command", lambda spec: [sys.executable, "-c", script])
    worker = JobWorker({"kind": "noisy", "project": "/nowhere"})
    with qtbot.waitSignal(worker.result, timeout=30_000) as result:
        worker.start()
    worker.wait(5000)
    assert result.args == ["done"]
    assert worker.stderr_tail.endswith("the last line\n") and len(worker.stderr_tail) == 4000

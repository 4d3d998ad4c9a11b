"""The open project as the panels see it: a read-only view for the GUI thread, the one job
that may write at a time, and signals that tell panels when to refresh.

Panels never open the project for writing themselves: they ask `run_job` (a child process, see
workers.JobWorker) or `run_light` (a thread, for reading work such as thumbnails). While a job
runs, `busy` is True and actions that would write are disabled, not frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.workers import GeneratorWorker, JobWorker
from ussl_core.progress import CancelToken, Progress
from ussl_core.steps import step_spec
from ussl_core.store import Project


class ProjectContext(QObject):
    project_changed = Signal()            # another project opened, or closed
    data_changed = Signal()               # a job wrote something: views re-read the store
    job_started = Signal(str)             # kind
    job_progress = Signal(object)         # Progress
    job_finished = Signal(str, str)       # kind, outcome: "done", "cancelled" or "failed"
    job_error = Signal(str, str)          # message, details
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.project: Project | None = None
        self.job: JobWorker | None = None
        self._light: set[GeneratorWorker] = set()

    # ------------------------------------------------------------------ project
    @property
    def root(self) -> Path | None:
        return self.project.root if self.project else None

    def open(self, path: str | Path) -> None:
        """Open a project read-only for the views (raises UsslError with a readable message)."""
        project = Project.open(path)
        self.close()
        self.project = project
        self.project_changed.emit()

    def close(self) -> None:
        if self.job is not None:
            self.job.cancel()
        if self.project is not None:
            self.project.close()
            self.project = None
            self.project_changed.emit()

    def refresh(self) -> None:
        """Re-open the read-only view so that it sees what a job committed."""
        if self.project is not None:
            root = self.project.root
            self.project.close()
            self.project = Project.open(root)
            self.data_changed.emit()

    def write(self, change: Callable[[Project], object]) -> object:
        """Apply a small, quick change (a decision, a selection) under the write lock, taken only
        for the moment of the change. Raises ProjectLockedError while a job holds the project."""
        if self.project is None:
            raise RuntimeError("no project is open")
        with Project.open(self.project.root, write=True, holder="ussl-gui") as writable:
            result = change(writable)
        self.data_changed.emit()
        return result

    def write_in_background(self, change: Callable[[Project], object],
                            on_done: Callable[[object], None],
                            on_error: Callable[[str], None]) -> GeneratorWorker:
        """`write` in a thread, for changes that take a moment (a selection over 100,000 masks).
        data_changed is emitted, then on_done(result); or on_error(message)."""
        if self.project is None:
            raise RuntimeError("no project is open")
        root = self.project.root

        def events(_cancel: CancelToken) -> Iterator[Progress]:
            with Project.open(root, write=True, holder="ussl-gui") as writable:
                result = change(writable)
            yield Progress(1, 1, "written", {"result": result})

        def done(event: Progress) -> None:
            self.data_changed.emit()
            on_done(event.metrics["result"])

        worker = GeneratorWorker(events, parent=self)
        self._light.add(worker)
        worker.result.connect(done)
        worker.error.connect(lambda message, _details: on_error(message))
        worker.finished.connect(lambda: self._light.discard(worker))
        worker.start()
        return worker

    # ------------------------------------------------------------------ jobs
    @property
    def busy(self) -> bool:
        return self.job is not None

    def run_job(self, step) -> JobWorker | None:
        """Start a writing job in a child process; None when one is already running. The job
        runs a step (ussl_core.steps) on the open project, or (a dict of kind "sample") makes
        the project named in it."""
        spec = step if isinstance(step, dict) else step_spec(step)
        if self.busy or (self.project is None and spec.get("kind") != "sample"):
            return None
        if self.project is not None and spec.get("kind") != "sample":
            spec = {**spec, "project": str(self.project.root)}
        worker = JobWorker(spec, parent=self)
        worker.progress.connect(self.job_progress)
        worker.error.connect(self.job_error)
        kind = spec["kind"]
        worker.result.connect(lambda _: self._job_done(kind, "done"))
        worker.cancelled.connect(lambda: self._job_done(kind, "cancelled"))
        worker.error.connect(lambda *_: self._job_done(kind, "failed"))
        self.job = worker
        self.busy_changed.emit(True)
        self.job_started.emit(kind)
        worker.start()
        return worker

    def cancel_job(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _job_done(self, kind: str, outcome: str) -> None:
        if self.job is not None:
            self.job.wait(2000)
        self.job = None
        self.busy_changed.emit(False)
        self.refresh()
        self.job_finished.emit(kind, outcome)

    def run_light(self, make_events: Callable[[CancelToken], Iterator[Progress]],
                  on_result: Callable[[object], None] | None = None) -> GeneratorWorker:
        """Reading work in a thread (never writes the project)."""
        worker = GeneratorWorker(make_events, parent=self)
        self._light.add(worker)
        if on_result:
            worker.result.connect(on_result)
        worker.finished.connect(lambda: self._light.discard(worker))
        worker.start()
        return worker

    def shutdown(self) -> None:
        """Stop everything before the app exits: the job's child is stopped, threads joined."""
        if self.job is not None:
            self.job.cancel()
            self.job.wait(15000)
        for worker in list(self._light):
            worker.cancel()
            # Loading models cannot stop halfway (seconds, more on a busy machine); a thread
            # destroyed while it runs aborts the process, so it is waited for.
            worker.wait(120_000)
        if self.project is not None:
            self.project.close()
            self.project = None

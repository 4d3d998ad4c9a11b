"""The open project as the panels see it: a read-only view for the GUI thread, the one job
that may write at a time, and signals that tell panels when to refresh.

Panels never open the project for writing themselves: they ask `run_job` (a child process, see
workers.JobWorker) or `run_light` (a thread, for reading work such as thumbnails). While a job
runs, `busy` is True and actions that would write are disabled, not frozen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.workers import GeneratorWorker, JobWorker
from ussl_core.progress import CancelToken, Progress
from ussl_core.steps import step_spec
from ussl_core.store import Project, changed_areas

CHANGE_LOOK_S = 1.0


@dataclass(frozen=True)
class StoreChange:
    """What `ProjectContext.changed` tells the panels."""
    areas: frozenset[str]
    live: bool = False       # seen while a job still runs; a settled change follows at its end

    def touches(self, areas) -> bool:
        return bool(self.areas & set(areas))


class ProjectContext(QObject):
    project_changed = Signal()            # another project opened, or closed
    changed = Signal(object)              # StoreChange: which areas (store.AREAS) changed
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
        self._settled: dict[str, tuple] | None = None   # when the last job or write ended
        self._seen: dict[str, tuple] | None = None      # at the last look while a job runs
        self._last_look = 0.0

    # ------------------------------------------------------------------ project
    @property
    def root(self) -> Path | None:
        return self.project.root if self.project else None

    def open(self, path: str | Path) -> None:
        """Open a project read-only for the views (raises UsslError with a readable message)."""
        project = Project.open(path)
        self.close()
        self.project = project
        self._settled = self._seen = project.revisions()
        self.project_changed.emit()

    def close(self) -> None:
        if self.job is not None:
            self.job.cancel()
        if self.project is not None:
            self.project.close()
            self.project = None
            self._settled = self._seen = None
            self.project_changed.emit()

    def refresh(self) -> None:
        """Re-open the read-only view so that it sees what a job committed."""
        if self.project is not None:
            root = self.project.root
            self.project.close()
            self.project = Project.open(root)
            self.notice_changes()

    def notice_changes(self, live: bool = False) -> StoreChange | None:
        """Compare the store with what the panels last heard and emit `changed` with the areas
        that moved (nothing when none did). A live look, while a job runs, reports what moved
        since the last look; a settled one (a job or a write ended) everything since the last
        settled one, so that a panel that waits for the end misses nothing. Cheap: a few counts
        and a listing of models/."""
        if self.project is None:
            return None
        revisions = self.project.revisions()
        change = StoreChange(changed_areas(self._seen if live else self._settled, revisions), live)
        self._seen = revisions
        if not live:
            self._settled = revisions
        if not change.areas:
            return None
        self.changed.emit(change)
        return change

    def _job_progress(self, event: Progress) -> None:
        self.job_progress.emit(event)
        # Results land while a job runs (the teacher's masks shot by shot): at most once a
        # second, tell the panels what changed.
        now = time.monotonic()
        if now - self._last_look >= CHANGE_LOOK_S:
            self._last_look = now
            self.notice_changes(live=True)

    def write(self, change: Callable[[Project], object]) -> object:
        """Apply a small, quick change (a decision, a selection) under the write lock, taken only
        for the moment of the change. Raises ProjectLockedError while a job holds the project."""
        if self.project is None:
            raise RuntimeError("no project is open")
        with Project.open(self.project.root, write=True, holder="ussl-gui") as writable:
            result = change(writable)
        self.notice_changes()
        return result

    def write_in_background(self, change: Callable[[Project], object],
                            on_done: Callable[[object], None],
                            on_error: Callable[[str], None]) -> GeneratorWorker:
        """`write` in a thread, for changes that take a moment (a selection over 100,000 masks).
        `changed` is emitted, then on_done(result); or on_error(message)."""
        if self.project is None:
            raise RuntimeError("no project is open")
        root = self.project.root

        def events(_cancel: CancelToken) -> Iterator[Progress]:
            with Project.open(root, write=True, holder="ussl-gui") as writable:
                result = change(writable)
            yield Progress(1, 1, "written", {"result": result})

        def done(event: Progress) -> None:
            self.notice_changes()
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
        worker.progress.connect(self._job_progress)
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
                  on_result: Callable[[object], None] | None = None,
                  on_finished: Callable[[], None] | None = None) -> GeneratorWorker:
        """Reading work in a thread (never writes the project). The callbacks are connected
        before the thread starts, so that a quick one cannot finish unheard."""
        worker = GeneratorWorker(make_events, parent=self)
        self._light.add(worker)
        if on_result:
            worker.result.connect(on_result)
        if on_finished:
            worker.finished.connect(on_finished)
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

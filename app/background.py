"""Typed background calls: run a function in a thread and get its result back on the GUI thread
only if it is still wanted.

A panel asks `calls.run("state", read_state, on_result)`. The function runs in a thread
(GeneratorWorker, through the context so that shutdown waits for it) with a CancelToken; its
return value reaches `on_result` on the GUI thread, or its error, as one line, reaches `on_error`.
A result is dropped when a later call with the same key was made meanwhile, when `forget` was
called (another project opened), or when the owning widget is gone: the stale-result guards that
panels used to write by hand with token counters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from PySide6.QtCore import QObject

from app.errors import one_line
from app.workers import GeneratorWorker, is_alive
from ussl_core.progress import CancelToken, Cancelled, Progress

T = TypeVar("T")


class BackgroundCalls(QObject):
    """The background calls of one widget, one latest call per key."""

    def __init__(self, context, owner: QObject) -> None:
        super().__init__(owner)
        self.context = context
        self.owner = owner
        self._latest: dict[str, int] = {}
        self._running: dict[str, GeneratorWorker] = {}
        self._queued: dict[str, tuple] = {}
        self._dropped: set[GeneratorWorker] = set()   # cancelled here, not from outside

    def run(self, key: str, work: Callable[[CancelToken], T], on_result: Callable[[T], None],
            on_error: Callable[[str], None] | None = None, coalesce: bool = False,
            on_finished: Callable[[], None] | None = None) -> GeneratorWorker | None:
        """Run work(cancel) in a thread. Without `coalesce`, an earlier call of the same key still
        running is cancelled and its result dropped. With it, a call made while one runs waits and
        runs once after it (the latest of the calls made meanwhile): for re-reads that would
        otherwise pile up. `on_finished` runs when the thread has ended, whether its result was
        still wanted or not, unless it was stopped from outside (the window closing). Returns the
        worker, or None when queued."""
        if coalesce and key in self._running:
            self._queued[key] = (work, on_result, on_error, coalesce, on_finished)
            return None
        serial = self._latest.get(key, 0) + 1
        self._latest[key] = serial
        previous = self._running.get(key)
        if previous is not None:
            self._dropped.add(previous)
            previous.cancel()

        def events(cancel: CancelToken):
            try:
                value = work(cancel)
            except Cancelled:
                raise
            except Exception as exc:  # one line where the panel shows it, not a dead panel
                yield Progress(1, 1, "failed", {"error": one_line(exc)})
                return
            yield Progress(1, 1, "done", {"value": value})

        started: list[GeneratorWorker] = []
        worker = self.context.run_light(
            events, lambda event: self._deliver(key, serial, event, on_result, on_error),
            lambda: self._finished(key, started[0], on_finished))
        started.append(worker)
        self._running[key] = worker
        return worker

    def running(self, key: str) -> bool:
        return key in self._running

    def cancel(self, key: str) -> None:
        """Cancel a call and drop its result."""
        self._latest[key] = self._latest.get(key, 0) + 1
        self._queued.pop(key, None)
        worker = self._running.get(key)
        if worker is not None:
            self._dropped.add(worker)
            worker.cancel()

    def forget(self) -> None:
        """Drop the results of every call in flight (another project was opened)."""
        for key in list(self._latest):
            self.cancel(key)

    def _deliver(self, key: str, serial: int, event: Progress, on_result, on_error) -> None:
        if not is_alive(self.owner) or self._latest.get(key) != serial:
            return
        if "error" in event.metrics:
            if on_error is not None:
                on_error(event.metrics["error"])
        else:
            on_result(event.metrics["value"])

    def _finished(self, key: str, worker: GeneratorWorker, on_finished) -> None:
        if self._running.get(key) is worker:
            del self._running[key]
        dropped_here = worker in self._dropped
        self._dropped.discard(worker)
        queued = self._queued.pop(key, None)
        # A worker cancelled from outside (the window closing: context.shutdown) starts nothing
        # more.
        if not is_alive(self.owner) or (worker.cancel_token.cancelled and not dropped_here):
            return
        if on_finished is not None:
            on_finished()
        if queued is not None:
            self.run(key, *queued)

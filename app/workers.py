"""The single way long work runs off the GUI thread.

`GeneratorWorker` runs a ussl_core progress generator in a QThread (light work: reading the
store, making thumbnails). `JobWorker` runs a heavy step (teacher, training) in a child process
(`python -m ussl_core.jobs`, or the frozen bundle's own executable with `--job`: see
`job_command`) supervised from a QThread, so that the step's Python work never
holds the GUI's GIL; cancel asks the child to stop (SIGTERM: it stops cooperatively, keeping
what it completed) and kills it if it does not within a grace period. Both emit the same
signals: started, progress(Progress), result(object), error(str, str), finished.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator

import shiboken6
from PySide6.QtCore import QThread, Signal

from ussl_core.errors import UsslError
from ussl_core.jobs import child_environment
from ussl_core.progress import CancelToken, Cancelled, Progress

CANCEL_GRACE_S = 10.0


def is_alive(widget) -> bool:
    """False once the C++ side of a widget is gone (a result arriving after the panel closed)."""
    return shiboken6.isValid(widget)


class _Worker(QThread):
    progress = Signal(object)        # Progress
    result = Signal(object)
    error = Signal(str, str)         # one-line message, details
    cancelled = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.cancel_token = CancelToken()

    def cancel(self) -> None:
        self.cancel_token.cancel()


class GeneratorWorker(_Worker):
    """Runs `make_events(cancel_token)` (a generator of Progress) in this thread."""

    def __init__(self, make_events: Callable[[CancelToken], Iterator[Progress]], parent=None) -> None:
        super().__init__(parent)
        self._make_events = make_events

    def run(self) -> None:
        last = None
        try:
            for event in self._make_events(self.cancel_token):
                last = event
                self.progress.emit(event)
                if self.cancel_token.cancelled:
                    raise Cancelled()
        except Cancelled:
            self.cancelled.emit()
            return
        except UsslError as exc:
            self.error.emit(str(exc), "")
            return
        except Exception as exc:  # a bug: show it readably, with the traceback folded away
            self.error.emit(f"{type(exc).__name__}: {exc}", traceback.format_exc())
            return
        self.result.emit(last)


def job_command(spec: dict) -> list[str]:
    """The command line of a job child. A frozen bundle (PyInstaller) has no `python -m`: its
    executable runs the job itself when given `--job SPEC` (app.main)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "--job", json.dumps(spec)]
    return [sys.executable, "-m", "ussl_core.jobs", json.dumps(spec)]


class JobWorker(_Worker):
    """Runs a job spec ({"kind": ..., "project": ...}) in a child process and relays its events."""

    def __init__(self, spec: dict, tf_threads: int = 1, parent=None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.tf_threads = tf_threads
        self.process: subprocess.Popen | None = None
        self.stderr_tail = ""
        self._child_ready = False
        self._stop_sent = False

    def run(self) -> None:
        self.process = subprocess.Popen(
            job_command(self.spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_environment(self.tf_threads))
        # Read stderr all along (keeping its tail): a child writing more than a pipe holds
        # (64 KiB of library warnings) would otherwise block forever.
        tail: collections.deque[str] = collections.deque(maxlen=200)
        drain = threading.Thread(target=lambda: tail.extend(self.process.stderr), daemon=True)
        drain.start()
        if self.cancel_token.cancelled:  # cancelled before the child existed
            self._stop_child()
        outcome = None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not self._child_ready:
                self._child_ready = True
                self._forward_stop_request()
            try:
                message = json.loads(line)
            except ValueError:
                continue  # a stray print from a library
            if "progress" in message:
                p = message["progress"]
                self.progress.emit(Progress(p["done"], p["total"], p["message"], p["metrics"], p["stage"]))
            else:
                outcome = message
        self.process.wait()
        drain.join(timeout=5)
        self.stderr_tail = "".join(tail)[-4000:]
        if self.cancel_token.cancelled or (outcome is not None and "cancelled" in outcome):
            self.cancelled.emit()
        elif outcome is None:
            self.error.emit(f"the {self.spec['kind']} job stopped unexpectedly "
                            f"(exit code {self.process.returncode})", self.stderr_tail)
        elif "error" in outcome:
            self.error.emit(outcome["error"], self.stderr_tail)
        else:
            self.result.emit(outcome.get("result"))

    def cancel(self) -> None:
        """Non-blocking: SIGTERM now (the child stops cooperatively), SIGKILL after a grace period."""
        super().cancel()
        if self.process is not None and self.process.poll() is None:
            self._stop_child()

    def stop_after_unit(self) -> None:
        """Ask the child to finish its current unit (training: the epoch, with its checkpoint)
        and stop there; the run is resumable."""
        self.cancel_token.stop_at_boundary()
        self._forward_stop_request()

    def _forward_stop_request(self) -> None:
        # Only once the child has spoken: its SIGUSR1 handler is installed by then (before,
        # the signal's default action would kill it).
        if (self.cancel_token.stop_requested and self._child_ready and not self._stop_sent
                and self.process is not None and self.process.poll() is None):
            self._stop_sent = True
            self.process.send_signal(signal.SIGUSR1)

    def _stop_child(self) -> None:
        process = self.process
        assert process is not None
        process.terminate()
        timer = threading.Timer(CANCEL_GRACE_S, lambda: process.poll() is None and process.kill())
        timer.daemon = True
        timer.start()

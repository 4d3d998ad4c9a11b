"""Progress events and cancellation shared by every long step.

Long work is a generator of `Progress` events; the CLI draws them as a progress bar, the GUI
forwards them as Qt signals. Cancellation is cooperative: the step checks its `CancelToken`
between units of work (a shot, a batch) and stops cleanly, leaving completed units stored.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any


@dataclass
class Progress:
    done: int
    total: int
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    stage: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


class Cancelled(Exception):
    """Raised inside a step when its cancel token is set; completed work is kept."""


class CancelToken:
    """Thread-safe flag a caller sets to ask a running step to stop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._at_boundary = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def stop_at_boundary(self) -> None:
        """Ask the step to stop at its next natural boundary (training: the end of the epoch,
        after its checkpoint), so that no work in progress is thrown away."""
        self._at_boundary.set()

    @property
    def stop_requested(self) -> bool:
        return self._at_boundary.is_set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


class LineProgress:
    """Progress for a batch job's output file (no terminal): one plain line when a stage starts,
    then at most one every `seconds` (and every event marked {"notice": True}: where the work
    runs), and the stage's last event when it ends. Never a carriage return."""

    def __init__(self, stream: IO[str], seconds: float = 30.0) -> None:
        self.stream = stream
        self.seconds = seconds
        self._stage: str | None = None
        self._last: Progress | None = None
        self._written: Progress | None = None
        self._unit = "step"
        self._shown_at = 0.0
        self._started = 0.0

    def show(self, event: Progress, unit: str = "step") -> None:
        now = time.monotonic()
        if event.stage != self._stage:
            self.finish()
            self._stage, self._unit, self._started = event.stage, unit, now
            self._write(event, now)
        elif now - self._shown_at >= self.seconds or event.metrics.get("notice"):
            self._write(event, now)
        self._last = event

    def finish(self) -> None:
        """The current stage's last event, if it was not the last line written."""
        if self._last is not None and self._last is not self._written:
            self._write(self._last, time.monotonic())
        self._last = None

    def _write(self, event: Progress, now: float) -> None:
        share = f" ({100 * event.fraction:.0f} %)" if event.total else ""
        elapsed = time.strftime("%H:%M:%S", time.gmtime(now - self._started))
        self.stream.write(f"[{elapsed}] {event.stage or 'working'}: {event.done}/{event.total} "
                          f"{self._unit}s{share} {event.message}\n")
        self.stream.flush()
        self._shown_at, self._written = now, event

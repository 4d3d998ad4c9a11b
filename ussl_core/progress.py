"""Progress events and cancellation shared by every long step.

Long work is a generator of `Progress` events; the CLI draws them as a progress bar, the GUI
forwards them as Qt signals. Cancellation is cooperative: the step checks its `CancelToken`
between units of work (a shot, a batch) and stops cleanly, leaving completed units stored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


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

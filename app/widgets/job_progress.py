"""A job's progress as a panel shows it: a bar, the latest message, and an ETA.

The ETA comes from the rate measured since the first event of the current unit (a model being
trained, a teacher run): when `total` changes a new unit began and the rate starts afresh.
"""

from __future__ import annotations

import time

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from ussl_core.progress import Progress


def format_duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class EtaEstimator:
    """Seconds left from the rate since the unit's first event (None until there is a rate)."""

    def __init__(self) -> None:
        self._base: tuple[float, int, int] | None = None   # time, done, total

    def reset(self) -> None:
        self._base = None

    def update(self, done: int, total: int, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        if self._base is None or self._base[2] != total or done < self._base[1]:
            self._base = (now, done, total)
            return None
        t0, done0, _ = self._base
        rate = (done - done0) / max(now - t0, 1e-6)
        return (total - done) / rate if rate > 0 else None


def eta_text(eta: EtaEstimator, done: int, total: int, now: float | None = None) -> str:
    left = eta.update(done, total, now)
    if done >= total:
        return "finishing"
    return "ETA \u2026" if left is None else f"ETA {format_duration(left)}"


class JobProgressView(QWidget):
    """Progress bar + status line + ETA for the job a panel started."""

    def __init__(self, unit: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.unit = unit
        self.eta = EtaEstimator()
        self.bar = QProgressBar()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.eta_label = QLabel("")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.eta_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status_label)
        self.bar.hide()

    def start(self, message: str) -> None:
        self.eta.reset()
        self.bar.setRange(0, 0)
        self.bar.show()
        self.status_label.setText(message)
        self.eta_label.setText("")

    def update(self, event: Progress, detail: str = "") -> None:
        total = max(event.total, 1)
        self.bar.setRange(0, total)
        self.bar.setValue(min(event.done, total))
        self.bar.setFormat(f"%v / %m {self.unit}".rstrip())
        self.status_label.setText(event.message + (f"  \u00b7  {detail}" if detail else ""))
        self.eta_label.setText(eta_text(self.eta, event.done, event.total))

    def finish(self, message: str) -> None:
        self.bar.hide()
        self.eta_label.setText("")
        self.status_label.setText(message)

"""Is the GUI thread free while jobs run? Prints JSON.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_responsiveness.py \\
        --davis ../shared/data/davis2016-val [--out DIR] [--epochs 2] [--masks 100000]

The real main window (every panel) opens a fresh project in DIR. A 10 ms QTimer on the GUI
thread records the gap between its ticks while, as a user would start them from the panels:
the sources are added (Videos panel), the teacher runs over them (Videos panel, results
appearing as they land), the Audit panel opens on its masks and purity curve, the top 10 % is
applied as the selection (Audit panel), the Training panel is shown, then a compact
LowRes-Net and a compact BasicU-Net train for --epochs epochs, one job after the other
(Training panel, the loss monitor drawing). max_stall_ms is the largest gap between two ticks
over the teacher and training phases, while a job runs (a tick is due every 10 ms, so an idle
loop shows ~10); every phase reports its own largest gap and when it came (max_gap_at_s).
Then the audit panel's figures on a generated project of --masks masks (benchmarks/audit_scroll.py):
audit_open_s and scroll_p99_ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import audit_scroll  # noqa: E402  (benchmarks/ is on the path when run as a script)

TICK_MS = 10
JOB_LIMIT_S = 3600
LOOK_S = 0.5   # a user's pause between seeing a panel and clicking in it


class GapRecorder:
    """Gaps between the ticks of a 10 ms timer on the GUI thread, per phase."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.phase = "idle"
        self.phase_started = time.perf_counter()
        self.gaps: dict[str, list[float]] = {}
        self.worst: dict[str, tuple[float, float]] = {}   # phase -> (gap ms, seconds into it)
        self.long: dict[str, list[tuple[float, float]]] = {}   # (seconds into the phase, gap ms)
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        gap = (now - self._last) * 1000
        self.gaps.setdefault(self.phase, []).append(gap)
        if gap > self.worst.get(self.phase, (0.0, 0.0))[0]:
            self.worst[self.phase] = (gap, round(now - self.phase_started, 2))
        if gap > 100:
            self.long.setdefault(self.phase, []).append(
                (round(now - self.phase_started, 2), round(gap, 1)))
        self._last = now

    def start(self, phase: str) -> None:
        self.phase, self.phase_started = phase, time.perf_counter()

    def summary(self, phase: str) -> dict:
        gaps = sorted(self.gaps.get(phase, []))
        if not gaps:
            return {}
        return {"max_gap_ms": round(gaps[-1], 1), "max_gap_at_s": self.worst[phase][1],
                "p99_gap_ms": round(gaps[int(0.99 * (len(gaps) - 1))], 1),
                "gaps_over_100ms": sum(g > 100 for g in gaps), "ticks": len(gaps),
                "long_gaps_at_s": self.long.get(phase, [])[:20]}


def wait_for(app, condition, limit_s: float = JOB_LIMIT_S) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > limit_s:
            raise TimeoutError("the job did not finish in time")
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter() - started


def look(app, seconds: float = LOOK_S) -> None:
    """Process events for a moment, as a user looks at a panel before the next click (a click
    cannot land in the same turn of the event loop as the tab switch that showed its button)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def run_phase(app, window, recorder: GapRecorder, phase: str, start) -> dict:
    """Start a job through a panel and wait, processing events, until it finishes."""
    outcome = []

    def finished(_kind: str, result: str) -> None:
        outcome.append(result)

    window.context.job_finished.connect(finished)
    recorder.start(phase)
    start()
    seconds = wait_for(app, lambda: bool(outcome))
    recorder.start("idle")
    window.context.job_finished.disconnect(finished)
    if outcome[0] != "done":
        raise RuntimeError(f"{phase}: the job ended {outcome[0]}")
    return {"seconds": round(seconds, 1), **recorder.summary(phase)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="teacher worker processes")
    audit_scroll.add_arguments(parser)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)   # --out (shared with audit_scroll): where projects go

    from PySide6.QtWidgets import QApplication

    from app.window import MainWindow
    from ussl_core.store import Project

    app = QApplication.instance() or QApplication([])
    root = args.out / "project"
    if root.exists():
        shutil.rmtree(root)
    Project.create(root).close()
    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    window.open_project(root)
    panels = {panel.title: panel for panel in window.panels}
    recorder = GapRecorder()
    report: dict = {"davis": str(args.davis), "epochs": args.epochs, "phases": {}}
    phases = report["phases"]

    videos = panels["Videos"]
    window.tabs.setCurrentWidget(videos)
    phases["add"] = run_phase(app, window, recorder, "add", lambda: videos.add_paths([args.davis]))
    if args.workers:
        videos.workers_spin.setValue(args.workers)
    phases["teacher"] = run_phase(app, window, recorder, "teacher", videos.run_button.click)

    audit = panels["Audit"]
    recorder.start("open_audit")   # no job runs: reported, not part of max_stall_ms
    window.tabs.setCurrentWidget(audit)
    seconds = wait_for(app, lambda: audit.model.rowCount() > 0 and audit.curve is not None, 120)
    look(app)
    phases["open_audit"] = {"seconds": round(seconds, 1), **recorder.summary("open_audit")}
    audit.percent_spin.setValue(10.0)
    applied = []
    audit.selection_applied.connect(lambda: applied.append(True))
    recorder.start("apply_selection")   # no job runs either
    audit.apply_selection()
    wait_for(app, lambda: bool(applied), 120)
    look(app)
    phases["apply_selection"] = recorder.summary("apply_selection")

    training = panels["Training"]
    recorder.start("open_training")      # no job runs: the panel's first showing
    window.tabs.setCurrentWidget(training)
    look(app)
    phases["open_training"] = recorder.summary("open_training")
    training.settings_form.set_values({"epochs": args.epochs})
    for arch in ("lowres", "basic_unet"):
        training.set_selected_models([arch])
        phases[f"train_{arch}"] = run_phase(app, window, recorder, f"train_{arch}",
                                            training.train_button.click)
    measured = ("teacher", "train_lowres", "train_basic_unet")
    report["max_stall_ms"] = max(phases[p]["max_gap_ms"] for p in measured)
    report["gaps_over_100ms"] = sum(phases[p]["gaps_over_100ms"] for p in measured)
    recorder.timer.stop()
    window.close()

    audit_figures = audit_scroll.measure(args)
    report["audit_open_s"] = audit_figures["audit_open_s"]
    report["scroll_p99_ms"] = audit_figures["scroll_p99_ms"]
    report["audit"] = audit_figures
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

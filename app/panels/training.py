"""The Training panel: pick models and settings, train them one after another in one job, watch
their losses live, stop after the epoch, cancel, resume, and read the cards of past runs.

Training runs in a child process (`context.run_job` with kind "train"); this panel only draws the
events it sends. Model cards and interrupted checkpoints are small JSON files, read on refresh.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from matplotlib import ticker
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QMessageBox, QPlainTextEdit, QPushButton, QSplitter,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.style import BUSY_TIP
from app.widgets.job_progress import JobProgressView
from app.widgets.plot import PlotCanvas
from app.widgets.settings_form import SettingsForm
from ussl_core.progress import Progress
from ussl_core.steps import TrainStep, settings_of
from ussl_core.store.model_files import default_model_name, interrupted_runs, is_trained, trained_cards

# The architectures offered, in the order the paper lists them; EvalSeg-Net trains last.
MODELS = {"lowres": "LowRes-Net", "fconv": "FConv-Net", "basic_unet": "BasicU-Net",
          "dilate_unet": "DilateU-Net", "dense_unet": "DenseU-Net", "evalseg": "EvalSeg-Net"}
PRESETS = ("compact", "paper")
REDRAW_MS = 400          # the loss plot is redrawn at most this often


# ----------------------------------------------------------------------------- reading the store
def read_cards(models: Path) -> list[dict]:
    """Finished models' cards, newest first."""
    return sorted(trained_cards(models), key=lambda c: c["path"].stat().st_mtime, reverse=True)


# ----------------------------------------------------------------------------- the loss monitor
class LossMonitor(PlotCanvas):
    """Batch loss (thin), epoch loss (dots), validation loss (dashed) per model; the best epoch
    (lowest validation loss, else training loss) is starred. Redraws are throttled, and a redraw
    only moves the data of existing lines (rebuilding the axes costs ~80 ms on this CPU).

    The axes' limits move in steps (x: the planned epochs, y: whole decades), so most redraws
    only blit the lines over the saved axes; a full draw (25-55 ms) happens when a limit steps
    or a model is added to the legend."""

    COLOURS = ["#3b6ea5", "#c0504d", "#4f9a5f", "#8064a2", "#d08a2c", "#5a5a5a"]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, width=5, height=3,
                         margins={"left": 0.1, "right": 0.98, "top": 0.9, "bottom": 0.15})
        self.series: dict[str, dict[str, list[float]]] = {}
        self._lines: dict[str, dict] = {}
        self.planned_epochs = 0     # the x axis spans at least these (a running job's setting)
        self._limits: tuple | None = None   # (x limits, y limits, models) of the last full draw
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._draw)
        self.draws = 0
        self._setup_axes()
        self._draw()

    def _setup_axes(self) -> None:
        ax = self.axes
        ax.clear()
        self.style_axes()
        ax.set_xlabel("epoch")
        ax.set_ylabel("L2 loss")
        ax.set_title("Losses appear here while models train", loc="left")
        self._lines.clear()
        self._limits = None
        self.set_animated([])

    def reset(self, planned_epochs: int = 0) -> None:
        self.series.clear()
        self.planned_epochs = planned_epochs
        self._setup_axes()
        self._schedule()

    def show_history(self, name: str, history: list[dict]) -> None:
        """A finished run's epoch losses (from its model card), in place of the live view."""
        self.reset()
        for record in history:
            self.add({"event": "epoch", "model": name, **record})

    def add(self, metrics: dict) -> None:
        kind, name = metrics.get("event"), metrics.get("model")
        if kind not in ("batch", "epoch") or not name:
            return
        s = self.series.setdefault(name, {"batch_x": [], "batch_loss": [], "epoch": [],
                                          "loss": [], "val_loss": []})
        if kind == "batch":
            steps = max(int(metrics.get("steps", 1)), 1)
            s["batch_x"].append(metrics["epoch"] - 1 + metrics["batch"] / steps)
            s["batch_loss"].append(metrics["loss"])
        else:
            if metrics["epoch"] in s["epoch"]:   # a resumed run repeats nothing, but be safe
                return
            s["epoch"].append(metrics["epoch"])
            s["loss"].append(metrics["loss"])
            s["val_loss"].append(metrics.get("val_loss", math.nan))
        self._schedule()

    @staticmethod
    def _best_values(s: dict) -> list[float]:
        return s["val_loss"] if not all(math.isnan(v) for v in s["val_loss"]) else s["loss"]

    def best_epoch(self, name: str) -> int | None:
        s = self.series.get(name)
        if not s or not s["epoch"]:
            return None
        values = self._best_values(s)
        best = min(range(len(values)), key=lambda i: math.inf if math.isnan(values[i]) else values[i])
        return s["epoch"][best]

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start(REDRAW_MS)

    def _lines_for(self, name: str) -> dict:
        if name not in self._lines:
            ax = self.axes
            colour = self.COLOURS[len(self._lines) % len(self.COLOURS)]
            self._lines[name] = {
                "batch": ax.plot([], [], color=colour, alpha=0.35, linewidth=0.8)[0],
                "epoch": ax.plot([], [], "o-", color=colour, markersize=3, linewidth=1.2, label=name)[0],
                "val": ax.plot([], [], "--", color=colour, linewidth=1.0)[0],
                "best": ax.plot([], [], "*", color=colour, markersize=10)[0]}
            ax.set_yscale("log")
            # Few, plain tick labels: text is most of a draw's cost (default log labels are
            # mathtext, minor ticks cost transforms). 29 -> 20 ms a full draw, measured.
            ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
            ax.yaxis.set_minor_locator(ticker.NullLocator())
            ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=6, integer=True))
            ax.legend(loc="upper right", frameon=False)
            ax.set_title("solid: training, dashed: validation, star: best epoch", loc="left")
            self.set_animated([line for lines in self._lines.values() for line in lines.values()])
        return self._lines[name]

    def _wanted_limits(self) -> tuple:
        xs = [x for s in self.series.values() for x in s["batch_x"] + s["epoch"]]
        epochs = max(self.planned_epochs, math.ceil(max(xs, default=1.0)), 1)
        x_limits = (0.0, epochs * 1.03)   # the margin keeps the last epoch's marks whole
        ys = [y for s in self.series.values() for y in s["batch_loss"] + s["loss"] + s["val_loss"]
              if y > 0 and math.isfinite(y)]
        if not ys:
            return x_limits, (0.01, 1.0), tuple(self.series)
        low, high = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        return x_limits, (10.0 ** low, 10.0 ** max(high, low + 1)), tuple(self.series)

    def _draw(self) -> None:
        for name, s in self.series.items():
            lines = self._lines_for(name)
            lines["batch"].set_data(s["batch_x"], s["batch_loss"])
            lines["epoch"].set_data(s["epoch"], s["loss"])
            has_val = not all(math.isnan(v) for v in s["val_loss"])
            lines["val"].set_data(s["epoch"] if has_val else [], s["val_loss"] if has_val else [])
            best = self.best_epoch(name)
            if best is None:
                lines["best"].set_data([], [])
            else:
                lines["best"].set_data([best], [self._best_values(s)[s["epoch"].index(best)]])
        self.draws += 1
        limits = self._wanted_limits()
        if self.series and limits == self._limits:
            self.blit_animated()
            return
        if self.series:
            self.axes.set_xlim(*limits[0])
            self.axes.set_ylim(*limits[1])
            self._limits = limits
        self.redraw()


# ----------------------------------------------------------------------------- the panel
class TrainingPanel(QWidget):
    title = "Training"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)

        self.context = context
        self._worker = None          # the job this panel started
        self._model_count = 0
        self._models_done: list[str] = []
        self._started_at = 0.0

        self.model_boxes = {arch: QCheckBox(label) for arch, label in MODELS.items()}
        self.model_boxes["basic_unet"].setChecked(True)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(PRESETS)
        self.preset_combo.setToolTip("compact: under 3M parameters each, made for a CPU; "
                                     "paper: the sizes of the seed paper (a GPU is advisable)")
        from ussl_core.training import TrainingSettings

        self.settings_form = SettingsForm(TrainingSettings, columns=1)
        self.train_button = QPushButton("Train")
        self.train_button.setShortcut("Ctrl+T")
        self.resume_button = QPushButton("Resume")
        self.stop_button = QPushButton("Stop after this epoch")
        self.cancel_button = QPushButton("Cancel")
        self.progress = JobProgressView(unit="batches")
        self.interrupted_label = QLabel("")
        self.interrupted_label.setWordWrap(True)
        self.monitor = LossMonitor()
        self.history = QTableWidget(0, 8)
        self.history.setHorizontalHeaderLabels(["Model", "Gen", "Preset", "Epochs", "Best",
                                                "Loss", "Val loss", "Wall"])
        self.history.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.history.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.history.setSelectionMode(QAbstractItemView.SingleSelection)
        self.history.verticalHeader().hide()
        self.history.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.history.horizontalHeader().setStretchLastSection(True)
        self.card_view = QPlainTextEdit()
        self.card_view.setReadOnly(True)
        self.card_view.setPlaceholderText("Select a run to read its model card")
        self._cards: list[dict] = []
        self._layout()

        self.train_button.clicked.connect(lambda: self.start_training(resume=False))
        self.resume_button.clicked.connect(lambda: self.start_training(resume=True))
        self.stop_button.clicked.connect(self.stop_after_epoch)
        self.cancel_button.clicked.connect(self.cancel)
        self.history.itemSelectionChanged.connect(self._show_card)
        for box in self.model_boxes.values():
            box.toggled.connect(self._update_actions)
        context.project_changed.connect(self.refresh)
        context.changed.connect(lambda change: change.live or self.refresh())   # at a job's end
        context.busy_changed.connect(self._update_actions)
        context.job_progress.connect(self._job_progress)
        context.job_finished.connect(self._job_finished)
        self.refresh()

    def _layout(self) -> None:
        models_box = QGroupBox("Models")
        grid = QVBoxLayout(models_box)
        for box in self.model_boxes.values():
            grid.addWidget(box)
        preset_row = QHBoxLayout()
        preset_row.addWidget(QLabel("Preset"))
        preset_row.addWidget(self.preset_combo, 1)
        grid.addLayout(preset_row)
        settings_box = QGroupBox("Settings")
        QVBoxLayout(settings_box).addWidget(self.settings_form)
        buttons = QHBoxLayout()
        for button in (self.train_button, self.resume_button):
            buttons.addWidget(button)
        stops = QHBoxLayout()
        for button in (self.stop_button, self.cancel_button):
            stops.addWidget(button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(models_box)
        left_layout.addWidget(settings_box)
        left_layout.addLayout(buttons)
        left_layout.addLayout(stops)
        left_layout.addWidget(self.interrupted_label)
        left_layout.addWidget(self.progress)
        left_layout.addStretch(1)
        left.setMaximumWidth(360)

        history_box = QGroupBox("Runs (model cards)")
        history_split = QSplitter(Qt.Horizontal)
        history_split.addWidget(self.history)
        history_split.addWidget(self.card_view)
        history_split.setSizes([520, 380])
        QVBoxLayout(history_box).addWidget(history_split)
        right = QSplitter(Qt.Vertical)
        right.addWidget(self.monitor)
        right.addWidget(history_box)
        right.setSizes([420, 300])
        layout = QHBoxLayout(self)
        layout.addWidget(left)
        layout.addWidget(right, 1)

    # ------------------------------------------------------------------ state
    def selected_models(self) -> list[str]:
        return [arch for arch, box in self.model_boxes.items() if box.isChecked()]

    def set_selected_models(self, archs: list[str]) -> None:
        for arch, box in self.model_boxes.items():
            box.setChecked(arch in archs)

    def _models_dir(self) -> Path | None:
        return self.context.root / "models" if self.context.root else None

    def refresh(self) -> None:
        models = self._models_dir()
        self._cards = read_cards(models) if models and models.is_dir() else []
        self._fill_history()
        runs = interrupted_runs(models) if models and models.is_dir() else []
        self._interrupted = runs
        if runs:
            names = ", ".join(f"{r['name']} (after epoch {r['epoch']})" for r in runs)
            self.interrupted_label.setText(f"Interrupted: {names}. Resume continues from there.")
        else:
            self.interrupted_label.setText("")
        self._update_actions()

    def _fill_history(self) -> None:
        self.history.setRowCount(len(self._cards))
        for row, card in enumerate(self._cards):
            history = card.get("history") or []
            last = history[-1] if history else {}
            values = [card.get("name", "?"), card.get("generation", ""), card.get("preset", ""),
                      card.get("epochs", ""), card.get("best_epoch", ""),
                      _fmt(last.get("loss")), _fmt(last.get("val_loss")),
                      f"{card['wall_seconds']:.0f} s" if card.get("wall_seconds") else ""]
            for col, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                if col:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.history.setItem(row, col, item)

    def _show_card(self) -> None:
        rows = self.history.selectionModel().selectedRows()
        if not rows:
            self.card_view.clear()
            return
        card = {k: v for k, v in self._cards[rows[0].row()].items() if k != "path"}
        self.card_view.setPlainText(json.dumps(card, indent=2))
        if self._worker is None:   # while training, the monitor stays live
            self.monitor.show_history(card.get("name", "?"), card.get("history") or [])

    def _update_actions(self) -> None:
        has_project = self.context.project is not None
        running_here = self._worker is not None
        busy_elsewhere = self.context.busy and not running_here
        free = has_project and not self.context.busy
        self.train_button.setEnabled(free and bool(self.selected_models()))
        self.resume_button.setEnabled(free and bool(getattr(self, "_interrupted", [])))
        tip = BUSY_TIP if busy_elsewhere else ("" if has_project else "Open or create a project first.")
        self.train_button.setToolTip(tip or "Train the checked models one after another (Ctrl+T)")
        self.resume_button.setToolTip(tip or "Continue interrupted runs from their last checkpoint")
        self.stop_button.setEnabled(running_here)
        self.cancel_button.setEnabled(running_here)

    # ------------------------------------------------------------------ the job
    def training_step(self, resume: bool) -> TrainStep:
        archs = self.selected_models()
        if resume:   # the interrupted runs' architectures, with the checked ones
            archs = sorted({*archs, *(r["architecture"] for r in self._interrupted
                                      if r["architecture"] in MODELS)},
                           key=list(MODELS).index)
        return TrainStep(tuple(archs), self.preset_combo.currentText(), self.settings_form.values(), resume)

    def _finished_models(self, step: TrainStep) -> list[str]:
        """The names of the step's models that are already trained in this generation."""
        project = self.context.project
        if project is None:
            return []
        generation = int(project.meta("generation", "1"))
        names = [default_model_name(arch, step.preset, generation) for arch in step.archs]
        return [name for name in names if is_trained(project.root, name)]

    def start_training(self, resume: bool = False):
        from ussl_core.errors import SettingsError

        step = self.training_step(resume)
        try:
            settings = settings_of(step)
        except SettingsError as exc:
            self.progress.finish(f"Settings: {exc}")
            return None
        finished = [] if resume else self._finished_models(step)
        if finished:
            answer = QMessageBox.question(
                self, "Train again?", f"{', '.join(finished)} {'is' if len(finished) == 1 else 'are'} "
                "already trained. Train again and replace the finished model(s) and card(s)?",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes:
                return None
            step = dataclasses.replace(step, replace=True)
        worker = self.context.run_job(step)
        if worker is None:
            return None
        self._worker = worker
        self._model_count = len(step.archs)
        self._models_done = []
        self._started_at = time.monotonic()
        self.monitor.reset(planned_epochs=settings.epochs)
        self.progress.start(f"Starting: {', '.join(step.archs)}")
        self.stop_button.setText("Stop after this epoch")
        self._update_actions()
        return worker

    def stop_after_epoch(self) -> None:
        if self._worker is not None:
            self._worker.stop_after_unit()
            self.stop_button.setEnabled(False)
            self.stop_button.setText("Stopping after this epoch\u2026")

    def cancel(self) -> None:
        if self._worker is not None:
            self.cancel_button.setEnabled(False)
            self.context.cancel_job()

    def _job_progress(self, event: Progress) -> None:
        if self._worker is None or event.stage != "train":
            return
        metrics = event.metrics or {}
        self.monitor.add(metrics)
        if metrics.get("event") == "saved":
            self._models_done.append(event.message)
        model = len(self._models_done) + (0 if metrics.get("event") == "saved" else 1)
        detail = f"model {min(model, self._model_count)} of {self._model_count}"
        self.progress.update(event, detail)

    def _job_finished(self, kind: str, outcome: str) -> None:
        if self._worker is None or kind != "train":
            return
        self._worker = None
        elapsed = time.monotonic() - self._started_at
        words = {"done": "Finished", "cancelled": "Stopped (Resume continues)", "failed": "Failed"}
        self.progress.finish(f"{words.get(outcome, outcome)} after {elapsed:.0f} s")
        self.stop_button.setText("Stop after this epoch")
        self.refresh()


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


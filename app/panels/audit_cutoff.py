"""The audit panel's right side: the purity curve with the selection cut-off as a line to drag,
the cut-off's controls (top percent or score above, per video, cap), what it keeps, "Apply
selection" and the project's active selection."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFrame, QGridLayout,
                               QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app.panels.audit_views import AuditModel
from app.style import MUTED
from app.widgets.plot import PlotCanvas
from ussl_core.purity import PurityCurve, n_kept
from ussl_core.selection import SelectionSettings
from ussl_core.views.audit import CutoffFigures, cutoff_figures, percent_above, threshold_keeping

COMPUTING_DELAY_MS = 250   # the purity placeholder waits this long for the curve
SELECTION_DEFAULTS = SelectionSettings()   # the cut-off's controls start at the defaults


# ============================================================================ plot
class CutoffPlot(PlotCanvas):
    """The purity curve with the selection cut-off as a vertical line the mouse can drag.

    The line and its shaded span are animated artists: moving them restores the saved
    background and blits (a few ms), at most once per timer tick; the whole figure is drawn
    again (draw_idle) only when the curve changes or the canvas is resized.
    """

    cutoff_dragged = Signal(float)   # percent kept

    def __init__(self, parent=None) -> None:
        super().__init__(parent, width=3.6, height=2.6,
                         margins={"left": 0.16, "right": 0.97, "top": 0.95, "bottom": 0.13})
        self.curve: PurityCurve | None = None
        self.message = ""
        self._line = None
        self._span = None
        self._dragging = False
        self.cutoff = 10.0
        self._blit_timer = QTimer(self)
        self._blit_timer.setSingleShot(True)
        self._blit_timer.setInterval(10)
        self._blit_timer.timeout.connect(self.blit_animated)
        self.mpl_connect("button_press_event", self._press)
        self.mpl_connect("motion_notify_event", self._motion)
        self.mpl_connect("button_release_event", self._release)
        self.set_curve(None)

    def set_curve(self, curve: PurityCurve | None, message: str = "") -> None:
        self.curve = curve
        self.message = message
        ax = self.axes
        ax.clear()
        self.style_axes()
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("percent kept (best scores first)")
        ax.set_ylabel("purity")
        if curve is not None and curve.source == "ground_truth":
            ax.plot(curve.percent, _nan(curve.mean_iou), color="#3b6ea8", lw=1.4, label="mean IoU")
            ax.plot(curve.percent, _nan(curve.corloc), color="#d08c2f", lw=1.4, label="CorLoc")
            ax.legend(loc="lower left", frameon=False, fontsize=7)
        elif curve is not None and curve.approved_share is not None:
            ax.plot(curve.percent, _nan(curve.approved_share), color="#2e9d57", lw=1.4,
                    label="approved share of audited")
            ax.legend(loc="lower left", frameon=False, fontsize=7)
        if message:
            ax.text(50, 0.5, message, ha="center", va="center", color="#8a8f94", fontsize=8,
                    wrap=True)
        self._span = ax.axvspan(0, self.cutoff, color="#c0392b", alpha=0.05, lw=0)
        self._line = ax.axvline(self.cutoff, color="#c0392b", lw=1.3, alpha=0.9)
        self.set_animated([self._span, self._line])
        self.redraw()

    def set_cutoff(self, percent: float) -> None:
        cutoff = float(min(max(percent, 0.0), 100.0))
        if self._line is None or cutoff == self.line_x:
            self.cutoff = cutoff
            return
        self.cutoff = cutoff
        self._line.set_xdata([cutoff, cutoff])
        self._span.set_width(cutoff)
        if not self._blit_timer.isActive():
            self._blit_timer.start()

    @property
    def line_x(self) -> float:
        return float(self._line.get_xdata()[0])

    def _percent_at(self, event) -> float | None:
        if event.inaxes is not self.axes or event.xdata is None:
            return None
        return float(min(max(event.xdata, 0.1), 100.0))

    def _press(self, event) -> None:
        if event.button == 1 and self.isEnabled():
            percent = self._percent_at(event)
            if percent is not None:
                self._dragging = True
                self.cutoff_dragged.emit(percent)

    def _motion(self, event) -> None:
        if self._dragging:
            percent = self._percent_at(event)
            if percent is not None:
                self.cutoff_dragged.emit(percent)
        else:
            near = (event.inaxes is self.axes and event.xdata is not None
                    and abs(event.xdata - self.cutoff) < 1.5)
            self.setCursor(Qt.SizeHorCursor if near else Qt.ArrowCursor)

    def _release(self, event) -> None:
        self._dragging = False


def _nan(values) -> list[float]:
    return [math.nan if v is None else v for v in values]


# ============================================================================ controls
class CutoffControls(QWidget):
    """Purity and the cut-off over the model's table. `cutoff_changed` when the researcher moves
    the cut-off (typed, dragged, another mode), `apply_requested` for "Apply selection"."""

    cutoff_changed = Signal()
    apply_requested = Signal()

    def __init__(self, model: AuditModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.curve: PurityCurve | None = None
        self.plot = CutoffPlot()
        self.plot.cutoff_dragged.connect(self._cutoff_dragged)
        self.source_label = QLabel("")
        self.source_label.setStyleSheet(MUTED)
        self.source_label.setWordWrap(True)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["Top percent", "Score above"])
        self.mode_combo.currentIndexChanged.connect(self._mode_changed)
        self.percent_spin = QDoubleSpinBox()
        self.percent_spin.setRange(0.1, 100.0)
        self.percent_spin.setDecimals(1)
        self.percent_spin.setSingleStep(1.0)
        self.percent_spin.setSuffix(" %")
        self.percent_spin.setValue(SELECTION_DEFAULTS.top_percent)
        self.percent_spin.setKeyboardTracking(False)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(0.01)
        self.threshold_spin.setValue(0.5)
        self.threshold_spin.setKeyboardTracking(False)
        self.threshold_spin.hide()
        self.per_video_check = QCheckBox("of each video")
        self.per_video_check.setToolTip("The cut-off applies to each video's masks on its own, so "
                                        "every video keeps some")
        self.per_video_check.setChecked(SELECTION_DEFAULTS.per_video)
        self.cap_spin = QSpinBox()
        self.cap_spin.setRange(0, 1_000_000)
        self.cap_spin.setSpecialValueText("no cap")
        self.cap_spin.setPrefix("at most ")
        self.cap_spin.setSuffix(" per video")
        self.cap_spin.setToolTip("Keep at most this many masks of one video (the best): long, "
                                 "static videos would otherwise fill the selection")
        self.cap_spin.setValue(SELECTION_DEFAULTS.max_per_video or 0)
        self.cap_spin.setKeyboardTracking(False)
        for changed in (self.percent_spin.valueChanged, self.threshold_spin.valueChanged,
                        self.per_video_check.toggled, self.cap_spin.valueChanged):
            changed.connect(lambda _: self.cutoff_changed.emit())
        self.kept_label = QLabel("")
        self.kept_label.setWordWrap(True)
        self.apply_button = QPushButton("Apply selection")
        self.apply_button.setToolTip("Store the masks kept at this cut-off as the active selection "
                                     "(approved masks always in, rejected never)")
        self.apply_button.clicked.connect(lambda: self.apply_requested.emit())
        self.selection_label = QLabel("")
        self.selection_label.setWordWrap(True)
        self.selection_label.setStyleSheet(MUTED)
        # "Computing purity" is drawn only when the curve takes a while (usually it is cached):
        # each full draw of the plot holds the GUI thread for 20-70 ms.
        self._computing_timer = QTimer(self)
        self._computing_timer.setSingleShot(True)
        self._computing_timer.setInterval(COMPUTING_DELAY_MS)
        self._computing_timer.timeout.connect(self._show_computing)
        self._build()

    def _build(self) -> None:
        caption = QLabel("Cut-off")
        caption.setStyleSheet(MUTED)
        cutoff = QGridLayout()
        cutoff.setHorizontalSpacing(6)
        cutoff.setVerticalSpacing(4)
        cutoff.addWidget(caption, 0, 0)
        cutoff.addWidget(self.mode_combo, 0, 1)
        cutoff.addWidget(self.percent_spin, 0, 2)
        cutoff.addWidget(self.threshold_spin, 0, 2)
        cutoff.addWidget(self.per_video_check, 0, 3)
        cutoff.addWidget(self.cap_spin, 1, 1, 1, 2)
        cutoff.setColumnStretch(4, 1)
        rule = QFrame()
        rule.setFrameShape(QFrame.HLine)
        rule.setStyleSheet("color: #dcdfe2;")
        apply_row = QHBoxLayout()
        apply_row.addWidget(self.apply_button)
        apply_row.addStretch(1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(QLabel("<b>Purity</b>"))
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.source_label)
        layout.addWidget(rule)
        layout.addLayout(cutoff)
        layout.addWidget(self.kept_label)
        layout.addLayout(apply_row)
        layout.addWidget(self.selection_label)
        layout.addStretch(0)

    # ------------------------------------------------------------------ purity
    def curve_pending(self, forget_current: bool = False) -> None:
        """A curve is on its way: "Computing purity" appears if it takes a while and none is shown."""
        if forget_current:
            self.curve = None
        if self.curve is None:
            self._computing_timer.start()

    def _show_computing(self) -> None:
        if self.curve is None:
            self.plot.set_curve(None, "Computing purity …")

    def show_no_curve(self, message: str, source_text: str = "") -> None:
        self._computing_timer.stop()
        self.curve = None
        self.plot.set_curve(None, message)
        self.source_label.setText(source_text)

    def show_curve(self, curve: PurityCurve) -> None:
        self.curve = curve
        if curve.source == "ground_truth":
            self.plot.set_curve(curve)
            self.source_label.setText(f"From ground truth ({curve.n_masks:,} masks with annotations)")
        else:
            audited = curve.n_audited[-1] if curve.n_audited else 0
            message = "" if audited else "No ground truth and no decisions yet:\napprove or reject masks"
            self.plot.set_curve(curve, message)
            self.source_label.setText(f"From human decisions, {audited:,} audited")

    # ------------------------------------------------------------------ cut-off
    @property
    def threshold_mode(self) -> bool:
        return self.mode_combo.currentIndex() == 1

    def selection_settings(self) -> SelectionSettings:
        rule = ({"top_percent": None, "threshold": self.threshold_spin.value()} if self.threshold_mode
                else {"top_percent": self.percent_spin.value()})
        return SelectionSettings(**rule, per_video=self.per_video_check.isChecked(),
                                 max_per_video=self.cap_spin.value() or None)

    def figures(self) -> CutoffFigures | None:
        """What the cut-off keeps of the model's table (None without masks)."""
        table = self.model.table
        if table is None or not len(table):
            return None
        return cutoff_figures(table, self.selection_settings(), self.curve)

    def show_figures(self, figures: CutoffFigures | None) -> None:
        """The line on the plot and the text under the controls."""
        if figures is None:
            self.kept_label.setText("")
            self.plot.set_cutoff(self.percent_spin.value())
            return
        self.plot.set_cutoff(figures.percent)
        self.kept_label.setText(_kept_text(figures, self.threshold_mode))

    def set_score_range(self, floor: float, ceil: float) -> None:
        self.threshold_spin.blockSignals(True)
        self.threshold_spin.setRange(floor, ceil)
        self.threshold_spin.blockSignals(False)

    def _mode_changed(self) -> None:
        table = self.model.table
        has_masks = table is not None and len(table) > 0
        if self.threshold_mode:
            # Start from the score at the current percent, so the line stays put.
            if has_masks:
                k = n_kept(self.percent_spin.value(), len(table))
                self._set_quietly(self.threshold_spin, threshold_keeping(table.score, k))
            self.percent_spin.hide()
            self.threshold_spin.show()
        else:
            if has_masks:
                percent = percent_above(table.score, self.threshold_spin.value())
                self._set_quietly(self.percent_spin, percent)
            self.threshold_spin.hide()
            self.percent_spin.show()
        self.cutoff_changed.emit()

    @staticmethod
    def _set_quietly(spin: QDoubleSpinBox, value: float) -> None:
        spin.blockSignals(True)
        spin.setValue(value)
        spin.blockSignals(False)

    def _cutoff_dragged(self, percent: float) -> None:
        table = self.model.table
        if table is None or not len(table):
            return
        if self.threshold_mode:
            self.threshold_spin.setValue(threshold_keeping(table.score, n_kept(percent, len(table))))
        else:
            self.percent_spin.setValue(round(percent, 1))

    def set_enabled(self, has_masks: bool, can_apply: bool) -> None:
        self.apply_button.setEnabled(can_apply)
        self.plot.setEnabled(has_masks)
        for widget in (self.percent_spin, self.threshold_spin, self.mode_combo,
                       self.per_video_check, self.cap_spin):
            widget.setEnabled(has_masks)

    # ------------------------------------------------------------------ active selection
    def start_from(self, active: dict) -> None:
        """Set the controls to an active selection's cut-off, without `cutoff_changed`."""
        threshold = active["method"] == "threshold"
        spin = self.threshold_spin if threshold else self.percent_spin
        for widget in (self.mode_combo, spin):
            widget.blockSignals(True)
        self.mode_combo.setCurrentIndex(1 if threshold else 0)
        self.percent_spin.setVisible(not threshold)
        self.threshold_spin.setVisible(threshold)
        if threshold:
            spin.setRange(min(spin.minimum(), active["value"]), max(spin.maximum(), active["value"]))
        spin.setValue(active["value"])
        for widget in (self.mode_combo, spin):
            widget.blockSignals(False)

    def show_active(self, active: dict | None) -> None:
        if not active:
            self.selection_label.setText("No active selection yet.")
            return
        how = (f"top {active['value']:g} %" if active["method"] == "top_percent"
               else f"score above {active['value']:.3f}")
        extra = ""
        if active["n_approved_added"] or active["n_rejected_removed"]:
            extra = (f", +{active['n_approved_added']:,} approved"
                     f", −{active['n_rejected_removed']:,} rejected")
        self.selection_label.setText(
            f"Active selection: {active['n_selected']:,} masks ({how}{extra}), "
            f"generation {active.get('generation', 1)}, {active['created_at']}")


def _kept_text(figures: CutoffFigures, threshold_mode: bool) -> str:
    parts = [f"Keeps <b>{figures.n_selected:,}</b> of {figures.n_masks:,} masks"]
    if figures.n_approved_below or figures.n_rejected_above:
        parts.append(f"({figures.n_by_score:,} by score, +{figures.n_approved_below:,} approved, "
                     f"−{figures.n_rejected_above:,} rejected)")
    if threshold_mode or not figures.whole_ranking:
        parts.append(f"= {figures.percent:.1f} %")
    text = " ".join(parts)
    point = figures.point
    if not figures.whole_ranking:
        text += "<br>(the curve ranks all masks together; per video the kept masks differ)"
    elif point is not None and point.mean_iou is not None:
        text += f"<br>mean IoU {point.mean_iou:.3f} · CorLoc {point.corloc:.3f} at the cut-off"
    elif point is not None and point.approved_share is not None:
        text += (f"<br>{point.approved_share:.0%} approved of "
                 f"{point.n_audited:,} audited above the cut-off")
    return text


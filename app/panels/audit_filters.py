"""The audit panel's filter row above the grid: producer, video, score range, decision, and how
many masks are shown."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QWidget

from app.style import MUTED
from ussl_core.errors import ProjectError
from ussl_core.store import Project
from ussl_core.views.audit import DECISION_FILTERS


class AuditFilters(QWidget):
    """Which producer's masks the grid shows, and which of them: `producer_changed` when another
    producer is chosen, `filters_changed` when the video, score range or decision filter moves."""

    producer_changed = Signal()
    filters_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.producer_combo = QComboBox()
        self.producer_combo.setMinimumContentsLength(20)
        self.producer_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.video_combo = QComboBox()
        self.video_combo.setMinimumContentsLength(14)
        self.video_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.score_min = _score_spin()
        self.score_max = _score_spin()
        self.score_max.setValue(1.0)
        self.decision_combo = QComboBox()
        self.decision_combo.addItems(DECISION_FILTERS)
        self.count_label = QLabel("")
        self.count_label.setStyleSheet(MUTED)

        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(6)
        for text, widget in (("Producer", self.producer_combo), ("Video", self.video_combo)):
            row.addWidget(_caption(text))
            row.addWidget(widget)
        row.addSpacing(4)
        row.addWidget(_caption("Score"))
        row.addWidget(self.score_min)
        row.addWidget(QLabel("–"))
        row.addWidget(self.score_max)
        row.addSpacing(4)
        row.addWidget(_caption("Show"))
        row.addWidget(self.decision_combo)
        row.addStretch(1)
        row.addWidget(self.count_label)

        self.producer_combo.currentIndexChanged.connect(lambda _: self.producer_changed.emit())
        for changed in (self.video_combo.currentIndexChanged, self.decision_combo.currentIndexChanged,
                        self.score_min.valueChanged, self.score_max.valueChanged):
            changed.connect(lambda _: self.filters_changed.emit())

    # ------------------------------------------------------------------ producers and videos
    @property
    def producer_id(self) -> int | None:
        return self.producer_combo.currentData()

    def producer_ids(self) -> set[int]:
        return {self.producer_combo.itemData(i) for i in range(self.producer_combo.count())}

    def fill_producers(self, project: Project | None) -> None:
        """The producers that have masks, with their counts; the project's default chosen. No
        `producer_changed`: the caller reloads."""
        self.producer_combo.blockSignals(True)
        self.producer_combo.clear()
        if project is not None:
            try:
                default = project.default_producer().id
            except ProjectError:
                default = None
            for p in project.producers():
                count = project.mask_count(p.id)
                if count:
                    self.producer_combo.addItem(f"{p.name} ({count:,})", p.id)
            if default is not None and self.producer_combo.findData(default) >= 0:
                self.producer_combo.setCurrentIndex(self.producer_combo.findData(default))
        self.producer_combo.blockSignals(False)

    def fill_videos(self, project: Project | None) -> None:
        """The project's videos, keeping the chosen one when it is still there."""
        current = self.video_combo.currentData()
        self.video_combo.blockSignals(True)
        self.video_combo.clear()
        self.video_combo.addItem("All videos", None)
        if project is not None:
            for v in project.videos():
                self.video_combo.addItem(v.name, v.id)
        index = self.video_combo.findData(current) if current is not None else 0
        self.video_combo.setCurrentIndex(max(index, 0))
        self.video_combo.blockSignals(False)

    # ------------------------------------------------------------------ filters
    def values(self) -> tuple[int | None, float, float, str]:
        """(video id or None, lowest score, highest score, decision filter)."""
        low, high = self.score_min.value(), self.score_max.value()
        if low > high:
            low, high = high, low
        return self.video_combo.currentData(), low, high, self.decision_combo.currentText()

    def set_score_range(self, floor: float, ceil: float, reset_values: bool) -> None:
        """The range the score filter offers (a table's scores); `reset_values` shows them all."""
        for spin in (self.score_min, self.score_max):
            spin.blockSignals(True)
            spin.setRange(floor, ceil)
            if reset_values:
                spin.setValue(floor if spin is self.score_min else ceil)
            spin.blockSignals(False)

    def show_counts(self, shown: int, total: int, loading: bool) -> None:
        if loading and not total:
            self.count_label.setText("loading …")
        elif shown == total:
            self.count_label.setText(f"{total:,} masks")
        else:
            self.count_label.setText(f"{shown:,} of {total:,} masks")


def _caption(text: str) -> QLabel:
    label = QLabel(text)
    label.setStyleSheet(MUTED)
    return label


def _score_spin() -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(3)
    spin.setSingleStep(0.05)
    spin.setRange(0.0, 1.0)
    spin.setKeyboardTracking(False)
    spin.setFixedWidth(72)
    return spin

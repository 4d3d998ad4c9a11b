"""A small matplotlib canvas for panels (purity curves, training losses).

`PlotCanvas` is a FigureCanvasQTAgg with one axes, calm styling that follows the widget's
palette, and `redraw()` that goes through `draw_idle` so that bursts of updates (a dragged
cut-off line, streaming losses) cost one paint.

Artists that change often (a dragged line, growing loss curves) can be made *animated*: a full
draw then saves the rest of the figure as a background, and `blit_animated()` repaints only
them over it (a few ms instead of the 25-55 ms of a full draw on a 2-core CPU, measured: most
of a draw is tick labels, titles and the legend).

No pyplot: the figure is built directly, so the process-wide backend is left alone.
"""

from __future__ import annotations

import math
import time

import matplotlib
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QSizePolicy, QWidget

STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9a9a9a",
    "axes.labelcolor": "#444444",
    "xtick.color": "#666666",
    "ytick.color": "#666666",
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
}


MIN_DRAW_INTERVAL_MS = 150


class PlotCanvas(FigureCanvasQTAgg):
    """One matplotlib axes in a Qt widget; `self.figure`, `self.axes`."""

    def __init__(self, parent: QWidget | None = None, width: float = 4.0, height: float = 3.0,
                 dpi: int = 100, margins: dict | None = None) -> None:
        """`margins` (subplots_adjust arguments) fixes the layout instead of the constrained
        layout, which is recomputed on every draw: for plots that redraw often."""
        with matplotlib.rc_context(STYLE):
            figure = Figure(figsize=(width, height), dpi=dpi,
                            layout=None if margins else "constrained")
            if margins:
                figure.subplots_adjust(**margins)
            self.axes = figure.add_subplot(111)
        super().__init__(figure)
        self._stale = False   # a redraw was asked for while hidden
        self._animated: list = []
        self._background = None
        self.full_draws = 0
        self.blits = 0
        self._last_full_draw = -math.inf
        self._draw_timer = QTimer(self)
        self._draw_timer.setSingleShot(True)
        self._draw_timer.timeout.connect(super().draw_idle)
        self.mpl_connect("draw_event", self._drawn)
        self.setParent(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setMinimumSize(200, 150)
        background = self.palette().window().color().name()
        figure.set_facecolor(background)
        self.axes.set_facecolor("white")
        self.style_axes()

    def style_axes(self) -> None:
        """(Re)apply the calm style to the axes, e.g. after `axes.clear()`."""
        ax = self.axes
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_color(STYLE["axes.edgecolor"])
        ax.tick_params(labelsize=STYLE["xtick.labelsize"], colors=STYLE["xtick.color"], length=3)
        ax.xaxis.label.set_size(STYLE["axes.labelsize"])
        ax.yaxis.label.set_size(STYLE["axes.labelsize"])
        ax.xaxis.label.set_color(STYLE["axes.labelcolor"])
        ax.yaxis.label.set_color(STYLE["axes.labelcolor"])
        ax.grid(True, color=STYLE["grid.color"], linewidth=STYLE["grid.linewidth"])

    def redraw(self) -> None:
        """Throttled redraw: coalesces many calls into one paint. A hidden canvas (another tab)
        only remembers that it is stale: drawing costs tens of ms of the GUI thread."""
        if not self.isVisible():
            self._stale = True
            return
        self._stale = False
        self.draw_idle()

    def draw_idle(self) -> None:
        """Full draws at most every MIN_DRAW_INTERVAL_MS: the requests in between (a new curve,
        a resize, a placeholder message) make one draw at the end of the interval. Each draw
        holds the GUI thread for 20-70 ms; back to back they would add up to one long stall."""
        if self._draw_timer.isActive():
            return
        wait_ms = MIN_DRAW_INTERVAL_MS - (time.monotonic() - self._last_full_draw) * 1000
        if wait_ms <= 0:
            super().draw_idle()
        else:
            self._draw_timer.start(int(wait_ms) + 1)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if self._stale:
            self.redraw()

    # ------------------------------------------------------------------ blitting
    def set_animated(self, artists: list) -> None:
        """The artists `blit_animated` repaints; they are left out of the saved background."""
        for artist in artists:
            artist.set_animated(True)
        self._animated = list(artists)
        self._background = None

    def _drawn(self, _event) -> None:
        """After a full draw: keep the background, draw the animated artists on top."""
        self.full_draws += 1
        self._last_full_draw = time.monotonic()
        if self._animated:
            self._background = self.copy_from_bbox(self.figure.bbox)
            for artist in self._animated:
                self.figure.draw_artist(artist)

    def blit_animated(self) -> None:
        """Repaint only the animated artists (a full redraw when there is no background yet)."""
        if self._background is None or not self.isVisible():
            self.redraw()
            return
        self.restore_region(self._background)
        for artist in self._animated:
            self.figure.draw_artist(artist)
        self.blit(self.figure.bbox)
        self.blits += 1

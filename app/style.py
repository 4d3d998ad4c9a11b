"""Style constants shared by the panels: one place for the look and the recurring tips."""

from __future__ import annotations

from PySide6.QtCore import QSize

MUTED = "color: #6b7075;"              # secondary text: counts, hints, status lines
WARNING = "color: #b03a2e;"            # a status line that needs attention
THUMB = QSize(96, 72)                  # a thumbnail tile: audit grid, film strip, frame browser
BUSY_TIP = "A job is running; this is available again when it ends (or Cancel it)."
NO_PROJECT_TIP = "Open or create a project first."

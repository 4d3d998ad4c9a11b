"""The Predict panel's message row: the last few problems (skipped files, a failed export) in
one dismissable block, the full messages in its tooltip."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QToolButton, QWidget

from app.style import WARNING

SHOWN_LINES = 6


class MessageRow(QWidget):
    """A warning text with a dismiss button; hidden while there is nothing to say."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.label.setStyleSheet(WARNING)
        self.dismiss_button = QToolButton()
        self.dismiss_button.setText("\u00d7")
        self.dismiss_button.setAutoRaise(True)
        self.dismiss_button.setToolTip("Dismiss these messages")
        self.dismiss_button.clicked.connect(lambda: self.set_message(""))
        layout.addWidget(self.label, 1)
        layout.addWidget(self.dismiss_button, 0, Qt.AlignTop)
        self.hide()

    def set_message(self, text: str, details: str = "") -> None:
        """Show `text` (hide the row when empty); `details` go to the tooltip."""
        self.label.setText(text)
        self.label.setToolTip(details or text)
        self.setVisible(bool(text))

    def add_lines(self, lines: Sequence[str], details: str = "") -> None:
        """Add lines below those shown, keeping the last few."""
        previous = [line for line in self.label.text().split("\n") if line]
        self.set_message("\n".join((previous + list(lines))[-SHOWN_LINES:]), details)

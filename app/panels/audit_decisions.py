"""The audit panel's decisions: the row under the grid (keys, "next after deciding", undo and
redo) and the short locked writes behind it, each decision one undoable step."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QToolButton, QWidget

from app.style import MUTED
from app.workers import is_alive
from ussl_core.errors import ProjectLockedError, UsslError
from ussl_core.views.audit import AuditTable

BUSY_MESSAGE = "A job is running: decisions and selection are paused until it finishes."
PAST = {"approve": "approved", "reject": "rejected", "clear": "cleared"}

WriteDecisions = Callable[[int, list[int], list[str]], bool]


class DecisionCommand(QUndoCommand):
    """One decision on one or more masks; redo sets it, undo restores what each had."""

    def __init__(self, write: WriteDecisions, producer_id: int, frame_ids: list[int],
                 previous: list[str], decision: str) -> None:
        n = len(frame_ids)
        super().__init__(f"{decision} {n} mask{'s' if n != 1 else ''}")
        self.write = write
        self.producer_id = producer_id
        self.frame_ids = frame_ids
        self.previous = previous
        self.decision = decision
        self._done = True   # written before it was pushed: the push's redo is a no-op

    def redo(self) -> None:
        if self._done:
            self._done = False
            return
        self.write(self.producer_id, self.frame_ids, [self.decision] * len(self.frame_ids))

    def undo(self) -> None:
        self.write(self.producer_id, self.frame_ids, self.previous)


class DecisionBar(QWidget):
    """Decisions with undo and redo, written through `context.write` (refused, with a message,
    while a job holds the project). The panel shows what was written (`written`) and says what
    `said` tells."""

    written = Signal(int, object, object)   # producer_id, frame ids, decision names
    said = Signal(str, bool)                # message, warn
    history_lost = Signal()                 # an undo or redo could not be written: re-read

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.writing = False                # our own write is in progress (its change is shown)
        self.undo_stack = QUndoStack(self)
        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcut(QKeySequence("Ctrl+Z"))
        self.undo_action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.undo_action.triggered.connect(self.undo)
        self.redo_action = QAction("Redo", self)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.redo_action.triggered.connect(self.redo)
        self.undo_button = QToolButton()
        self.undo_button.setDefaultAction(self.undo_action)
        self.redo_button = QToolButton()
        self.redo_button.setDefaultAction(self.redo_action)
        self.advance_check = QCheckBox("next after deciding")
        self.advance_check.setChecked(True)
        self.advance_check.setToolTip("After A, R or U on one mask, move to the next one")
        keys = QLabel("<b>A</b> approve · <b>R</b> reject · <b>U</b> clear · <b>Space</b> enlarge")
        keys.setStyleSheet(MUTED)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(6)
        row.addWidget(keys)
        row.addStretch(1)
        row.addWidget(self.advance_check)
        row.addWidget(self.undo_button)
        row.addWidget(self.redo_button)
        self.undo_stack.canUndoChanged.connect(lambda _: self.update_enabled())
        self.undo_stack.canRedoChanged.connect(lambda _: self.update_enabled())

    def refuse_while_busy(self) -> bool:
        if self.context.busy:
            self.said.emit(BUSY_MESSAGE, True)
            return True
        return False

    def decide(self, table: AuditTable, positions: np.ndarray, decision: str) -> bool:
        """Approve / reject / clear masks of the table (one undoable step). True when they have
        that decision now (written, or already), so the grid may move on."""
        frame_ids = [int(f) for f in table.frame_id[positions]]
        previous = table.decisions_at(positions)
        if all(p == decision for p in previous):
            self.said.emit(f"Already {PAST[decision]}.", False)
            return True
        if not self.write(table.producer_id, frame_ids, [decision] * len(frame_ids)):
            return False
        self.undo_stack.push(DecisionCommand(self._write_from_history, table.producer_id,
                                             frame_ids, previous, decision))
        n = len(frame_ids)
        self.said.emit(f"{PAST[decision].capitalize()} {n:,} mask{'s' if n != 1 else ''}.", False)
        return True

    def write(self, producer_id: int, frame_ids: list[int], decisions: list[str]) -> bool:
        """Store decisions (one short locked write) and show them; False when refused."""
        if self.refuse_while_busy():
            return False
        rows = [(f, producer_id, d, None, None) for f, d in zip(frame_ids, decisions)]
        self.writing = True
        try:
            self.context.write(lambda project: project.set_decisions(rows))
        except ProjectLockedError as exc:
            self.said.emit(f"Cannot store the decision now: {exc}", True)
            return False
        except UsslError as exc:
            self.said.emit(f"Cannot store the decision: {exc}", True)
            return False
        finally:
            self.writing = False
        self.written.emit(producer_id, frame_ids, decisions)
        return True

    def _write_from_history(self, producer_id: int, frame_ids: list[int], decisions: list[str]) -> bool:
        if self.write(producer_id, frame_ids, decisions):
            return True
        # The store and the history no longer agree: start a fresh history from what the store
        # holds (re-read), rather than guess.
        QTimer.singleShot(0, self._history_failed)
        return False

    def _history_failed(self) -> None:
        self.undo_stack.clear()
        self.history_lost.emit()

    def undo(self) -> None:
        if self.refuse_while_busy() or not self.undo_stack.canUndo():
            return
        text = self.undo_stack.undoText()
        self.undo_stack.undo()
        if self.undo_stack.count():
            self.said.emit(f"Undid: {text}.", False)

    def redo(self) -> None:
        if self.refuse_while_busy() or not self.undo_stack.canRedo():
            return
        text = self.undo_stack.redoText()
        self.undo_stack.redo()
        if self.undo_stack.count():
            self.said.emit(f"Redid: {text}.", False)

    def update_enabled(self) -> None:
        if not (is_alive(self) and is_alive(self.undo_stack)):
            return   # being torn down
        busy = self.context.busy
        self.undo_action.setEnabled(not busy and self.undo_stack.canUndo())
        self.redo_action.setEnabled(not busy and self.undo_stack.canRedo())
        self.undo_action.setToolTip(f"Undo {self.undo_stack.undoText()} (Ctrl+Z)"
                                    if self.undo_stack.canUndo() else "Nothing to undo")
        self.redo_action.setToolTip(f"Redo {self.undo_stack.redoText()} (Ctrl+Shift+Z)"
                                    if self.undo_stack.canRedo() else "Nothing to redo")

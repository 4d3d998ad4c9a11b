"""A form built from a settings dataclass (teacher, selection, training ...).

Each field becomes an editor with the field's default: int -> QSpinBox, float ->
QDoubleSpinBox (4 decimals), bool -> QCheckBox, str -> QLineEdit; any other type gets a
QLineEdit holding a Python literal. `values()` returns a dict ready for `SettingsType(**values)`
or a job spec; `set_values(dict)` fills the editors.

A float shown with 4 decimals loses digits (1/3 shows as 0.3333). So that an untouched field
does not silently change a setting (and with it the producer's recorded settings), `values()`
gives back the exact value that was put in whenever the editor still shows it.
"""

from __future__ import annotations

import ast
import dataclasses
import typing

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QAbstractSpinBox, QCheckBox, QDoubleSpinBox, QGridLayout, QLabel,
                               QLineEdit, QSizePolicy, QSpinBox, QWidget)

from ussl_core.settings import Range, field_help, field_range

DECIMALS = 4
INT_LIMIT = 10**9
FLOAT_LIMIT = 1e9


def field_label(name: str) -> str:
    """blur_sigma -> 'Blur sigma'."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _field_types(settings_type: type) -> dict[str, object]:
    try:
        return typing.get_type_hints(settings_type)
    except Exception:  # unresolvable annotations: fall back to what the dataclass recorded
        return {f.name: f.type for f in dataclasses.fields(settings_type)}


def _kind(annotation: object) -> str:
    names = {int: "int", float: "float", bool: "bool", str: "str",
             "int": "int", "float": "float", "bool": "bool", "str": "str"}
    return names.get(annotation, "literal")  # type: ignore[arg-type]


def _default(field: dataclasses.Field) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def _limits(bounds: Range | None, low: float, high: float, step: float) -> tuple:
    """An editor's range: the field's declared range (an open end one step inside), else
    [low, high]."""
    if bounds is None:
        return low, high
    if bounds.low is not None:
        low = bounds.low + (step if bounds.low_open else 0)
    if bounds.high is not None:
        high = bounds.high - (step if bounds.high_open else 0)
    return (float(low), float(high)) if isinstance(step, float) else (int(low), int(high))


class SettingsForm(QWidget):
    """Editors for the fields of a dataclass type, laid out in `columns` label/editor pairs."""

    changed = Signal()

    def __init__(self, settings_type: type, parent: QWidget | None = None, columns: int = 1,
                 tips: dict[str, str] | None = None) -> None:
        super().__init__(parent)
        if not dataclasses.is_dataclass(settings_type):
            raise TypeError(f"{settings_type!r} is not a dataclass type")
        self.settings_type = settings_type
        self._kinds: dict[str, str] = {}
        self._editors: dict[str, QWidget] = {}
        self._defaults: dict[str, object] = {}
        self._exact: dict[str, float] = {}   # float values as given, before 4-decimal rounding
        types = _field_types(settings_type)
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setHorizontalSpacing(6)
        layout.setVerticalSpacing(3)
        fields = [f for f in dataclasses.fields(settings_type) if f.init]
        rows = (len(fields) + columns - 1) // max(columns, 1)
        for i, field in enumerate(fields):
            kind = _kind(types.get(field.name, field.type))
            default = _default(field)
            editor = self._make_editor(kind, default, field_range(field))
            tip = (tips or {}).get(field.name) or field_help(field)
            label = QLabel(field_label(field.name))
            label.setBuddy(editor)
            if tip:
                label.setToolTip(tip)
                editor.setToolTip(tip)
            row, col = i % rows, i // rows
            layout.addWidget(label, row, 2 * col)
            layout.addWidget(editor, row, 2 * col + 1)
            layout.setColumnStretch(2 * col + 1, 1)
            self._kinds[field.name] = kind
            self._editors[field.name] = editor
            self._defaults[field.name] = default
        self.set_values(self._defaults)

    # ------------------------------------------------------------------ editors
    def _make_editor(self, kind: str, default: object, bounds: Range | None) -> QWidget:
        if kind == "bool":
            editor = QCheckBox()
            editor.toggled.connect(self.changed)
        elif kind == "int":
            editor = QSpinBox()
            low = 0 if isinstance(default, int) and default >= 0 else -INT_LIMIT
            editor.setRange(*_limits(bounds, low, INT_LIMIT, 1))
            editor.valueChanged.connect(self.changed)
        elif kind == "float":
            editor = QDoubleSpinBox()
            editor.setDecimals(DECIMALS)
            low = 0.0 if isinstance(default, (int, float)) and default >= 0 else -FLOAT_LIMIT
            editor.setRange(*_limits(bounds, low, FLOAT_LIMIT, 10.0 ** -DECIMALS))
            editor.setStepType(QAbstractSpinBox.AdaptiveDecimalStepType)
            editor.valueChanged.connect(self.changed)
        else:
            editor = QLineEdit()
            editor.textChanged.connect(self.changed)
            if kind == "literal":
                editor.setToolTip("a Python literal, e.g. (1, 2) or 'text'")
            if default is None:   # an optional setting: say that empty means "not given"
                editor.setPlaceholderText("not set")
        if isinstance(editor, QAbstractSpinBox):
            editor.setKeyboardTracking(False)
            editor.setMaximumWidth(110)
            editor.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)
        return editor

    def editor(self, name: str) -> QWidget:
        return self._editors[name]

    def field_names(self) -> list[str]:
        return list(self._editors)

    # ------------------------------------------------------------------ values
    def values(self) -> dict:
        out: dict = {}
        for name, editor in self._editors.items():
            kind = self._kinds[name]
            if kind == "bool":
                out[name] = editor.isChecked()
            elif kind == "int":
                out[name] = int(editor.value())
            elif kind == "float":
                shown = float(editor.value())
                exact = self._exact.get(name)
                out[name] = exact if exact is not None and round(exact, DECIMALS) == shown else shown
            elif kind == "str":
                out[name] = editor.text()
            else:
                text = editor.text().strip()
                try:
                    out[name] = ast.literal_eval(text) if text else None
                except (ValueError, SyntaxError):
                    out[name] = text
        return out

    def set_values(self, values: dict) -> None:
        unknown = sorted(set(values) - set(self._editors))
        if unknown:
            raise ValueError(f"unknown {self.settings_type.__name__} field(s): {', '.join(unknown)}")
        for name, value in values.items():
            editor = self._editors[name]
            kind = self._kinds[name]
            if kind == "bool":
                editor.setChecked(bool(value))
            elif kind == "int":
                editor.setValue(int(value or 0))
            elif kind == "float":
                self._exact[name] = float(value or 0.0)
                editor.setValue(float(value or 0.0))
            elif kind == "str":
                editor.setText("" if value is None else str(value))
            else:
                editor.setText("" if value is None else repr(value))

    def reset(self) -> None:
        """Back to the dataclass's defaults."""
        self.set_values(self._defaults)

    def settings(self):
        """The values as an instance of the dataclass (its own validation applies)."""
        return self.settings_type(**self.values())

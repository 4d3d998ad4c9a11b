"""Options of the settings dataclasses, declared once: default, help text, valid range, choices.

Every settings dataclass (TrainingSettings, SelectionSettings, a teacher's settings, ...) declares
its fields with `option(...)` and calls `check(self)` in `__post_init__`; the CLI's flags, the
GUI's forms and the validation of a job's spec all read the same declaration, so a value outside
its range is refused the same way wherever it comes from, with the range in the message:

    n_components must be at least 1, not -1

Light: no TensorFlow, no Qt.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

from ussl_core.errors import SettingsError


@dataclass(frozen=True)
class Range:
    """An interval of numbers; an open end excludes its bound, a missing one is unbounded."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            if self.low == 0 and self.low_open:
                return "positive"
            return f"{'above' if self.low_open else 'at least'} {low}"
        if self.high is not None:
            return f"{'below' if self.high_open else 'at most'} {high}"
        return "a number"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def option(default, help: str = "", *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, choices: tuple | None = None):
    """A settings field: its default, the help the CLI and the GUI show, the range a number must
    lie in (ends closed unless said open) and the choices a text must be one of."""
    bounds = Range(low, high, low_open, high_open) if low is not None or high is not None else None
    return dataclasses.field(default=default, metadata={"help": help, "range": bounds,
                                                        "choices": choices})


def field_range(item: dataclasses.Field) -> Range | None:
    return item.metadata.get("range")


def field_help(item: dataclasses.Field) -> str:
    """The help text with the valid range, as the CLI and the GUI's tooltips show it."""
    text = item.metadata.get("help", "")
    bounds = field_range(item)
    return f"{text}; {bounds}".strip("; ") if bounds is not None else text


def _types(settings_type: type) -> dict[str, object]:
    return typing.get_type_hints(settings_type)


def _accepts_none(annotation: object) -> bool:
    return type(None) in typing.get_args(annotation)


def _base(annotation: object) -> object:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def check(settings) -> None:
    """Refuse a value of the wrong kind, outside its range, or not among its choices
    (SettingsError naming the field, the valid range and the value)."""
    types = _types(type(settings))
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        annotation = types.get(item.name)
        if value is None and _accepts_none(annotation):
            continue
        kind = _base(annotation)
        if kind is bool:
            if not isinstance(value, bool):
                raise SettingsError(f"{item.name} must be true or false, not {value!r}")
            continue
        if kind in (int, float):
            _check_number(item, value, kind)
            continue
        choices = item.metadata.get("choices")
        if choices and value not in choices:
            raise SettingsError(f"{item.name} must be one of {', '.join(map(str, choices))}, not {value!r}")


def _check_number(item: dataclasses.Field, value, kind: object) -> None:
    whole = kind is int
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
        raise SettingsError(f"{item.name} must be {'a whole number' if whole else 'a number'}, not {value!r}")
    bounds = field_range(item)
    if math.isnan(value) or math.isinf(value) or (bounds is not None and value not in bounds):
        what = bounds if bounds is not None else "a finite number"
        raise SettingsError(f"{item.name} must be {what}, not {value!r}")

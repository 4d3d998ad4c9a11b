"""Teachers: VideoPCA (generation 1), MOG2 for comparison, and later the student pool."""

from dataclasses import fields

from ussl_core.errors import SettingsError

from ussl_core.teacher.base import Teacher, mask_score
from ussl_core.teacher.mog2 import MOG2Settings, MOG2Teacher
from ussl_core.teacher.videopca import VideoPCASettings, VideoPCATeacher

TEACHERS: dict[str, type[Teacher]] = {t.name: t for t in (VideoPCATeacher, MOG2Teacher)}


def make_teacher(name: str, settings: dict | None = None) -> Teacher:
    """A teacher by name, with settings given as a dict of its settings dataclass's fields."""
    if name not in TEACHERS:
        raise SettingsError(f"unknown teacher {name!r}; choose from {', '.join(TEACHERS)}")
    cls = TEACHERS[name]
    if settings is not None and not isinstance(settings, dict):
        raise SettingsError(f"{name} settings must be a JSON object such as {{\"blur_sigma\": 3}}, "
                            f"not {type(settings).__name__}")
    known = {f.name for f in fields(cls.settings_type)}
    unknown = sorted(set(settings or {}) - known)
    if unknown:
        raise SettingsError(f"unknown {name} setting(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
    try:
        return cls(cls.settings_type(**(settings or {})))
    except (TypeError, SettingsError) as exc:   # a value out of range or of the wrong kind
        raise SettingsError(f"{name} settings: {exc}") from None


__all__ = ["TEACHERS", "MOG2Settings", "MOG2Teacher", "Teacher", "VideoPCASettings",
           "VideoPCATeacher", "make_teacher", "mask_score"]

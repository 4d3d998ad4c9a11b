"""app.gc_policy: the long-lived objects leave the garbage collector's sight, so that a full
collection (which holds the GIL, whichever thread triggers it) walks only the newer ones."""

import gc
import os
import sys
import types

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app import gc_policy  # noqa: E402
from app.window import MainWindow  # noqa: E402


def test_building_the_window_freezes_what_lives_as_long_as_the_process(qtbot):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    window = MainWindow()
    qtbot.addWidget(window)
    frozen = gc.get_freeze_count()
    tracked = len(gc.get_objects())   # what a full collection walks now
    assert frozen > 50_000            # modules, classes and functions of Qt, NumPy, matplotlib ...
    assert tracked < frozen / 2


def tracked(obj) -> bool:
    """Whether the collector still walks obj (frozen objects are out of its generations)."""
    return any(candidate is obj for candidate in gc.get_objects())


def test_freeze_after_import_freezes_once_and_only_once_the_module_is_loaded(monkeypatch):
    monkeypatch.setattr(gc_policy, "_frozen_after", set())
    gc.unfreeze()
    early = [object()]
    gc_policy.freeze_after_import("ussl_heavy_library_for_test")   # not imported: nothing
    assert tracked(early)
    monkeypatch.setitem(sys.modules, "ussl_heavy_library_for_test",
                        types.ModuleType("ussl_heavy_library_for_test"))
    gc_policy.freeze_after_import("ussl_heavy_library_for_test")
    assert not tracked(early)                    # frozen with everything alive then
    later = [object()]
    gc_policy.freeze_after_import("ussl_heavy_library_for_test")
    assert tracked(later)                        # the second call froze nothing

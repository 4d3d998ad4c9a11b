"""Keep Python's full garbage collections short, so that they do not freeze the window.

A full (generation-2) collection walks every object the collector tracks and holds the GIL
throughout, whichever thread triggered it. With Qt, matplotlib, NumPy and OpenCV imported the
GUI process tracks ~300,000 objects, ~400,000 once TensorFlow is loaded for predictions; one
full collection then took 190-275 ms on a 2-core CPU, and the GUI stalled that long whenever
a reader thread's allocations happened to trigger one. Almost all of those objects (modules,
classes, functions, widgets) live as long as the process: `gc.freeze` moves them out of the
collector's sight, and later collections walk only what came after (~50,000 objects, 35-75 ms).
"""

from __future__ import annotations

import gc
import sys

_frozen_after: set[str] = set()


def freeze_long_lived() -> None:
    """Exclude everything alive now from future collections (call once the window is built)."""
    gc.freeze()


def freeze_after_import(module: str) -> None:
    """Freeze once after a heavy library (TensorFlow) was first imported into this process."""
    if module in sys.modules and module not in _frozen_after:
        _frozen_after.add(module)
        gc.freeze()

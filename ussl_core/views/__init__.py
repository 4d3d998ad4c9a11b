"""The Qt-free state of the desktop panels: reading the store, shaping rows, rendering overlays,
exporting. Each module serves one panel and is tested without Qt; the panel keeps only widgets
and wiring. Light: no TensorFlow at import time."""

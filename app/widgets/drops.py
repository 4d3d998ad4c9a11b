"""What was dragged onto a widget: the local files and folders of a drag-and-drop."""

from __future__ import annotations

from pathlib import Path


def dropped_paths(event) -> list[Path]:
    """The local paths a drag or drop event carries (none for text, remote URLs...)."""
    mime = event.mimeData()
    if mime is None or not mime.hasUrls():
        return []
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]

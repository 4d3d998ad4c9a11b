"""Render resources/icons/ussl.svg into the PNG and ICO set the bundle and the desktop entry use.

    python packaging/make_icons.py [--force]

Writes resources/icons/hicolor/NxN/apps/ussl.png for each size in SIZES (the freedesktop icon
theme layout, so installing is one copy into ~/.local/share/icons/hicolor) and
resources/icons/ussl.ico (every size, PNG-compressed entries; Windows uses it for the
executable). Rendering is Qt's own SVG renderer, offscreen, so no display and no extra package
is needed. Existing files are kept unless --force is given: the PNGs are committed artwork.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ICONS = ROOT / "resources" / "icons"
SVG = ICONS / "ussl.svg"
ICO = ICONS / "ussl.ico"
SIZES = (16, 24, 32, 48, 64, 128, 256)


def png_path(size: int, icons: Path = ICONS) -> Path:
    return icons / "hicolor" / f"{size}x{size}" / "apps" / "ussl.png"


def render_png(svg: Path, size: int) -> bytes:
    """The SVG rendered at size x size with a transparent background, as PNG bytes."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    image = QImage(size, size, QImage.Format_ARGB32_Premultiplied)
    image.fill(Qt.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.setRenderHint(QPainter.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return bytes(data)


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """A Windows .ico holding each PNG as its own entry (PNG entries are valid since Vista)."""
    sizes = sorted(pngs)
    header = struct.pack("<HHH", 0, 1, len(sizes))
    offset = len(header) + 16 * len(sizes)
    entries, blobs = b"", b""
    for size in sizes:
        blob = pngs[size]
        side = 0 if size >= 256 else size  # 0 means 256 in an ICO directory entry
        entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(blob), offset)
        blobs += blob
        offset += len(blob)
    return header + entries + blobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="render again over existing files")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841 (kept alive)
    pngs = {}
    for size in SIZES:
        path = png_path(size)
        if path.exists() and not args.force:
            pngs[size] = path.read_bytes()
            continue
        pngs[size] = render_png(SVG, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pngs[size])
        print(f"wrote {path.relative_to(ROOT)}")
    if args.force or not ICO.exists():
        ICO.write_bytes(ico_bytes(pngs))
        print(f"wrote {ICO.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

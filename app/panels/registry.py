"""The panels of the main window, in tab order. Each is a QWidget built as Panel(context)
with a class attribute `title`."""

from app.panels.audit import AuditPanel
from app.panels.videos import VideosPanel

PANELS: list[type] = [VideosPanel, AuditPanel]

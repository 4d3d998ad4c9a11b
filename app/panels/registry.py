"""The panels of the main window, in tab order. Each is a QWidget built as Panel(context)
with a class attribute `title`."""

from app.panels.audit import AuditPanel
from app.panels.browser import BrowserPanel
from app.panels.generations import GenerationsPanel
from app.panels.predict import PredictPanel
from app.panels.training import TrainingPanel
from app.panels.videos import VideosPanel

PANELS: list[type] = [VideosPanel, AuditPanel, TrainingPanel, GenerationsPanel, PredictPanel,
                      BrowserPanel]

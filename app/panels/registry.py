"""The panels of the main window, in tab order. Each is a QWidget built as Panel(context)
with a class attribute `title`."""

PANELS: list[type] = []

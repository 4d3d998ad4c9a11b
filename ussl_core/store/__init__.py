"""The project store: SQLite catalog + HDF5 shards + models, crash-safe, one writer at a time."""

from ussl_core.store.lock import lock_holder
from ussl_core.store.project import AREAS, Frame, Mask, Producer, Project, Shot, Video, changed_areas

__all__ = ["AREAS", "Frame", "Mask", "Producer", "Project", "Shot", "Video", "changed_areas", "lock_holder"]

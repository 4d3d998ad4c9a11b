"""The project store: SQLite catalog + HDF5 shards + models, crash-safe, one writer at a time."""

from ussl_core.store.lock import lock_holder
from ussl_core.store.project import Frame, Mask, Producer, Project, Shot, Video

__all__ = ["Frame", "Mask", "Producer", "Project", "Shot", "Video", "lock_holder"]

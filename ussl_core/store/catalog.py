"""The SQLite catalog of a project: schema, migrations, connection settings.

WAL mode lets readers (the GUI, `ussl status`) look while one writer works. Every change of
the schema is a new entry in MIGRATIONS; opening an older project applies the missing ones.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ussl_core.errors import ProjectError

SCHEMA_V1 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE videos(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, source TEXT NOT NULL,
    frame_count INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, fps REAL,
    gt_source TEXT, added_at TEXT NOT NULL);
CREATE TABLE shots(
    id INTEGER PRIMARY KEY, video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, start INTEGER NOT NULL, stop INTEGER NOT NULL, frames_shard TEXT,
    UNIQUE(video_id, idx));
CREATE TABLE frames(
    id INTEGER PRIMARY KEY, video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    shot_id INTEGER NOT NULL REFERENCES shots(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, name TEXT NOT NULL, gt_path TEXT, UNIQUE(video_id, idx));
CREATE INDEX frames_by_shot ON frames(shot_id, idx);
CREATE TABLE producers(
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    generation INTEGER NOT NULL, settings TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL);
CREATE TABLE mask_shards(
    producer_id INTEGER NOT NULL REFERENCES producers(id) ON DELETE CASCADE,
    shot_id INTEGER NOT NULL REFERENCES shots(id) ON DELETE CASCADE,
    path TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY(producer_id, shot_id));
CREATE TABLE masks(
    frame_id INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    producer_id INTEGER NOT NULL REFERENCES producers(id) ON DELETE CASCADE,
    score REAL NOT NULL, shard TEXT NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY(frame_id, producer_id));
CREATE INDEX masks_by_producer ON masks(producer_id, score);
CREATE TABLE decisions(
    id INTEGER PRIMARY KEY, frame_id INTEGER NOT NULL, producer_id INTEGER NOT NULL,
    decision TEXT NOT NULL CHECK(decision IN ('approve', 'reject', 'clear')),
    reason TEXT, time TEXT NOT NULL, undone INTEGER NOT NULL DEFAULT 0);
CREATE INDEX decisions_by_mask ON decisions(frame_id, producer_id);
CREATE TABLE selections(
    id INTEGER PRIMARY KEY, producer_id INTEGER NOT NULL REFERENCES producers(id),
    method TEXT NOT NULL, value REAL NOT NULL, per_video INTEGER NOT NULL,
    n_selected INTEGER NOT NULL, n_approved_added INTEGER NOT NULL,
    n_rejected_removed INTEGER NOT NULL, created_at TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1);
CREATE TABLE selection_members(
    selection_id INTEGER NOT NULL REFERENCES selections(id) ON DELETE CASCADE,
    frame_id INTEGER NOT NULL, producer_id INTEGER NOT NULL,
    PRIMARY KEY(selection_id, frame_id, producer_id));
CREATE TABLE jobs(
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, args TEXT NOT NULL, pid INTEGER,
    status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT, log TEXT, message TEXT);
"""

# Version 2: selections of later generations hold candidates of several producers (the
# students); each selection records its generation and a description of where it came from.
SCHEMA_V2 = """
ALTER TABLE selections ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE selections ADD COLUMN source TEXT;
"""

# MIGRATIONS[i] takes a catalog from schema version i to i + 1.
MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2]
SCHEMA_VERSION = len(MIGRATIONS)


CatalogError = sqlite3.Error   # what a damaged or unwritable catalog raises, for error boundaries


def connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """Open the catalog with WAL, foreign keys and a busy timeout; autocommit outside `transaction`.
    `read_only` on a project the user may not write (a read-only disk, another user's folder):
    opened as immutable, since WAL needs to write even to read."""
    path = Path(path)
    try:
        if read_only and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            return conn
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as exc:
        raise ProjectError(f"{path}: the catalog is unreadable ({exc}); nothing was changed") from None
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic write: all of it lands or, on an error or a kill, none of it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the catalog to SCHEMA_VERSION, one migration per transaction."""
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise ProjectError(
            f"{path}: project schema version {version} is newer than this ussl understands "
            f"({SCHEMA_VERSION}); update ussl")
    for target in range(version, SCHEMA_VERSION):
        with transaction(conn):
            for statement in _statements(MIGRATIONS[target]):
                conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)",
                         (str(target + 1),))


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]

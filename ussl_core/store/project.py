"""A project on disk: catalog + array shards + models + logs, in one folder.

    project.sqlite      catalog (see catalog.py)
    project.lock        the write lock (see lock.py)
    arrays/frames/      frames of each shot at the working size, one shard per shot
    arrays/masks/<producer>/  soft masks (uint8, 0..255) of one producer, one shard per shot
    models/             trained models (.keras + JSON card)
    logs/               one log file per job
    cache/              derived data that may be deleted at any time

Readers open a Project freely; writing needs `Project.open(..., write=True)`, which takes the
lock. Paths to source media are stored relative to the project folder where possible.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ussl_core.errors import ProjectError
from ussl_core.store import catalog, model_files
from ussl_core.store.catalog import transaction
from ussl_core.store.lock import ProjectLock, lock_holder
from ussl_core.store.shards import read_shard, remove_temporaries
from ussl_core.testhooks import crash_point

CATALOG_NAME = "project.sqlite"
DEFAULT_WORKING_SIZE = (300, 300)
DECISIONS = ("approve", "reject", "clear")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _count_change(c, table: str) -> None:
    """Bump a table's revision (see Project.revisions), for writes its row counts and ids miss."""
    c.execute("INSERT INTO meta(key, value) VALUES(?, '1') ON CONFLICT(key) "
              "DO UPDATE SET value = CAST(value AS INTEGER) + 1", (f"{table}_revision",))


@dataclass(frozen=True)
class Video:
    id: int
    name: str
    kind: str
    source: str
    frame_count: int
    width: int
    height: int
    fps: float | None
    gt_source: str | None


@dataclass(frozen=True)
class Shot:
    id: int
    video_id: int
    idx: int
    start: int
    stop: int
    frames_shard: str | None

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Frame:
    id: int
    video_id: int
    shot_id: int
    idx: int
    name: str
    gt_path: str | None


@dataclass(frozen=True)
class Mask:
    frame_id: int
    producer_id: int
    score: float
    shard: str
    row: int
    video_id: int
    shot_id: int


@dataclass(frozen=True)
class Producer:
    id: int
    name: str
    kind: str
    generation: int
    settings: dict



def _resolved(root: str | os.PathLike) -> Path:
    """The project folder's absolute path; a link loop is a ProjectError, not a crash."""
    try:
        return Path(root).resolve()
    except (RuntimeError, OSError):   # "Symlink loop" (RuntimeError before Python 3.13)
        raise ProjectError(f"{root}: too many symbolic links (a link loop?)") from None


def _check_catalog(conn, path: Path) -> None:
    """Refuse a catalog that is empty, truncated or not ussl's, before anything writes to it:
    "upgrading" it would start an empty project over the user's masks and decisions."""
    import sqlite3

    try:
        version = catalog.schema_version(conn)
    except sqlite3.DatabaseError as exc:
        raise ProjectError(f"{path}: the catalog is unreadable ({exc}); nothing was changed. Restore "
                           "it from a backup (the frames and masks under arrays/ are untouched)") from None
    if version == 0:
        raise ProjectError(f"{path}: the catalog is empty or not a ussl catalog; nothing was changed. "
                           "Restore it from a backup (the frames and masks under arrays/ are untouched)")

AREAS = ("videos", "masks", "decisions", "selections", "models")


def changed_areas(before: dict[str, tuple] | None, after: dict[str, tuple] | None) -> frozenset[str]:
    """The areas whose revisions differ (all of them when either side is unknown)."""
    if before is None or after is None:
        return frozenset(AREAS)
    return frozenset(area for area in AREAS if before.get(area) != after.get(area))


class Project:
    def __init__(self, root: Path, conn, lock: ProjectLock | None) -> None:
        self.root = root
        self.conn = conn
        self._lock = lock

    # ----------------------------------------------------------------- open / close
    @classmethod
    def create(cls, root: str | os.PathLike, holder: str = "ussl init") -> "Project":
        root = _resolved(root)
        if (root / CATALOG_NAME).exists():
            raise ProjectError(f"{root}: a project already exists here")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("arrays", "models", "logs", "cache"):
            (root / sub).mkdir(exist_ok=True)
        project = cls.open(root, write=True, holder=holder, _creating=True)
        with transaction(project.conn):
            project._set_meta("created_at", now())
            project._set_meta("working_size", json.dumps(list(DEFAULT_WORKING_SIZE)))
        return project

    @classmethod
    def open(cls, root: str | os.PathLike, write: bool = False, holder: str = "ussl",
             _creating: bool = False) -> "Project":
        root = _resolved(root)
        path = root / CATALOG_NAME
        if not _creating and not path.exists():
            what = "does not exist" if not root.exists() else "is not a ussl project (no project.sqlite)"
            raise ProjectError(f"{root}: {what}; create one with `ussl init {root}`")
        if not _creating and path.stat().st_size == 0:   # before SQLite would write a header into it
            raise ProjectError(f"{path}: the catalog is empty (0 bytes); nothing was changed. Restore it "
                               "from a backup (the frames and masks under arrays/ are untouched)")
        lock = None
        if write:
            lock = ProjectLock(root, holder)
            lock.acquire()
        conn = None
        try:
            conn = catalog.connect(path, read_only=not write)
            if not _creating:
                _check_catalog(conn, path)
            if write:
                catalog.migrate(conn, path)
                for sub in ("arrays", "models", "logs", "cache"):
                    (root / sub).mkdir(exist_ok=True)
                remove_temporaries(root / "arrays")
                model_files.remove_temporaries(root / model_files.MODELS_FOLDER)
            else:
                version = catalog.schema_version(conn)
                if version > catalog.SCHEMA_VERSION:
                    raise ProjectError(
                        f"{path}: project schema version {version} is newer than this ussl "
                        f"understands ({catalog.SCHEMA_VERSION}); update ussl")
                if version != catalog.SCHEMA_VERSION:
                    raise ProjectError(f"{root}: project needs an upgrade; open it once for writing")
        except BaseException:
            if conn is not None:
                conn.close()
            if lock:
                lock.release()
            raise
        return cls(root, conn, lock)

    def close(self) -> None:
        self.conn.close()
        if self._lock:
            self._lock.release()

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        return self._lock is not None and self._lock.held

    def require_writable(self) -> None:
        if not self.writable:
            raise ProjectError(f"{self.root}: opened read-only; this step needs the write lock")

    def lock_holder(self) -> dict | None:
        return None if self.writable else lock_holder(self.root)

    # ----------------------------------------------------------------- paths and meta
    def relpath(self, path: str | os.PathLike) -> str:
        """Store `path` relative to the project when it can be, absolute otherwise."""
        path = Path(path).resolve()
        try:
            return os.path.relpath(path, self.root)
        except ValueError:  # another drive
            return str(path)

    def abspath(self, stored: str) -> Path:
        # The root is resolved and `relpath` stored a resolved path, so normalising suffices;
        # resolve() would walk the file system for each of thousands of frames.
        return Path(os.path.normpath(os.path.join(self.root, stored)))

    @property
    def working_size(self) -> tuple[int, int]:
        w, h = json.loads(self.meta("working_size", json.dumps(list(DEFAULT_WORKING_SIZE))))
        return int(w), int(h)

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def set_meta(self, key: str, value: str) -> None:
        self.require_writable()
        with transaction(self.conn):
            self._set_meta(key, value)

    # ----------------------------------------------------------------- videos, shots, frames
    def add_video(self, name: str, kind: str, source: str | os.PathLike, frame_names: list[str],
                  size: tuple[int, int], fps: float | None, shots: list[tuple[int, int]],
                  gt_paths: list[str | None] | None = None,
                  gt_source: str | os.PathLike | None = None) -> int:
        """Record a video, its shots and frames in one transaction; returns the video id."""
        self.require_writable()
        if self.video_by_name(name) is not None:
            raise ProjectError(f"{source}: a video named {name!r} is already in the project")
        gt_paths = gt_paths or [None] * len(frame_names)
        with transaction(self.conn) as c:
            video_id = c.execute(
                "INSERT INTO videos(name, kind, source, frame_count, width, height, fps, gt_source,"
                " added_at) VALUES(?,?,?,?,?,?,?,?,?)",
                (name, kind, self.relpath(source), len(frame_names), size[0], size[1], fps,
                 self.relpath(gt_source) if gt_source else None, now())).lastrowid
            for shot_idx, (start, stop) in enumerate(shots):
                shot_id = c.execute(
                    "INSERT INTO shots(video_id, idx, start, stop) VALUES(?,?,?,?)",
                    (video_id, shot_idx, start, stop)).lastrowid
                c.executemany(
                    "INSERT INTO frames(video_id, shot_id, idx, name, gt_path) VALUES(?,?,?,?,?)",
                    [(video_id, shot_id, i, frame_names[i],
                      self.relpath(gt_paths[i]) if gt_paths[i] else None)
                     for i in range(start, stop)])
        return video_id

    def videos(self) -> list[Video]:
        rows = self.conn.execute(
            "SELECT id, name, kind, source, frame_count, width, height, fps, gt_source "
            "FROM videos ORDER BY id")
        return [Video(*r) for r in rows]

    def video(self, video_id: int) -> Video:
        row = self.conn.execute(
            "SELECT id, name, kind, source, frame_count, width, height, fps, gt_source "
            "FROM videos WHERE id=?", (video_id,)).fetchone()
        if row is None:
            raise ProjectError(f"{self.root}: no video with id {video_id}")
        return Video(*row)

    def video_by_name(self, name: str) -> Video | None:
        row = self.conn.execute("SELECT id FROM videos WHERE name=?", (name,)).fetchone()
        return self.video(row[0]) if row else None

    def shots(self, video_id: int | None = None) -> list[Shot]:
        sql = "SELECT id, video_id, idx, start, stop, frames_shard FROM shots"
        args: tuple = ()
        if video_id is not None:
            sql += " WHERE video_id=?"
            args = (video_id,)
        return [Shot(*r) for r in self.conn.execute(sql + " ORDER BY video_id, idx", args)]

    def frames(self, video_id: int | None = None, shot_id: int | None = None) -> list[Frame]:
        sql = "SELECT id, video_id, shot_id, idx, name, gt_path FROM frames"
        clauses, args = [], []
        if video_id is not None:
            clauses.append("video_id=?")
            args.append(video_id)
        if shot_id is not None:
            clauses.append("shot_id=?")
            args.append(shot_id)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return [Frame(*r) for r in self.conn.execute(sql + " ORDER BY video_id, idx", args)]

    def read_frames(self, shot: Shot, rows: list[int] | None = None) -> np.ndarray:
        """Frames of a shot at the working size (needs the shot's frames shard)."""
        if not shot.frames_shard:
            raise ProjectError(f"{self.root}: shot {shot.id} has no stored frames yet; run the teacher")
        return read_shard(self.abspath(shot.frames_shard), "frames", rows)

    # ----------------------------------------------------------------- producers and masks
    def ensure_producer(self, name: str, kind: str, generation: int,
                        settings: dict | None = None) -> int:
        self.require_writable()
        row = self.conn.execute("SELECT id FROM producers WHERE name=?", (name,)).fetchone()
        if row:
            return int(row[0])
        with transaction(self.conn) as c:
            return int(c.execute(
                "INSERT INTO producers(name, kind, generation, settings, created_at) "
                "VALUES(?,?,?,?,?)",
                (name, kind, generation, json.dumps(settings or {}), now())).lastrowid)

    def producers(self) -> list[Producer]:
        rows = self.conn.execute("SELECT id, name, kind, generation, settings FROM producers ORDER BY id")
        return [Producer(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def producer(self, name: str) -> Producer:
        for p in self.producers():
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.producers()) or "none yet"
        raise ProjectError(f"{self.root}: no masks from producer {name!r} (known: {known})")

    def default_producer(self) -> Producer:
        """The first teacher that produced masks: what selection and purity use unless told."""
        for p in self.producers():
            if p.kind == "teacher" and self.mask_count(p.id):
                return p
        raise ProjectError(f"{self.root}: no teacher masks yet; run `ussl teacher {self.root}`")

    def delete_producer(self, name: str) -> None:
        """Forget a producer: its masks, selections and decisions, then its shard files."""
        self.require_writable()
        producer = self.producer(name)
        with transaction(self.conn) as c:
            c.execute("DELETE FROM selections WHERE producer_id=?", (producer.id,))
            c.execute("DELETE FROM decisions WHERE producer_id=?", (producer.id,))
            c.execute("DELETE FROM producers WHERE id=?", (producer.id,))
            _count_change(c, "masks")
        shutil.rmtree(self.root / "arrays" / "masks" / slug(name), ignore_errors=True)

    def quarantine(self, path: Path) -> Path:
        """Move a file the catalog does not know (or a corrupt one) to PROJECT/quarantine/, at
        its path relative to the project, under a new name if one is there already."""
        self.require_writable()
        target = self.root / "quarantine" / Path(path).resolve().relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while target.exists():
            n += 1
            target = target.with_name(f"{Path(path).stem}.{n}{Path(path).suffix}")
        os.replace(path, target)
        return target

    def completed_shots(self, producer_id: int) -> set[int]:
        rows = self.conn.execute("SELECT shot_id FROM mask_shards WHERE producer_id=?", (producer_id,))
        return {r[0] for r in rows}

    def mask_shard_path(self, producer: str, shot_id: int) -> Path:
        return self.root / "arrays" / "masks" / slug(producer) / f"shot_{shot_id:06d}.h5"

    def frames_shard_path(self, shot_id: int) -> Path:
        return self.root / "arrays" / "frames" / f"shot_{shot_id:06d}.h5"

    def commit_shot_masks(self, producer_id: int, shot: Shot, mask_shard: Path,
                          scores: Iterable[float], frames_shard: Path | None = None) -> None:
        """Record one shot's committed shards and its mask rows, all at once."""
        self.require_writable()
        frame_ids = [f.id for f in self.frames(shot_id=shot.id)]
        scores = list(scores)
        if len(scores) != len(frame_ids):
            raise ProjectError(f"{mask_shard}: {len(scores)} masks for {len(frame_ids)} frames")
        shard_rel = self.relpath(mask_shard)
        with transaction(self.conn) as c:
            if frames_shard is not None:
                c.execute("UPDATE shots SET frames_shard=? WHERE id=?",
                          (self.relpath(frames_shard), shot.id))
                _count_change(c, "shots")
            c.execute("DELETE FROM masks WHERE producer_id=? AND frame_id IN "
                      "(SELECT id FROM frames WHERE shot_id=?)", (producer_id, shot.id))
            rows = [(fid, producer_id, float(s), shard_rel, i)
                    for i, (fid, s) in enumerate(zip(frame_ids, scores))]
            c.executemany("INSERT INTO masks(frame_id, producer_id, score, shard, row) "
                          "VALUES(?,?,?,?,?)", rows[: len(rows) // 2])
            crash_point("catalog-commit")  # the test hook: a kill inside the transaction
            c.executemany("INSERT INTO masks(frame_id, producer_id, score, shard, row) "
                          "VALUES(?,?,?,?,?)", rows[len(rows) // 2:])
            c.execute("INSERT OR REPLACE INTO mask_shards(producer_id, shot_id, path, created_at) "
                      "VALUES(?,?,?,?)", (producer_id, shot.id, shard_rel, now()))
            _count_change(c, "masks")

    def masks(self, producer_id: int, video_id: int | None = None) -> list[Mask]:
        sql = ("SELECT m.frame_id, m.producer_id, m.score, m.shard, m.row, f.video_id, f.shot_id "
               "FROM masks m JOIN frames f ON f.id = m.frame_id WHERE m.producer_id=?")
        args: list = [producer_id]
        if video_id is not None:
            sql += " AND f.video_id=?"
            args.append(video_id)
        return [Mask(*r) for r in self.conn.execute(sql + " ORDER BY f.video_id, f.idx", args)]

    def revisions(self) -> dict[str, tuple]:
        """What each area of the project (AREAS) looks like now, cheaply: equal values mean
        nothing in that area changed. Catalog rows are only inserted and deleted, so a table's
        row count and largest row id move with every change, except for what is added here:
        undone decisions, the active selection, and a revision counted by every write of masks
        (a teacher re-run deletes its producer and writes the masks again under reused row ids)
        and of a shot's stored frames. Models: their files' names, sizes and times."""
        query = self.conn.execute

        def rows(table: str) -> tuple:
            return tuple(query(f"SELECT COUNT(*), MAX(rowid) FROM {table}").fetchone())

        return {
            "videos": (rows("videos"), rows("shots"), rows("frames"), self.meta("shots_revision", "0")),
            "masks": (rows("producers"), rows("masks"), self.meta("masks_revision", "0")),
            "decisions": (rows("decisions"),
                          query("SELECT COUNT(*) FROM decisions WHERE undone=1").fetchone()[0]),
            "selections": (rows("selections"),
                           query("SELECT MAX(id) FROM selections WHERE active=1").fetchone()[0]),
            "models": model_files.revision(self.root),
        }

    def mask_count(self, producer_id: int) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM masks WHERE producer_id=?",
                                 (producer_id,)).fetchone()[0]

    def read_masks(self, masks: list[Mask]) -> Iterator[tuple[Mask, np.ndarray]]:
        """Yield (mask record, soft mask float32 in [0, 1]) reading each shard once."""
        by_shard: dict[str, list[Mask]] = {}
        for m in masks:
            by_shard.setdefault(m.shard, []).append(m)
        for shard, group in by_shard.items():
            data = read_shard(self.abspath(shard), "masks", [m.row for m in group])
            for m, arr in zip(group, data):
                yield m, arr.astype(np.float32) / 255.0

    def read_mask(self, mask: Mask) -> np.ndarray:
        return read_shard(self.abspath(mask.shard), "masks", mask.row).astype(np.float32) / 255.0

    # ----------------------------------------------------------------- decisions
    def set_decision(self, frame_id: int, producer_id: int, decision: str,
                     reason: str | None = None, time_: str | None = None) -> None:
        """Record approve / reject / clear for one mask; the log keeps every step for undo."""
        self.set_decisions([(frame_id, producer_id, decision, reason, time_)])

    def set_decisions(self, rows: list[tuple[int, int, str, str | None, str | None]]) -> None:
        """Record (frame_id, producer_id, decision, reason, time) rows in one transaction."""
        self.require_writable()
        for row in rows:
            if row[2] not in DECISIONS:
                raise ProjectError(f"decision must be one of {', '.join(DECISIONS)}, not {row[2]!r}")
        with transaction(self.conn) as c:
            # A new decision ends the redo history, as in any editor.
            c.execute("DELETE FROM decisions WHERE undone=1")
            c.executemany("INSERT INTO decisions(frame_id, producer_id, decision, reason, time) "
                          "VALUES(?,?,?,?,?)",
                          [(f, p, d, r, t or now()) for f, p, d, r, t in rows])

    def undo_decision(self) -> tuple[int, int] | None:
        """Undo the latest decision; returns its (frame_id, producer_id) or None if none."""
        self.require_writable()
        with transaction(self.conn) as c:
            row = c.execute("SELECT id, frame_id, producer_id FROM decisions WHERE undone=0 "
                            "ORDER BY id DESC LIMIT 1").fetchone()
            if row is None:
                return None
            c.execute("UPDATE decisions SET undone=1 WHERE id=?", (row[0],))
        return row[1], row[2]

    def redo_decision(self) -> tuple[int, int] | None:
        self.require_writable()
        with transaction(self.conn) as c:
            row = c.execute("SELECT id, frame_id, producer_id FROM decisions WHERE undone=1 "
                            "ORDER BY id ASC LIMIT 1").fetchone()
            if row is None:
                return None
            c.execute("UPDATE decisions SET undone=0 WHERE id=?", (row[0],))
        return row[1], row[2]

    def decisions(self, producer_id: int | None = None) -> dict[tuple[int, int], dict]:
        """Current decision per (frame_id, producer_id): the latest one not undone, unless cleared."""
        sql = ("SELECT d.frame_id, d.producer_id, d.decision, d.reason, d.time FROM decisions d "
               "JOIN (SELECT MAX(id) AS id FROM decisions WHERE undone=0 GROUP BY frame_id, producer_id)"
               " latest ON latest.id = d.id")
        args: tuple = ()
        if producer_id is not None:
            sql += " WHERE d.producer_id=?"
            args = (producer_id,)
        return {(r[0], r[1]): {"decision": r[2], "reason": r[3], "time": r[4]}
                for r in self.conn.execute(sql, args) if r[2] != "clear"}

    # ----------------------------------------------------------------- selections
    def save_selection(self, producer_id: int, method: str, value: float, per_video: bool,
                       frame_ids: list[int], n_approved_added: int, n_rejected_removed: int,
                       members: list[tuple[int, int]] | None = None, generation: int = 1,
                       source: str | None = None) -> int:
        """Store a selection and make it the active one (what training will use).

        `frame_ids` are masks of `producer_id`; `members` (frame_id, producer_id) pairs instead
        hold candidates of several producers (the students of a generation).
        """
        self.require_writable()
        pairs = members if members is not None else [(f, producer_id) for f in frame_ids]
        with transaction(self.conn) as c:
            c.execute("UPDATE selections SET active=0")
            sel_id = c.execute(
                "INSERT INTO selections(producer_id, method, value, per_video, n_selected, "
                "n_approved_added, n_rejected_removed, created_at, active, generation, source) "
                "VALUES(?,?,?,?,?,?,?,?,1,?,?)",
                (producer_id, method, value, int(per_video), len(pairs), n_approved_added,
                 n_rejected_removed, now(), generation, source)).lastrowid
            c.executemany("INSERT INTO selection_members(selection_id, frame_id, producer_id) "
                          "VALUES(?,?,?)", [(sel_id, f, p) for f, p in pairs])
        return int(sel_id)

    def mask_shards(self) -> list[tuple[int, int, str]]:
        """(producer id, shot id, shard path relative to the project) of every committed shot."""
        return [(r[0], r[1], r[2]) for r in
                self.conn.execute("SELECT producer_id, shot_id, path FROM mask_shards ORDER BY producer_id, shot_id")]

    def forget_shot_masks(self, producer_id: int, shot_id: int) -> None:
        """Drop one shot's masks of a producer from the catalog (its shard is broken), so that the
        step that made them computes them again. Human decisions are kept."""
        self.require_writable()
        with transaction(self.conn) as c:
            frames = [r[0] for r in c.execute("SELECT id FROM frames WHERE shot_id=?", (shot_id,))]
            c.executemany("DELETE FROM masks WHERE frame_id=? AND producer_id=?",
                          [(f, producer_id) for f in frames])
            c.execute("DELETE FROM mask_shards WHERE producer_id=? AND shot_id=?", (producer_id, shot_id))
            _count_change(c, "masks")

    def forget_frames_shard(self, shot_id: int) -> None:
        """Drop a shot's stored frames from the catalog (its shard is broken): stored again next time."""
        self.require_writable()
        with transaction(self.conn) as c:
            c.execute("UPDATE shots SET frames_shard=NULL WHERE id=?", (shot_id,))
            _count_change(c, "shots")

    def set_frames_shard(self, shot: Shot, shard: Path) -> None:
        self.require_writable()
        with transaction(self.conn) as c:
            c.execute("UPDATE shots SET frames_shard=? WHERE id=?", (self.relpath(shard), shot.id))
            _count_change(c, "shots")

    def selection(self, selection_id: int) -> dict | None:
        row = self.conn.execute("SELECT * FROM selections WHERE id=?", (selection_id,)).fetchone()
        return dict(row) if row else None

    def active_selection(self) -> dict | None:
        row = self.conn.execute("SELECT * FROM selections WHERE active=1 ORDER BY id DESC LIMIT 1").fetchone()
        return dict(row) if row else None

    def selections(self, generation: int | None = None) -> list[dict]:
        """Every selection made (of one generation, if given), oldest first."""
        if generation is None:
            rows = self.conn.execute("SELECT * FROM selections ORDER BY id")
        else:
            rows = self.conn.execute("SELECT * FROM selections WHERE generation=? ORDER BY id", (generation,))
        return [dict(r) for r in rows]

    def selection_members(self, selection_id: int) -> list[tuple[int, int]]:
        rows = self.conn.execute("SELECT frame_id, producer_id FROM selection_members "
                                 "WHERE selection_id=? ORDER BY frame_id", (selection_id,))
        return [(r[0], r[1]) for r in rows]

    # ----------------------------------------------------------------- jobs and logs
    def start_job(self, kind: str, args: dict) -> tuple[int, Path]:
        """Record a running job and open its log file path (logs/job_<id>_<kind>.log)."""
        self.require_writable()
        with transaction(self.conn) as c:
            # A job still 'running' while we hold the lock was killed: say so.
            c.execute("UPDATE jobs SET status='killed', finished_at=? WHERE status='running'", (now(),))
            job_id = c.execute("INSERT INTO jobs(kind, args, pid, status, started_at) "
                               "VALUES(?,?,?,?,?)",
                               (kind, json.dumps(args), os.getpid(), "running", now())).lastrowid
            log = self.root / "logs" / f"job_{job_id:05d}_{kind}.log"
            c.execute("UPDATE jobs SET log=? WHERE id=?", (self.relpath(log), job_id))
        return int(job_id), log

    def finish_job(self, job_id: int, status: str, message: str = "") -> None:
        with transaction(self.conn) as c:
            c.execute("UPDATE jobs SET status=?, finished_at=?, message=? WHERE id=?",
                      (status, now(), message, job_id))

    def jobs(self, limit: int = 20) -> list[dict]:
        """The latest jobs, newest first; one recorded as running whose process is gone (killed)
        is reported as killed, even before the next writer records it so."""
        rows = [dict(r) for r in self.conn.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))]
        for job in rows:
            if job["status"] == "running" and not _process_alive(job["pid"]):
                job["status"] = "killed"
        return rows

    @contextmanager
    def job(self, kind: str, args: dict) -> Iterator[tuple[int, Path]]:
        """Run a block as a recorded job: done, cancelled or failed, with its log kept."""
        from ussl_core.progress import Cancelled

        job_id, log = self.start_job(kind, args)
        try:
            yield job_id, log
        except (Cancelled, KeyboardInterrupt):
            self.finish_job(job_id, "cancelled", "cancelled by the user")
            raise
        except BaseException as exc:
            self.finish_job(job_id, "failed", str(exc) or type(exc).__name__)
            raise
        self.finish_job(job_id, "done")


def _process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        return True
    return True


def slug(name: str) -> str:
    """A producer or model name as a safe file name."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)

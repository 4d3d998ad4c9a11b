"""Audit panel responsiveness on a project of 100,000 masks; prints JSON.

    QT_QPA_PLATFORM=offscreen python benchmarks/audit_scroll.py [--masks 100000] [--out DIR]

The project is generated straight through the store API (videos, frames and mask shards per
shot, catalog rows per shot, some decisions), with small working-size arrays, and kept in
DIR for the next run (pass --fresh to rebuild it). Running the teacher on 100,000 frames is
not what is measured here.

audit_open_s: from creating the panel on the opened project until every cell of the grid's
first screen shows its thumbnail (first_thumbnail_s: until the first one does).
scroll_*_ms: per step, the time to move the grid's scroll bar by a third of a row (and, in
the second phase, by a page) and process the events that follow (layout, paint, arriving
thumbnails); the thumbnail thread keeps working meanwhile, as it would for a user.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from ussl_core.store import Project  # noqa: E402
from ussl_core.store.shards import commit_shard, write_shard  # noqa: E402
from ussl_core.teacher.base import mask_scores  # noqa: E402

WORKING = (128, 96)    # width, height of the stored frames and masks (small on purpose)
SHOT = 100             # frames per shot
FRAMES_PER_VIDEO = 500


def make_project(root: Path, n_masks: int, seed: int = 0, decided: float = 0.02) -> dict:
    """A project with n_masks teacher masks of synthetic frames, written through the store."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    project = Project.create(root, holder="audit benchmark")
    w, h = WORKING
    project.set_meta("working_size", json.dumps([w, h]))
    producer_id = project.ensure_producer("videopca@g1", "teacher", 1, {"synthetic": True})
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n_videos = max(1, -(-n_masks // FRAMES_PER_VIDEO))
    left = n_masks
    for v in range(n_videos):
        n_frames = min(FRAMES_PER_VIDEO, left)
        left -= n_frames
        shots = [(s, min(s + SHOT, n_frames)) for s in range(0, n_frames, SHOT)]
        names = [f"{i:05d}.jpg" for i in range(n_frames)]
        video_id = project.add_video(f"synthetic-{v:04d}", "frames", root / "media" / f"v{v:04d}",
                                     names, (854, 480), 25.0, shots)
        base = np.stack([(xx / w * 200 + rng.uniform(0, 50)), (yy / h * 160 + rng.uniform(0, 80)),
                         np.full_like(xx, rng.uniform(40, 200))], axis=2)
        for shot in project.shots(video_id):
            n = shot.length
            t = np.arange(n, dtype=np.float32)[:, None, None]
            cx = w * (0.3 + 0.4 * rng.random()) + 10 * np.sin(t / 9)
            cy = h * (0.3 + 0.4 * rng.random()) + 6 * np.cos(t / 7)
            radius = rng.uniform(8, 22)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius ** 2))  # n x h x w
            frames = np.clip(base[None] * (1 - 0.6 * blob[..., None]) + 180 * blob[..., None]
                             * np.array([0.9, 0.5, 0.3], np.float32), 0, 255).astype(np.uint8)
            noise = rng.uniform(0.2, 1.0, (n, 1, 1)).astype(np.float32)
            soft = np.clip(blob * noise + 0.25 * rng.random((n, 1, 1)) * (blob > 0.05), 0, 1)
            masks = np.rint(soft * 255).astype(np.uint8)
            frames_shard = commit_shard(write_shard(project.frames_shard_path(shot.id), "frames",
                                                    frames, compress=True))
            mask_shard = commit_shard(write_shard(project.mask_shard_path("videopca@g1", shot.id),
                                                  "masks", masks, compress=True))
            project.commit_shot_masks(producer_id, shot, mask_shard, mask_scores(masks), frames_shard)
    masks = project.masks(producer_id)
    picks = rng.choice(len(masks), int(len(masks) * decided), replace=False)
    scores = np.array([m.score for m in masks])
    rank = np.argsort(np.argsort(-scores)) / len(masks)   # 0 best .. 1 worst
    # A made-up auditor: approves most of the best masks, rejects most of the worst.
    approve = rng.random(len(masks)) > rank
    project.set_decisions([(masks[i].frame_id, producer_id,
                            "approve" if approve[i] else "reject", None, None) for i in picks])
    project.close()
    return {"masks": len(masks), "videos": n_videos, "generate_s": round(time.perf_counter() - started, 1)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--masks", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/ussl-audit-bench"))
    parser.add_argument("--fresh", action="store_true", help="rebuild the generated project")
    parser.add_argument("--steps", type=int, default=300, help="scroll steps per phase")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    print(json.dumps(measure(parser.parse_args(argv)), indent=2))
    return 0


def measure(args: argparse.Namespace) -> dict:
    """The audit panel's figures on the generated project (made first when missing)."""
    root = args.out / f"project-{args.masks}"
    info: dict = {"masks": args.masks, "working_size": list(WORKING)}
    if args.fresh and root.exists():
        shutil.rmtree(root)
    if not (root / "project.sqlite").exists():
        if root.exists():
            shutil.rmtree(root)
        info.update(make_project(root, args.masks))

    from PySide6.QtCore import QSize
    from PySide6.QtWidgets import QApplication

    from app.context import ProjectContext
    from app.panels.audit import AuditPanel
    from app.widgets.thumbnails import KeyRole

    app = QApplication.instance() or QApplication([])
    context = ProjectContext()
    context.open(root)

    started = time.perf_counter()
    panel = AuditPanel(context)
    panel.resize(QSize(1280, 800))
    panel.show()
    grid = panel.grid
    first = None
    deadline = started + 120

    def visible_keys():
        keys = []
        viewport = grid.viewport().rect()
        for row in range(panel.model.rowCount()):
            rect = grid.visualRect(panel.model.index(row))
            if rect.top() > viewport.bottom():
                break
            if rect.intersects(viewport):
                keys.append(panel.model.index(row).data(KeyRole))
        return keys

    while time.perf_counter() < deadline:
        app.processEvents()
        if panel.model.rowCount() and len(panel.cache):
            first = first or time.perf_counter() - started
            keys = visible_keys()
            if keys and all(k in panel.cache for k in keys):
                break
        time.sleep(0.001)
    open_s = time.perf_counter() - started
    info["rows"] = panel.model.rowCount()
    info["first_screen_cells"] = len(visible_keys())

    # Let the purity curve arrive, then scroll.
    while panel.curve is None and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.005)
    info["curve_source"] = panel.curve.source if panel.curve else None
    info["curve_ready_s"] = round(time.perf_counter() - started, 2)

    bar = grid.verticalScrollBar()
    app.processEvents()

    def scroll(step: int, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            bar.setValue(min(bar.value() + step, bar.maximum()))
            app.processEvents()
            times.append((time.perf_counter() - t0) * 1000)
        return times

    painted = panel.delegate.painted
    small = scroll(max(1, grid.gridSize().height() // 3), args.steps)
    pages = scroll(bar.pageStep(), args.steps)
    jump_times = []
    for fraction in np.linspace(0.05, 0.95, 20):   # jumps across the whole list
        t0 = time.perf_counter()
        bar.setValue(int(bar.maximum() * fraction))
        app.processEvents()
        jump_times.append((time.perf_counter() - t0) * 1000)
    every = small + pages + jump_times

    # Deciding on a mask: the store write and the badge, on the GUI thread.
    decide_times = []
    for _ in range(20):
        t0 = time.perf_counter()
        panel.decide("approve")
        app.processEvents()
        decide_times.append((time.perf_counter() - t0) * 1000)
    # Applying the selection runs in a thread: the time until it is stored.
    applied = []
    panel.selection_applied.connect(lambda: applied.append(time.perf_counter()))
    t0 = time.perf_counter()
    panel.apply_selection()
    while not applied and time.perf_counter() - t0 < 60:
        app.processEvents()
        time.sleep(0.005)
    apply_s = (applied[0] if applied else time.perf_counter()) - t0
    while panel.undo_stack.canUndo():   # leave the generated project's decisions as they were
        panel.undo()

    info.update({
        "audit_open_s": round(open_s, 3),
        "first_thumbnail_s": round(first, 3) if first else None,
        "scroll_p50_ms": round(percentile(every, 50), 2),
        "scroll_p99_ms": round(percentile(every, 99), 2),
        "scroll_max_ms": round(max(every), 2),
        "scroll_small_p99_ms": round(percentile(small, 99), 2),
        "scroll_page_p99_ms": round(percentile(pages, 99), 2),
        "scroll_jump_p99_ms": round(percentile(jump_times, 99), 2),
        "scroll_steps": len(every),
        "cells_painted": panel.delegate.painted - painted,
        "thumbnails_made": panel.loader.rendered,
        "decide_p50_ms": round(percentile(decide_times, 50), 1),
        "decide_max_ms": round(max(decide_times), 1),
        "apply_selection_s": round(apply_s, 2),
        "selected": panel.last_result.n_selected if panel.last_result else None,
    })
    panel.shutdown()
    context.shutdown()
    return info


if __name__ == "__main__":
    sys.exit(main())

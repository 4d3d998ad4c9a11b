"""`ussl check`: find what is missing or corrupt in a project (frame and mask shards, model
cards, checkpoints) and repair it by recomputing exactly that. Broken files are moved to
PROJECT/quarantine/, never deleted; human decisions are never touched.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py

from ussl_core.progress import CancelToken, Progress
from ussl_core.store import model_files
from ussl_core.store.project import Project


@dataclass(frozen=True)
class Problem:
    kind: str                      # "frames", "masks", "model", "card", "checkpoint"
    path: Path
    cause: str
    shot_id: int | None = None
    producer_id: int | None = None

    def line(self, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}: {self.cause}"


def shard_problem(path: Path, dataset: str, rows: int) -> str | None:
    """Why a shard cannot serve `rows` rows of `dataset` (None when it can)."""
    if not path.exists():
        return "missing"
    try:
        with h5py.File(path, "r") as f:
            if dataset not in f:
                return f"corrupt (no {dataset} inside)"
            ds = f[dataset]
            if len(ds) != rows:
                return f"corrupt ({len(ds)} rows for {rows} frames)"
            ds[len(ds) - 1]   # the last row reads: the file is not cut short
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        return f"corrupt or unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return None


def check_project(project: Project, cancel: CancelToken | None = None) -> Iterator[Progress | Problem]:
    """Progress events and, as they are found, the problems of a project."""
    shots = {s.id: s for s in project.shots()}
    mask_shards = project.mask_shards()
    total, done = len(shots) + len(mask_shards) + 1, 0
    for shot in shots.values():
        if cancel:
            cancel.raise_if_cancelled()
        if shot.frames_shard:
            path = project.abspath(shot.frames_shard)
            cause = shard_problem(path, "frames", shot.length)
            if cause:
                yield Problem("frames", path, f"frame shard {cause}", shot_id=shot.id)
        done += 1
        yield Progress(done, total, "frame shards", stage="check")
    for producer_id, shot_id, relpath in mask_shards:
        if cancel:
            cancel.raise_if_cancelled()
        path = project.abspath(relpath)
        cause = shard_problem(path, "masks", shots[shot_id].length)
        if cause:
            yield Problem("masks", path, f"mask shard {cause}", shot_id=shot_id, producer_id=producer_id)
        done += 1
        yield Progress(done, total, "mask shards", stage="check")
    yield from model_problems(model_files.models_folder(project))
    yield Progress(total, total, "models", stage="check")


def model_problems(folder: Path) -> Iterator[Problem]:
    """Models whose file is not a .keras archive or whose card is missing or unreadable, and
    interrupted runs whose checkpoint or state is broken."""
    if not folder.is_dir():
        return
    checkpoints = {p.name[: -len(model_files.CHECKPOINT_SUFFIX)] for p in
                   folder.glob(f"*{model_files.CHECKPOINT_SUFFIX}")}
    states = {p.name[: -len(model_files.STATE_SUFFIX)] for p in folder.glob(f"*{model_files.STATE_SUFFIX}")}
    for model in sorted(folder.glob(f"*{model_files.MODEL_SUFFIX}")):
        if model.name.endswith((model_files.CHECKPOINT_SUFFIX, ".tmp" + model_files.MODEL_SUFFIX)):
            continue
        if not zipfile.is_zipfile(model):
            yield Problem("model", model, "not a .keras archive (empty, truncated or overwritten)")
        elif not model_files.read_card(model):
            yield Problem("card", model_files.card_path(model), "model card missing or unreadable")
    for name in sorted(checkpoints | states):
        paths = model_files.model_paths(folder.parent, name)
        try:
            state = json.loads(paths["state"].read_text())
            broken = not isinstance(state, dict) or "epoch" not in state
        except (OSError, ValueError):
            broken = True
        if broken or not zipfile.is_zipfile(paths["checkpoint"]):
            yield Problem("checkpoint", paths["checkpoint"], "interrupted run with a broken checkpoint "
                          "or state (resuming would fail)")


def repair(project: Project, problems: list[Problem], workers: int | None = None,
           cancel: CancelToken | None = None) -> Iterator[Progress]:
    """Move each broken file to quarantine, forget what it held, and recompute the frames; the
    masks come back with the step that made them (the last event says which to run)."""
    from ussl_core.teacher.runner import store_frames

    project.require_writable()
    kinds = {p.id: p for p in project.producers()}
    masks_to_redo: set[int] = set()
    for problem in problems:
        if problem.path.exists():
            project.quarantine(problem.path)
        if problem.kind == "frames":
            project.forget_frames_shard(problem.shot_id)
        elif problem.kind == "masks":
            project.forget_shot_masks(problem.producer_id, problem.shot_id)
            masks_to_redo.add(problem.producer_id)
        elif problem.kind in ("card", "model"):
            # A model without a usable card (or the reverse) is not a model: both go aside.
            for path in (problem.path.with_suffix(model_files.MODEL_SUFFIX), model_files.card_path(problem.path)):
                if path.exists():
                    project.quarantine(path)
        elif problem.kind == "checkpoint":
            state = problem.path.with_name(problem.path.name.replace(model_files.CHECKPOINT_SUFFIX,
                                                                     model_files.STATE_SUFFIX))
            if state.exists():
                project.quarantine(state)
    yield from store_frames(project, workers, cancel)
    advice = []
    teachers = sorted(kinds[i].name for i in masks_to_redo if kinds[i].kind == "teacher")
    if teachers:
        advice.append("run `ussl teacher` again for " + ", ".join(teachers))
    if any(kinds[i].kind != "teacher" for i in masks_to_redo):
        advice.append("run `ussl next-generation` again for the students' candidates")
    if any(p.kind in ("card", "model") for p in problems):
        advice.append("train the quarantined models again")
    message = f"repaired {len(problems)} problem(s); broken files are in {project.root / 'quarantine'}"
    yield Progress(1, 1, message + ("; " + "; ".join(advice) if advice else ""), stage="repair")

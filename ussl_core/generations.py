"""Algorithm 1 of the paper as resumable steps, generation after generation.

Generation 1: VideoPCA teacher -> selection by score -> students (+ EvalSeg-Net).
Generation g >= 2 (`next_generation`): the generation g-1 students are the teacher. Each
student's mask of each frame is a separate candidate (stored as that student's masks), scored
by the generation g-1 EvalSeg-Net; candidates above a threshold (or the top percent) form the
selection that the generation-g students train on. New unlabeled videos or image folders can be
added first. Every step skips what is already stored, so an interrupted step continues.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ussl_core.cluster import ClusterSpec, DaskPool, open_pool
from ussl_core.errors import ProjectError, SettingsError
from ussl_core.store.model_files import generation_models, read_card, trained_cards
from ussl_core.ingest import SourceSpec, add_sources
from ussl_core.progress import CancelToken, Progress
from ussl_core.selection import (DEFAULT_TOP_PERCENT, THRESHOLD_RANGE, TOP_PERCENT_RANGE, kept_by_score,
                                 settle_keep_rule)
from ussl_core.settings import option
from ussl_core.store import Project
from ussl_core.store.shards import commit_shard, read_shard, write_shard
from ussl_core.teacher.runner import store_frames


@dataclass(frozen=True)
class GenerationSettings:
    # Kept like generation 1's masks (SelectionSettings' defaults): the best 20 % of each video's
    # candidates by EvalSeg-Net score, at most 20 of one video. The paper keeps scores above 0.8.
    threshold: float | None = option(None, "EvalSeg-Net score a candidate must exceed",
                                     **THRESHOLD_RANGE)
    top_percent: float | None = option(None, "or the best P percent of the candidates (the "
                                             f"default rule: {DEFAULT_TOP_PERCENT:g} %)",
                                       **TOP_PERCENT_RANGE)
    per_video: bool = option(True, "the top percent of each video's candidates on its own")
    max_per_video: int | None = option(20, "and at most this many candidates of one video, the "
                                           "best first (none: no cap)", low=1)
    batch: int = option(32, "candidates scored at once", low=1)

    def __post_init__(self) -> None:
        settle_keep_rule(self)


def current_generation(project: Project) -> int:
    return int(project.meta("generation", "1"))


def equal_budget_epochs(project: Project, first_generation_epochs: int) -> int:
    """Epochs for the active selection that give the same image steps as generation 1's
    selection did with `first_generation_epochs` (later generations keep many more candidates)."""
    sizes = [selection["n_selected"] for selection in project.selections()]
    if not sizes:
        return first_generation_epochs
    return max(2, round(first_generation_epochs * sizes[0] / sizes[-1]))


TEACHERS = ("students", "builtin")


def next_generation(project: Project, add: list[SourceSpec] | None = None,
                    settings: GenerationSettings = GenerationSettings(), workers: int | None = None,
                    cancel: CancelToken | None = None, teacher: str = "students",
                    cluster: ClusterSpec | None = None) -> Iterator[Progress]:
    """Make the current generation's students the teacher of the next one; ready to train.
    `cluster`: new frames, candidates and their scores are computed on Dask workers.

    teacher "builtin": the models shipped with ussl become the project's generation 1 first
    (`builtin.install_as_teacher`), so a project reaches generation 2 without training."""
    project.require_writable()
    if teacher not in TEACHERS:
        raise SettingsError(f"unknown teacher {teacher!r}; choose from {', '.join(TEACHERS)}")
    if teacher == "builtin":
        from ussl_core.builtin import install_as_teacher

        copied = install_as_teacher(project)
        yield Progress(0, 1, f"the built-in models are generation 1: {', '.join(p.stem for p in copied)}",
                       stage="generation")
    generation = current_generation(project)
    students, evalseg = generation_models(project, generation)
    if not students:
        raise ProjectError(f"{project.root}: no students of generation {generation}; "
                           "train some with `ussl train`")
    if evalseg is None:
        raise ProjectError(f"{project.root}: generation {generation} has no EvalSeg-Net to score "
                           "the candidates; train it with `ussl evalseg`")
    if add:
        yield from add_sources(project, add, cancel=cancel)
    media = sorted({str(project.abspath(v.source).parent) for v in project.videos()})
    with open_pool(cluster, [project.root, *media], project.root / "arrays") as pool:
        if pool:
            yield pool.progress(0, 1, "candidates")
        yield from store_frames(project, workers, cancel, pool)
        yield from student_candidates(project, students, evalseg, generation, settings.batch, cancel, pool)
    result = select_candidates(project, generation, settings)
    project.set_meta("generation", str(generation + 1))
    yield Progress(1, 1, f"generation {generation + 1}: {result} candidates selected; "
                   "train its students with `ussl train`", stage="generation")


@dataclass(frozen=True)
class CandidateTask:
    """One shot's candidates, for a Dask worker: every student's mask of every frame, scored."""
    shot_id: int
    frames_shard: str
    students: tuple[str, ...]              # model paths
    evalseg: str
    size: tuple[int, int]                  # the project's working size (width, height)
    batch: int
    targets: tuple[tuple[str, str], ...]   # (student name, its mask shard's final path)


def shot_candidates(segmenter, frames: np.ndarray, size: tuple[int, int], batch: int,
                    cancel: CancelToken | None = None) -> dict[str, tuple[np.ndarray, list[float]]]:
    """{student name: (its uint8 masks of the frames at `size`, EvalSeg-Net's scores of them)}."""
    from ussl_core.ensemble import resize_mask

    masks: dict[str, list] = {s.name: [] for s in segmenter.students}
    scores: dict[str, list] = {s.name: [] for s in segmenter.students}
    for start in range(0, len(frames), batch):
        if cancel:
            cancel.raise_if_cancelled()
        chunk = list(frames[start:start + batch])
        for image, student_masks in zip(chunk, segmenter.student_masks(chunk)):
            rated = segmenter.evalseg_scores(image, student_masks)
            for name, mask in student_masks.items():
                masks[name].append(np.rint(resize_mask(mask, size) * 255).astype(np.uint8))
                scores[name].append(rated[name])
    return {name: (np.stack(masks[name]), scores[name]) for name in masks}


def compute_candidates(task: CandidateTask) -> tuple[int, dict[str, tuple[str, list[float]]]]:
    """A Dask worker's body: one shot's candidates written under this attempt's temporary names;
    returns (shot id, {student name: (temporary shard, scores)})."""
    from ussl_core.cluster import new_attempt, worker_models
    from ussl_core.predict import Segmenter

    segmenter = worker_models((task.students, task.evalseg),
                              lambda: Segmenter([Path(p) for p in task.students], Path(task.evalseg)))
    frames = read_shard(Path(task.frames_shard), "frames")
    attempt, targets = new_attempt(), dict(task.targets)
    return task.shot_id, {
        name: (str(write_shard(Path(targets[name]), "masks", masks, compress=True, attempt=attempt)), scores)
        for name, (masks, scores) in shot_candidates(segmenter, frames, task.size, task.batch).items()}


def candidate_label(task: CandidateTask) -> str:
    return f"candidates-shot-{task.shot_id}"


def student_candidates(project: Project, students, evalseg, generation: int, batch: int,
                       cancel: CancelToken | None = None, pool: DaskPool | None = None) -> Iterator[Progress]:
    """Every student's mask of every stored frame, scored by EvalSeg-Net, as stored masks; in
    this process, or shot by shot on a connected Dask `pool`."""
    names = {Path(p): read_card(Path(p)).get("name", Path(p).stem) for p in students}
    producers = {name: project.ensure_producer(name, "student", generation, {"model": path.name})
                 for path, name in names.items()}
    shots = [s for s in project.shots() if s.frames_shard]
    completed = [project.completed_shots(p) for p in producers.values()]
    todo = [s for s in shots if any(s.id not in done_shots for done_shots in completed)]
    total, done = sum(s.length for s in todo), 0
    by_id = {s.id: s for s in todo}
    if pool is None:
        results = _local_candidates(project, students, evalseg, todo, batch, cancel)
    else:
        tasks = [CandidateTask(s.id, str(project.abspath(s.frames_shard)), tuple(map(str, students)),
                               str(evalseg), project.working_size, batch,
                               tuple((name, str(project.mask_shard_path(name, s.id))) for name in producers))
                 for s in todo]
        results = ((shot_id, {name: (commit_shard(Path(tmp)), scores) for name, (tmp, scores) in made.items()})
                   for shot_id, made in pool.map_unordered(compute_candidates, tasks, candidate_label, cancel))
    for shot_id, made in results:
        shot = by_id[shot_id]
        for name, (shard, scores) in made.items():
            project.commit_shot_masks(producers[name], shot, shard, scores)
        done += shot.length
        yield Progress(done, total, f"student candidates, shot {shot.id}", stage="candidates")


def _local_candidates(project: Project, students, evalseg, shots: list, batch: int,
                      cancel: CancelToken | None) -> Iterator[tuple[int, dict[str, tuple[Path, list[float]]]]]:
    """In this process: (shot id, {student name: (committed mask shard, scores)}) shot by shot."""
    from ussl_core.predict import Segmenter

    segmenter = Segmenter(students, evalseg)
    for shot in shots:
        made = shot_candidates(segmenter, project.read_frames(shot), project.working_size, batch, cancel)
        yield shot.id, {name: (commit_shard(write_shard(project.mask_shard_path(name, shot.id), "masks",
                                                        masks, compress=True)), scores)
                        for name, (masks, scores) in made.items()}


def select_candidates(project: Project, generation: int, settings: GenerationSettings) -> int:
    """Keep the candidates EvalSeg-Net rates above the threshold (or the top percent); human
    decisions override as in generation 1. Returns the selection's size."""
    student_ids = [p.id for p in project.producers()
                   if p.kind == "student" and p.generation == generation]
    masks = [m for pid in student_ids for m in project.masks(pid)]
    keep = kept_by_score(np.array([m.score for m in masks]), np.array([m.video_id for m in masks]),
                         settings)
    by_score = {(masks[i].frame_id, masks[i].producer_id) for i in np.flatnonzero(keep)}
    method, value = (("evalseg_threshold", settings.threshold) if settings.threshold is not None
                     else ("evalseg_top_percent", settings.top_percent))
    decisions = {k: d["decision"] for k, d in project.decisions().items() if k[1] in student_ids}
    approved = {k for k, d in decisions.items() if d == "approve"}
    rejected = {k for k, d in decisions.items() if d == "reject"}
    members = sorted((by_score | approved) - rejected)
    if not members:
        raise ProjectError(f"{project.root}: no candidate passes the selection "
                           f"({method} {value}); lower it with --threshold or use --top-percent")
    project.save_selection(student_ids[0], method, float(value), settings.per_video, [],
                           len(approved - by_score), len(rejected & by_score), members=members,
                           generation=generation + 1,
                           source=f"students of generation {generation}, scored by EvalSeg-Net")
    return len(members)


@dataclass(frozen=True)
class GenerationStatus:
    """Where one generation stands in Algorithm 1."""
    generation: int
    teacher: str                 # what produced the masks its students learn from
    selection_size: int | None   # pairs in its latest selection (None: nothing selected yet)
    students: list[str]          # names of its trained students
    evalseg: str | None          # its EvalSeg-Net, if trained
    next_step: str               # what the user does next for this generation ("" when complete)

    @property
    def ensembles(self) -> list[str]:
        names = ["Mean-Net", "Multi-Net"] if len(self.students) > 1 else []
        return names + (["MultiSelect-Net"] if self.students and self.evalseg else [])


def generation_overview(project: Project) -> list[GenerationStatus]:
    """Every generation so far, oldest first, read from the catalog and the model cards."""
    current = current_generation(project)
    cards = trained_cards(project)
    teachers = [p.name for p in project.producers() if p.kind == "teacher"]
    overview = []
    for g in range(1, current + 1):
        made = project.selections(g)
        row = (made[-1]["n_selected"], made[-1]["producer_id"]) if made else None
        students = [c["name"] for c in cards if c.get("generation", 1) == g and c.get("architecture") != "evalseg"]
        evalseg = next((c["name"] for c in cards if c.get("generation", 1) == g
                        and c.get("architecture") == "evalseg"), None)
        if g == 1:
            teacher = next((p.name for p in project.producers() if row and p.id == row[1]),
                           teachers[0] if teachers else "none yet")
        else:
            teacher = f"generation {g - 1} students"
        if g == 1 and not teachers:
            step = "add videos and run the teacher (Videos panel)"
        elif row is None:
            step = "choose the cut-off and apply the selection (Audit panel)"
        elif not students:
            step = "train the students (Training panel)"
        elif evalseg is None:
            step = "train EvalSeg-Net"
        elif g == current:
            step = f"start generation {g + 1}"
        else:
            step = ""
        overview.append(GenerationStatus(g, teacher, row[0] if row else None, students, evalseg, step))
    return overview

"""The steps that write a project, one typed specification each, run the same way by both front
ends: the CLI parses its flags into a step, the GUI's panels describe one, and the job child
(`ussl_core.jobs`) rebuilds it from JSON. `run_step` runs any of them as a generator of
Progress events inside an open, writable project.

A step's JSON form is {"kind": ..., field: value, ...}; the settings fields hold plain dicts
(the fields of their dataclass, all optional). `step_from_spec` validates it: unknown kinds and
fields, and settings out of range, are a SettingsError naming what is wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ussl_core.errors import SettingsError
from ussl_core.progress import CancelToken, Cancelled, Progress


@dataclass(frozen=True)
class AddStep:
    """Unlabeled videos, frame folders or image folders into the project."""
    sources: tuple[str, ...]
    davis: bool = False               # the sources are DAVIS roots (with their annotations)
    images: bool = False              # the folders hold unrelated images, not video frames
    ground_truth: str | None = None   # a folder of masks beside the sources
    max_shot_length: int | None = None
    kind = "add"


@dataclass(frozen=True)
class TeacherStep:
    """A teacher's soft masks for every frame that has none; then, where there is ground truth,
    each mask's IoU with it (the purity curve's data, cached in the project)."""
    teacher: str = "videopca"
    settings: dict | None = None      # the teacher's settings dataclass fields
    workers: int | None = None
    replace: bool = False              # discard the teacher's masks first
    discard_decisions: bool = False    # and the human decisions on them (else refused while any exist)
    cluster: str | None = None         # a Dask scheduler's address or local[:N] (ussl_core.cluster)
    kind = "teacher"


@dataclass(frozen=True)
class SelectStep:
    """The active selection: the masks a keep rule keeps, with human decisions applied."""
    rule: dict = field(default_factory=dict)   # SelectionSettings fields
    producer: str | None = None                # whose masks (default: the first teacher)
    kind = "select"


@dataclass(frozen=True)
class TrainStep:
    """Students (and EvalSeg-Net, if named, last) on the active selection, one after another."""
    archs: tuple[str, ...]
    preset: str = "compact"
    settings: dict = field(default_factory=dict)   # TrainingSettings fields
    resume: bool = False               # continue interrupted runs, or start (finished models kept)
    replace: bool = False              # train again over finished models
    require_checkpoint: bool = False   # only continue: an error where nothing was interrupted
    kind = "train"


@dataclass(frozen=True)
class EvalSegStep:
    """The current generation's EvalSeg-Net, from its students."""
    preset: str = "compact"
    settings: dict = field(default_factory=dict)   # fields over evalseg_settings()' defaults
    resume: bool = False
    max_frames: int = 600
    replace: bool = False
    require_checkpoint: bool = False
    kind = "evalseg"


@dataclass(frozen=True)
class NextGenerationStep:
    """The students become the teacher: new data (optional), candidates, scores, selection."""
    sources: tuple[str, ...] = ()
    davis: bool = False
    images: bool = False
    settings: dict = field(default_factory=dict)   # GenerationSettings fields
    teacher: str = "students"                      # or "builtin": the shipped models first
    workers: int | None = None
    cluster: str | None = None                     # a Dask scheduler's address or local[:N]
    kind = "next_generation"


@dataclass(frozen=True)
class RepairStep:
    """Move the project's broken files (shards, models, checkpoints) to quarantine and
    recompute what can be recomputed (`ussl check --repair`)."""
    workers: int | None = None
    kind = "repair"


Step = AddStep | TeacherStep | SelectStep | TrainStep | EvalSegStep | NextGenerationStep | RepairStep
STEP_TYPES: dict[str, type] = {t.kind: t for t in (AddStep, TeacherStep, SelectStep, TrainStep,
                                                    EvalSegStep, NextGenerationStep, RepairStep)}


def step_spec(step: Step) -> dict[str, Any]:
    """The step as JSON-ready data ({"kind": ..., fields})."""
    data = {f.name: getattr(step, f.name) for f in dataclasses.fields(step)}
    return {"kind": step.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}}


def step_from_spec(spec: dict[str, Any]) -> Step:
    """The typed step a spec describes (extra keys such as "project" are the job's, not the
    step's, and are ignored)."""
    kind = spec.get("kind")
    if kind not in STEP_TYPES:
        raise SettingsError(f"unknown step {kind!r}; known: {', '.join(STEP_TYPES)}")
    step_type = STEP_TYPES[kind]
    names = {f.name for f in dataclasses.fields(step_type)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k in names}
    try:
        step = step_type(**values)
    except TypeError as exc:
        raise SettingsError(f"{kind} step: {exc}") from None
    settings_of(step)   # validated now, before any work
    cluster_of(step)
    return step


def cluster_of(step: Step):
    """The step's Dask cluster (ussl_core.cluster.ClusterSpec), or None: this machine."""
    from ussl_core.cluster import parse_cluster

    address = getattr(step, "cluster", None)
    return parse_cluster(address) if address else None


def settings_of(step: Step):
    """The step's settings as their dataclass (validated), or None where it has none."""
    from ussl_core.generations import GenerationSettings
    from ussl_core.selection import SelectionSettings

    try:
        if isinstance(step, SelectStep):
            return SelectionSettings(**step.rule)
        if isinstance(step, NextGenerationStep):
            return GenerationSettings(**step.settings)
        if isinstance(step, TrainStep):
            from ussl_core.training import TrainingSettings

            return TrainingSettings(**step.settings)
        if isinstance(step, EvalSegStep):
            from ussl_core.evalseg import evalseg_settings

            return evalseg_settings(**step.settings)
        if isinstance(step, TeacherStep):
            from ussl_core.teacher import make_teacher

            return make_teacher(step.teacher, step.settings).settings
        if isinstance(step, AddStep) and step.max_shot_length is not None:
            from ussl_core.media import ShotSettings

            return ShotSettings(max_shot_length=step.max_shot_length)
    except TypeError as exc:
        raise SettingsError(f"{step.kind} settings: {exc}") from None
    return None


def run_step(project, step: Step, cancel: CancelToken | None = None) -> Iterator[Progress]:
    """Run a step in an open, writable project; yields its progress events."""
    cancel = cancel or CancelToken()
    runner = {AddStep: _add, TeacherStep: _teacher, SelectStep: _select, TrainStep: _train,
              EvalSegStep: _evalseg, NextGenerationStep: _next_generation, RepairStep: _repair}[type(step)]
    yield from runner(project, step, cancel)


# ----------------------------------------------------------------------------- the runners
def _sources(step: AddStep | NextGenerationStep) -> list:
    from pathlib import Path

    from ussl_core.ingest import expand_sources

    gt = getattr(step, "ground_truth", None)
    return expand_sources(list(step.sources), step.davis, step.images, Path(gt) if gt else None)


def _add(project, step: AddStep, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.ingest import add_sources
    from ussl_core.media import ShotSettings

    shots = ShotSettings(max_shot_length=step.max_shot_length) if step.max_shot_length is not None \
        else ShotSettings()
    yield from add_sources(project, _sources(step), shots, cancel=cancel)


def _teacher(project, step: TeacherStep, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.purity import mask_gt_stats
    from ussl_core.teacher.runner import producer_name, run_teacher

    yield from run_teacher(project, step.teacher, step.settings, step.workers, step.replace, cancel,
                           step.discard_decisions, cluster_of(step))
    # Measured here, in the step's process, rather than by the Audit panel in the GUI's.
    if any(frame.gt_path for frame in project.frames()) and not cancel.cancelled:
        yield Progress(0, 1, "measuring the masks against ground truth", stage="purity")
        stats = mask_gt_stats(project, project.producer(producer_name(step.teacher)).id)
        yield Progress(1, 1, f"{len(stats)} masks measured against ground truth", stage="purity")


def _select(project, step: SelectStep, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.selection import select

    producer = project.producer(step.producer) if step.producer else project.default_producer()
    result = select(project, producer.id, settings_of(step))
    yield Progress(1, 1, f"selected {result.n_selected} masks of {producer.name} ({result.n_by_score} "
                         f"by score, +{result.n_approved_added} approved, -{result.n_rejected_removed} "
                         "rejected)", {"n_selected": result.n_selected}, stage="select")


def cap_tensorflow_threads() -> None:
    """Apply TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS before TensorFlow starts working."""
    import os

    import tensorflow as tf

    intra = os.environ.get("TF_NUM_INTRAOP_THREADS")
    inter = os.environ.get("TF_NUM_INTEROP_THREADS")
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra))
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter))


def _train(project, step: TrainStep, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.names import EVALSEG, STUDENTS
    from ussl_core.store.model_files import default_model_name, model_paths

    unknown = [a for a in step.archs if a not in STUDENTS and a != EVALSEG]
    if unknown:
        raise SettingsError(f"unknown architecture(s) {', '.join(unknown)}; choose from {', '.join(STUDENTS)}")
    settings = settings_of(step)
    generation = int(project.meta("generation", "1"))
    archs = sorted(step.archs, key=lambda arch: arch == EVALSEG)   # it learns from the students
    # Every model's files checked before anything loads (TensorFlow, the selection): a refusal
    # comes at once, and models that are done are not loaded for.
    from ussl_core.training import before_training

    todo = [arch for arch in archs
            if before_training(model_paths(project.root, default_model_name(arch, step.preset, generation)),
                               default_model_name(arch, step.preset, generation), step.resume, step.replace,
                               step.require_checkpoint) is None]
    cap_tensorflow_threads()
    from ussl_core.evalseg import evalseg_settings, train_evalseg
    from ussl_core.training import distribution_strategy, train_student, training_source

    distribution_strategy()   # a multi-worker strategy must exist before TensorFlow's runtime starts

    # Loaded (or located, to be streamed) once for all the students.
    data = training_source(project, settings.input) if any(a != EVALSEG for a in todo) else None
    for arch in archs:
        if cancel.stop_requested:   # "stop after this epoch" landed on a model's last epoch
            raise Cancelled()
        if arch == EVALSEG:
            # The same augmentation, but EvalSeg-Net's own epochs, batch size, learning rate, loss.
            own = {k: v for k, v in dataclasses.asdict(settings).items()
                   if k not in ("epochs", "batch_size", "learning_rate", "loss")}
            yield from train_evalseg(project, step.preset, evalseg_settings(**own), resume=step.resume,
                                     cancel=cancel, replace=step.replace,
                                     require_checkpoint=step.require_checkpoint)
        else:
            yield from train_student(project, arch, step.preset, settings, resume=step.resume, data=data,
                                     cancel=cancel, replace=step.replace,
                                     require_checkpoint=step.require_checkpoint)


def _evalseg(project, step: EvalSegStep, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.evalseg import train_evalseg

    cap_tensorflow_threads()
    yield from train_evalseg(project, step.preset, settings_of(step), step.max_frames,
                             resume=step.resume, cancel=cancel, replace=step.replace,
                             require_checkpoint=step.require_checkpoint)


def _next_generation(project, step: NextGenerationStep, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.generations import next_generation

    cap_tensorflow_threads()
    yield from next_generation(project, _sources(step), settings_of(step), step.workers, cancel,
                               teacher=step.teacher, cluster=cluster_of(step))


def _repair(project, step: RepairStep, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.store.integrity import Problem, check_project, repair

    problems = [item for item in check_project(project, cancel) if isinstance(item, Problem)]
    if not problems:
        yield Progress(1, 1, "nothing to repair: every shard, model and checkpoint is sound", stage="repair")
        return
    yield from repair(project, problems, step.workers, cancel)

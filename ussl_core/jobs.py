"""Long steps run as child processes: `python -m ussl_core.jobs SPEC_JSON` prints one JSON line
per progress event on stdout, then {"result": ...} or {"error": ...}.

The GUI supervises such a child from a worker thread, so the step's Python work never holds
the GUI's GIL; killing the child cancels the step (every step keeps what it completed, and a
re-run continues). SIGTERM is turned into a cooperative cancel.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from ussl_core.errors import UsslError
from ussl_core.progress import CancelToken, Cancelled, Progress


def _teacher(project, spec: dict, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.purity import mask_gt_stats
    from ussl_core.teacher.runner import producer_name, run_teacher

    teacher = spec.get("teacher", "videopca")
    yield from run_teacher(project, teacher, spec.get("settings"), spec.get("workers"),
                           spec.get("replace", False), cancel)
    # The purity curve's per-mask IoU is cached in the project: measured here, in the job's
    # process, rather than by the Audit panel in the GUI's (seconds of work competing with
    # the window for the GIL just when the researcher opens the audit).
    if any(frame.gt_path for frame in project.frames()) and not cancel.cancelled:
        yield Progress(0, 1, "measuring the masks against ground truth", stage="purity")
        stats = mask_gt_stats(project, project.producer(producer_name(teacher)).id)
        yield Progress(1, 1, f"{len(stats)} masks measured against ground truth", stage="purity")


def cap_tensorflow_threads() -> None:
    """Apply TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS before TensorFlow starts working."""
    import tensorflow as tf

    intra = os.environ.get("TF_NUM_INTRAOP_THREADS")
    inter = os.environ.get("TF_NUM_INTEROP_THREADS")
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra))
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter))


def _train(project, spec: dict, cancel: CancelToken) -> Iterator[Progress]:
    """Several models one after another; "evalseg" among them trains last (it learns from the
    generation's students)."""
    from ussl_core.evalseg import evalseg_settings, train_evalseg
    from ussl_core.training import TrainingSettings, load_selection, train_student

    cap_tensorflow_threads()
    settings = TrainingSettings(**spec.get("settings", {}))
    preset, resume = spec.get("preset", "compact"), spec.get("resume", False)
    archs = sorted(spec["archs"], key=lambda arch: arch == "evalseg")
    data = load_selection(project) if any(a != "evalseg" for a in archs) else None
    for arch in archs:
        if cancel.stop_requested:   # "stop after this epoch" landed on a model's last epoch
            raise Cancelled()
        if arch == "evalseg":
            # The form's settings, but EvalSeg-Net's own epochs, batch size and learning rate.
            own = {k: v for k, v in dataclasses.asdict(settings).items()
                   if k not in ("epochs", "batch_size", "learning_rate", "loss")}
            yield from train_evalseg(project, preset, evalseg_settings(**own), resume=resume,
                                     cancel=cancel)
        else:
            yield from train_student(project, arch, preset, settings, resume=resume, data=data,
                                     cancel=cancel)


def _evalseg(project, spec: dict, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.evalseg import evalseg_settings, train_evalseg

    cap_tensorflow_threads()
    return train_evalseg(project, spec.get("preset", "compact"),
                         evalseg_settings(**spec.get("settings", {})),
                         resume=spec.get("resume", False), cancel=cancel)


def _sources(spec: dict) -> list:
    from ussl_core.ingest import expand_sources

    return expand_sources(spec.get("sources", []), spec.get("davis", False), spec.get("images", False))


def _add(project, spec: dict, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.ingest import add_sources

    return add_sources(project, _sources(spec), cancel=cancel)


def _next_generation(project, spec: dict, cancel: CancelToken) -> Iterator[Progress]:
    from ussl_core.generations import GenerationSettings, next_generation

    cap_tensorflow_threads()
    return next_generation(project, _sources(spec), GenerationSettings(**spec.get("settings", {})),
                           spec.get("workers"), cancel, teacher=spec.get("teacher", "students"))


STEPS = {"teacher": _teacher, "train": _train, "evalseg": _evalseg, "add": _add,
         "next_generation": _next_generation}


def run_job(spec: dict, emit, cancel: CancelToken) -> None:
    """Run one job spec ({"kind": ..., "project": ..., ...}) and pass each event to `emit`."""
    from ussl_core.store import Project

    kind = spec["kind"]
    if kind == "sample":   # makes its project, so it cannot run inside one
        from ussl_core.demo import prepare_sample_project

        for event in prepare_sample_project(Path(spec["project"]), spec.get("workers"), cancel):
            emit(event)
        return
    if kind not in STEPS:
        raise UsslError(f"unknown job kind {kind!r}; known: {', '.join(STEPS)}")
    with Project.open(spec["project"], write=True, holder=f"ussl-gui {kind}") as project:
        with project.job(kind, spec) as (_, log):
            with open(log, "a", encoding="utf-8") as log_file:
                for event in STEPS[kind](project, spec, cancel):
                    log_file.write(f"{event.done}/{event.total} {event.message}\n")
                    log_file.flush()
                    emit(event)


def event_json(event: Progress) -> str:
    return json.dumps({"progress": {"done": event.done, "total": event.total,
                                    "message": event.message, "stage": event.stage,
                                    "metrics": event.metrics}})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    cancel = CancelToken()
    signal.signal(signal.SIGTERM, lambda *_: cancel.cancel())
    # SIGUSR1: finish the unit in progress (training: the epoch and its checkpoint), then stop.
    signal.signal(signal.SIGUSR1, lambda *_: cancel.stop_at_boundary())
    out = sys.stdout

    def emit(event: Progress) -> None:
        out.write(event_json(event) + "\n")
        out.flush()

    try:
        run_job(spec, emit, cancel)
    except (Cancelled, KeyboardInterrupt):
        out.write(json.dumps({"cancelled": True}) + "\n")
        return 130
    except UsslError as exc:
        out.write(json.dumps({"error": str(exc)}) + "\n")
        return 2
    out.write(json.dumps({"result": "done"}) + "\n")
    return 0


def child_environment(tf_threads: int = 1) -> dict[str, str]:
    """The environment of a job child: TensorFlow's thread pools capped so the GUI keeps a core."""
    env = dict(os.environ)
    env.update({"TF_NUM_INTRAOP_THREADS": str(tf_threads), "TF_NUM_INTEROP_THREADS": "1",
                "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    return env


if __name__ == "__main__":
    sys.exit(main())

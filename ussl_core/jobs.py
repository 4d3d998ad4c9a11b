"""Long steps run as child processes: `python -m ussl_core.jobs SPEC_JSON` prints one JSON line
per progress event on stdout, then {"result": ...} or {"error": ...}.

The GUI supervises such a child from a worker thread, so the step's Python work never holds
the GUI's GIL; killing the child cancels the step (every step keeps what it completed, and a
re-run continues). SIGTERM is turned into a cooperative cancel.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from ussl_core.errors import UsslError, describe_catalog_error, describe_os_error
from ussl_core.progress import CancelToken, Cancelled, Progress
from ussl_core.steps import run_step, step_from_spec, step_spec
from ussl_core.store.catalog import CatalogError
from ussl_core.store.project import CATALOG_NAME


def run_job(spec: dict, emit, cancel: CancelToken) -> None:
    """Run one job spec (a step's spec, ussl_core.steps, with "project") and pass each event to
    `emit`."""
    from ussl_core.store import Project

    kind = spec["kind"]
    if kind == "sample":   # makes its project, so it cannot run inside one
        from ussl_core.demo import prepare_sample_project

        for event in prepare_sample_project(Path(spec["project"]), spec.get("workers"), cancel):
            emit(event)
        return
    step = step_from_spec(spec)
    with Project.open(spec["project"], write=True, holder=f"ussl-gui {kind}") as project:
        with project.job(kind, step_spec(step)) as (_, log):
            with open(log, "a", encoding="utf-8") as log_file:
                for event in run_step(project, step, cancel):
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
    except OSError as exc:   # a full disk, a read-only folder, a corrupt file: the same one line
        out.write(json.dumps({"error": describe_os_error(exc)}) + "\n")
        return 2
    except CatalogError as exc:
        catalog = Path(spec["project"]) / CATALOG_NAME if spec.get("project") else None
        out.write(json.dumps({"error": describe_catalog_error(catalog, exc)}) + "\n")
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

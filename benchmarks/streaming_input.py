"""Training from a selection streamed from the store: resident memory against the selection's
size, and throughput against the in-memory path; prints JSON.

    python benchmarks/streaming_input.py --work /tmp/stream --pairs 5000,50000 [--steps 300]

For each size, a project whose selection holds that many pairs: generated videos (250 frames of
96x72 each), VideoPCA's masks, every mask selected. Then, in a fresh process per measurement,
`fit` of a compact student for a fixed number of steps on `StoredSelection.batches` (streamed)
or, at the smallest size, on the pairs loaded into memory; a thread samples the process's
resident memory every 0.1 s. Stored frames are at the project's working size, so 50,000 pairs
take several GB of disk; --work must have room.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FRAMES_PER_VIDEO = 250


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def make_project(root: Path, pairs: int) -> None:
    """A project whose active selection holds `pairs` pairs (skipped when it exists)."""
    from ussl_core.ingest import add_sources, davis_sources
    from ussl_core.sample import SampleSpec, write_sample_davis
    from ussl_core.selection import SelectionSettings, select
    from ussl_core.store import Project
    from ussl_core.teacher.runner import producer_name, run_teacher

    if (root / "project.sqlite").exists():
        return
    videos = -(-pairs // FRAMES_PER_VIDEO)
    davis = write_sample_davis(root.parent / f"{root.name}-videos", n_videos=videos,
                               spec=SampleSpec(n_frames=FRAMES_PER_VIDEO, width=96, height=72))
    with Project.create(root) as project:
        for _ in add_sources(project, davis_sources(davis)):
            pass
        for _ in run_teacher(project, "videopca"):
            pass
        select(project, project.producer(producer_name("videopca")).id,
               SelectionSettings(top_percent=100, max_per_video=None))


def measure(root: Path, source: str, steps: int, arch: str) -> dict:
    """In this process: `fit` for `steps` batches; peak resident memory and images per second."""
    import keras

    from ussl_core.models import PRESETS, build_model
    from ussl_core.store import Project
    from ussl_core.training import TrainingSettings, compile_student
    from ussl_core.training_input import locate_selection

    peak = [resident_bytes()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], resident_bytes())

    threading.Thread(target=sample, daemon=True).start()
    settings = TrainingSettings()
    keras.utils.set_random_seed(settings.seed)
    with Project.open(root) as project:
        stored = locate_selection(project)
    data = stored.load() if source == "memory" else stored
    model = build_model(arch, "compact")
    compile_student(model, settings)
    size = PRESETS["compact"][arch]["input_size"]
    batches = data.batches(size, int(model.output_shape[1]), settings.batch_size, True, settings,
                           True, endless=True)
    model.fit(batches, steps_per_epoch=20, epochs=1, verbose=0)   # tracing, first allocations
    started = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - started
    done.set()
    return {"pairs": stored.count, "input": source, "steps": steps,
            "images_per_s": round(steps * settings.batch_size / seconds, 1),
            "peak_resident_mb": round(max(peak[0], resident_bytes()) / 1e6),
            "selection_mb": round(stored.nbytes / 1e6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="a folder with room for the projects (required)")
    parser.add_argument("--pairs", default="5000,50000")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--arch", default="lowres")
    parser.add_argument("--measure", nargs=2, metavar=("PROJECT", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1], args.steps, args.arch)))
        return
    if not args.work:
        parser.error("--work is required")
    sizes = [int(n) for n in args.pairs.split(",")]
    runs = []
    for pairs in sizes:
        root = Path(args.work) / f"pairs-{pairs}"
        make_project(root, pairs)
        for source in (("stream", "memory") if pairs == min(sizes) else ("stream",)):
            child = subprocess.run([sys.executable, __file__, "--measure", str(root), source,
                                    "--steps", str(args.steps), "--arch", args.arch],
                                   capture_output=True, text=True, check=True)
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(runs[-1], file=sys.stderr, flush=True)
    smallest = [r for r in runs if r["pairs"] == runs[0]["pairs"]]
    by_source = {r["input"]: r for r in smallest}
    report = {"command": " ".join(["python", *sys.argv]), "arch": args.arch, "runs": runs,
              "stream_to_memory_throughput": round(by_source["stream"]["images_per_s"]
                                                   / by_source["memory"]["images_per_s"], 3)}
    text = json.dumps(report, indent=2)
    (Path(args.work) / "streaming_input.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

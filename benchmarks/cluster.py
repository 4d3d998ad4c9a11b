"""The teacher and generation 2's candidates on Dask against this machine; prints JSON.

    python benchmarks/cluster.py --davis ../shared/data/davis2016-val --repeats 3

For each way of running (`pool:N`: the local process pool of N workers; `local:N`: a Dask
LocalCluster of N worker processes) the teacher runs on a fresh copy of one project with the
sources added (frames decoded from the JPEG files, as a first run does): frames per second
(median of the repeats, the cluster's start-up counted apart), and for the cluster runs the
peak resident memory of each worker.

Overhead per shot: the cost of one more shot (the slope between N and 4N short generated shots of
10 frames of 64x48, where the teacher's own work is a few milliseconds, so that start-up cancels
out), on Dask minus on the pool with as many workers.

Candidates: `ussl next-generation --teacher builtin` (the shipped students' masks of every frame,
scored by the shipped EvalSeg-Net) on the first --candidate-videos videos, frames stored
beforehand: frames per second in this process and on 1 and 2 LocalCluster workers.

Bytes per frame: what a worker reads (the media) and writes (frames and masks shards), from
the project's files after a run: what a shared filesystem carries per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ussl_core.cluster import DaskPool, parse_cluster  # noqa: E402
from ussl_core.ingest import SourceSpec, add_sources, davis_sources  # noqa: E402
from ussl_core.media import ShotSettings  # noqa: E402
from ussl_core.sample import SampleSpec, generate_video, write_frame_folder  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher.runner import run_teacher  # noqa: E402


def make_project(root: Path, sources: list[SourceSpec], shots: ShotSettings = ShotSettings()) -> Path:
    with Project.create(root) as project:
        for _ in add_sources(project, sources, shots):
            pass
    return root


def worker_peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one_run(template: Path, work: Path, how: str) -> dict:
    """The teacher on a fresh copy of `template`: seconds of the run and of the cluster's start."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    kind, _, count = how.partition(":")
    with Project.open(work, write=True) as project:
        frames = sum(s.length for s in project.shots())
        shots = len(project.shots())
        if kind == "pool":
            started = time.perf_counter()
            for _ in run_teacher(project, workers=int(count)):
                pass
            return {"seconds": time.perf_counter() - started, "startup_seconds": 0.0,
                    "frames": frames, "shots": shots}
        started = time.perf_counter()
        spec = parse_cluster(how)
        events = run_teacher(project, cluster=spec)
        startup = None
        for event in events:
            if startup is None and "Dask" in event.message:
                startup = time.perf_counter() - started
                compute_started = time.perf_counter()
        seconds = time.perf_counter() - compute_started
        return {"seconds": seconds, "startup_seconds": startup, "frames": frames, "shots": shots}


def cluster_memory(how: str, template: Path, work: Path) -> list[int]:
    """Peak resident bytes of each LocalCluster worker after a teacher run on it."""
    from ussl_core.teacher.runner import _results, _task, producer_name

    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    with Project.open(work, write=True) as project, DaskPool(parse_cluster(how), [work]) as pool:
        name = producer_name("videopca")
        videos = {v.id: v for v in project.videos()}
        tasks = [_task(project, s, videos[s.video_id].source, name, "videopca", {})
                 for s in project.shots()]
        for _ in _results(tasks, 1, None, pool):
            pass
        return sorted(pool.client.run(worker_peak_rss).values())


def stored_bytes(root: Path, media: list[Path]) -> dict:
    def size(paths) -> int:
        return sum(p.stat().st_size for p in paths if p.is_file())

    with Project.open(root) as project:
        frames = sum(s.length for s in project.shots())
    return {"media_read": round(size(f for m in media for f in m.rglob("*")) / frames),
            "frames_shards_written": round(size((root / "arrays" / "frames").rglob("*.h5")) / frames),
            "mask_shards_written": round(size((root / "arrays" / "masks").rglob("*.h5")) / frames)}


def short_shots(folder: Path, n_videos: int) -> list[SourceSpec]:
    specs = []
    for i in range(n_videos):
        frames, _ = generate_video(SampleSpec(n_frames=40, width=64, height=48, seed=i))
        write_frame_folder(folder / f"clip{i:03d}", frames)
        specs.append(SourceSpec(folder / f"clip{i:03d}"))
    return specs


def candidates_run(template: Path, work: Path, how: str) -> dict:
    from ussl_core.generations import GenerationSettings, next_generation

    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    with Project.open(work, write=True) as project:
        frames = sum(s.length for s in project.shots())
        started = time.perf_counter()
        for _ in next_generation(project, settings=GenerationSettings(), teacher="builtin",
                                 cluster=None if how == "in-process" else parse_cluster(how)):
            pass
        seconds = time.perf_counter() - started
    return {"frames": frames, "seconds": round(seconds, 1), "frames_per_s": round(frames / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True, help="a DAVIS-layout root (davis2016-val)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ways", default="pool:2,local:1,local:2,pool:1")
    parser.add_argument("--short-videos", type=int, default=25, help="videos of 4 short shots each")
    parser.add_argument("--candidate-videos", type=int, default=6)
    parser.add_argument("--candidate-ways", default="in-process,local:1,local:2")
    args = parser.parse_args()
    ways = args.ways.split(",")
    result: dict = {"command": " ".join(["python", *sys.argv]), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "davis": {}, "short_shots": {}}
    import dask
    import distributed

    result["versions"] = {"dask": dask.__version__, "distributed": distributed.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = davis_sources(args.davis)
        template = make_project(tmp / "davis", sources)
        for how in ways:
            runs = [one_run(template, tmp / "work", how) for _ in range(args.repeats)]
            seconds = statistics.median(r["seconds"] for r in runs)
            result["davis"][how] = {
                "frames": runs[0]["frames"], "shots": runs[0]["shots"],
                "seconds": round(seconds, 2), "frames_per_s": round(runs[0]["frames"] / seconds, 1),
                "startup_seconds": round(statistics.median(r["startup_seconds"] for r in runs), 2),
                "all_seconds": [round(r["seconds"], 2) for r in runs]}
        result["bytes_per_frame"] = stored_bytes(tmp / "work", [s.path for s in sources])
        for how in [w for w in ways if w.startswith("local")]:
            result["davis"][how]["worker_peak_rss_mb"] = [
                round(b / 2**20) for b in cluster_memory(how, template, tmp / "mem")]

        # Per-shot cost as the slope between a small and a four times larger set of short
        # shots: start-up (process spawn, cluster connect) cancels out.
        small = make_project(tmp / "small", short_shots(tmp / "clips-s", args.short_videos),
                             ShotSettings(max_shot_length=10))
        large = make_project(tmp / "large", short_shots(tmp / "clips-l", 4 * args.short_videos),
                             ShotSettings(max_shot_length=10))
        for how in ways:
            timed = {}
            for name, template in (("small", small), ("large", large)):
                runs = [one_run(template, tmp / "work", how) for _ in range(args.repeats)]
                timed[name] = (runs[0]["shots"], statistics.median(r["seconds"] for r in runs))
            (n_small, t_small), (n_large, t_large) = timed["small"], timed["large"]
            result["short_shots"][how] = {"shots": [n_small, n_large],
                                          "seconds": [round(t_small, 3), round(t_large, 3)],
                                          "ms_per_shot": round(1000 * (t_large - t_small) / (n_large - n_small), 2)}
        for how in [w for w in ways if w.startswith("local")]:
            pool = f"pool:{how.partition(':')[2]}"
            if pool in result["short_shots"]:
                result["short_shots"][how]["overhead_ms_per_shot_vs_" + pool] = round(
                    result["short_shots"][how]["ms_per_shot"] - result["short_shots"][pool]["ms_per_shot"], 2)
        # Generation 2's candidates (the whole run once each: minutes).
        subset = make_project(tmp / "subset", sources[:args.candidate_videos])
        with Project.open(subset, write=True) as project:
            for _ in run_teacher(project):   # stores the frames
                pass
        result["candidates"] = {how: candidates_run(subset, tmp / "work", how)
                                for how in args.candidate_ways.split(",")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

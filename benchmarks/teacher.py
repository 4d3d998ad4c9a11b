"""Teacher throughput and mask quality on a DAVIS-layout root; prints JSON.

    python benchmarks/teacher.py --davis ../shared/data/davis2016-val [--workers 2]

end-to-end: from the JPEG files to committed shards and catalog rows (`run_teacher` on a
fresh project; adding the sources is timed separately as `add_seconds`).
decode-only: the same files through the same decode and resize calls, on one core.
Mean IoU: every mask upsampled to its frame's original size and thresholded at 0.5,
against the ground truth; over all frames and over the top 10 percent by score.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ussl_core.ingest import add_sources, davis_sources  # noqa: E402
from ussl_core.media import read_image, resize_rgb  # noqa: E402
from ussl_core.purity import mask_gt_stats  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher.runner import run_teacher  # noqa: E402


def decode_only_rate(project: Project, limit: int | None) -> tuple[int, float]:
    """Frames/s of read_image + resize_rgb to the working size, in this process (one core)."""
    files = []
    for video in project.videos():
        folder = project.abspath(video.source)
        files += sorted(folder.iterdir())
    files = [f for f in files if f.suffix.lower() in (".jpg", ".jpeg", ".png")][:limit]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one core, as the teacher's workers run
    try:
        started = time.perf_counter()
        for f in files:
            resize_rgb(read_image(f), project.working_size)
        return len(files), len(files) / (time.perf_counter() - started)
    finally:
        cv2.setNumThreads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True, help="DAVIS-layout root")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--teacher", default="videopca")
    parser.add_argument("--keep", help="keep the project in this folder instead of a temporary one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or Path(tmp) / "project")
        project = Project.create(root)
        started = time.perf_counter()
        for _ in add_sources(project, davis_sources(args.davis)):
            pass
        add_seconds = time.perf_counter() - started
        n_frames = sum(v.frame_count for v in project.videos())

        started = time.perf_counter()
        for _ in run_teacher(project, args.teacher, workers=args.workers):
            pass
        seconds = time.perf_counter() - started

        decoded, decode_rate = decode_only_rate(project, None)
        producer = project.producer(f"{args.teacher}@g1")
        stats = mask_gt_stats(project, producer.id)
        ious = sorted(((s.score, s.iou) for s in stats), key=lambda x: -x[0])
        top = ious[: max(1, -(-len(ious) // 10))]
        result = {
            "davis": str(args.davis),
            "teacher": args.teacher,
            "workers": args.workers,
            "frames": n_frames,
            "add_seconds": round(add_seconds, 2),
            "seconds": round(seconds, 2),
            "end_to_end_fps": round(n_frames / seconds, 1),
            "decode_only_fps_one_core": round(decode_rate, 1),
            "ratio_end_to_end_to_decode": round(n_frames / seconds / decode_rate, 3),
            "mean_iou_all": round(sum(i for _, i in ious) / len(ious), 4),
            "mean_iou_top10": round(sum(i for _, i in top) / len(top), 4),
            "n_top10": len(top),
        }
        project.close()
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Per-video max mean IoU of the teacher and some models on a project's frames with ground
truth: where students lose to their teacher, video by video; prints JSON.

    python benchmarks/per_video.py PROJECT MODEL.keras [MODEL.keras ...] [--step 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ussl_core.evaluate import evaluate_contenders  # noqa: E402
from ussl_core.store import Project  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--step", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    with Project.open(args.project) as project:
        for video in project.videos():
            if not video.gt_source:
                continue
            results = evaluate_contenders(project, models=([Path(m) for m in args.models], None),
                                          video_ids={video.id}, frame_step=args.step, ensembles=())
            rows[video.name] = {name.split(" ")[0]: round(r["max_mean_iou"], 3) for name, r in results.items()}
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

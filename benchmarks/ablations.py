"""Recipe ablations at a reduced scale, on the development data only; prints JSON lines.

    python benchmarks/ablations.py --out /tmp/ablations --variants base,extra,... [--archs basic_unet]

Setup (once, kept in --out): a project of generation-1 video (davis2016-val and extra-videos,
VideoPCA masks) and a scoring project of the 20 development shots of davis2016-train (VideoPCA
masks, used only to score). The 10 unseen davis2016-train shots (`generations.UNSEEN_SHOTS`) are
never read here. Each variant selects, trains the given students for a fixed budget of image
steps, and scores every fifth frame: max mean IoU of each student and the teacher on
davis2016-val ("val") and on the development shots of davis2016-train ("train"), plus CorLoc at
the product's own threshold. A variant already in results.jsonl is skipped, so the script resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from generations import development_sources  # noqa: E402
from ussl_core.ensemble import ENSEMBLES  # noqa: E402
from ussl_core.evalseg import evalseg_settings, train_evalseg  # noqa: E402
from ussl_core.evaluate import evaluate_contenders  # noqa: E402
from ussl_core.ingest import add_sources, davis_sources, expand_sources  # noqa: E402
from ussl_core.purity import n_kept, rank_best_first  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.store.model_files import is_trained, model_paths  # noqa: E402
from ussl_core.teacher.runner import run_teacher  # noqa: E402
from ussl_core.training import TrainingSettings, load_selection, train_student  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEACHER = "videopca@g1"

# name: (selection, training overrides). Selection: which videos ("val" or "all"), top percent,
# per video or over all masks. Every variant trains for the same image steps (--images).
BASE_SELECTION = {"videos": "val", "top_percent": 20.0, "per_video": True}
VARIANTS: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "extra": ({"videos": "all"}, {}),
    "extra_global20": ({"videos": "all", "per_video": False}, {}),
    "extra_global10": ({"videos": "all", "per_video": False, "top_percent": 10.0}, {}),
    "extra_cap80": ({"videos": "all", "per_video": False, "max_per_video": 80}, {}),
    "extra_long": ({"videos": "all"}, {"images": 30000}),
    # Per shot: the top 20 % of each video, at most 40 of one (long static videos dominated).
    "extra_video_cap40": ({"videos": "all", "max_per_video": 40}, {}),
    "extra_bce": ({"videos": "all"}, {"loss": "bce"}),
    # On the best selection so far (extra_video_cap40):
    "cap20": ({"videos": "all", "max_per_video": 20}, {}),
    "cap40_bce": ({"videos": "all", "max_per_video": 40}, {"loss": "bce"}),
    "cap40_long": ({"videos": "all", "max_per_video": 40}, {"images": 30000}),
    "cap40_augment": ({"videos": "all", "max_per_video": 40},
                      {"min_crop_fraction": 0.5, "crop_fraction": 1.0, "aspect_jitter": 0.2,
                       "colour_jitter": 0.2, "blur_probability": 0.2, "grey_probability": 0.05}),
    "cap40_position": ({"videos": "all", "max_per_video": 40},
                       {"u_net_features": ("rgb", "hsv", "derivatives", "position")}),
    # On the best selection so far (cap20):
    "cap10": ({"videos": "all", "max_per_video": 10}, {}),
    "cap20_bce": ({"videos": "all", "max_per_video": 20}, {"loss": "bce"}),
    "cap20_long": ({"videos": "all", "max_per_video": 20}, {"images": 30000}),
    "cap20_augment": ({"videos": "all", "max_per_video": 20},
                      {"min_crop_fraction": 0.5, "crop_fraction": 1.0, "aspect_jitter": 0.2,
                       "colour_jitter": 0.2, "blur_probability": 0.2, "grey_probability": 0.05}),
    "cap20_position": ({"videos": "all", "max_per_video": 20},
                       {"u_net_features": ("rgb", "hsv", "derivatives", "position")}),
    "extra_video40": ({"videos": "all", "top_percent": 40.0}, {}),
    "extra_scale": ({"videos": "all"}, {"min_crop_fraction": 0.35, "crop_fraction": 1.0,
                                         "aspect_jitter": 0.3}),
    "extra_photo": ({"videos": "all"}, {"colour_jitter": 0.3, "blur_probability": 0.3,
                                         "grey_probability": 0.05}),
    # U-Net input features with the pixel position (a learnable centre prior); a model option.
    "extra_position": ({"videos": "all"}, {"u_net_features": ("rgb", "hsv", "derivatives", "position")}),
    "extra_scale_photo": ({"videos": "all"}, {"min_crop_fraction": 0.35, "crop_fraction": 1.0,
                                               "aspect_jitter": 0.3, "colour_jitter": 0.3,
                                               "blur_probability": 0.3, "grey_probability": 0.05}),
}


def drain(events, label: str) -> None:
    started = time.perf_counter()
    last = None
    for last in events:
        pass
    print(f"[{time.perf_counter() - started:7.1f} s] {label}: {last.message if last else ''}",
          file=sys.stderr, flush=True)


def open_or_create(root: Path) -> Project:
    return Project.open(root, write=True) if (root / "project.sqlite").exists() else Project.create(root)


def setup(out: Path, workers: int) -> None:
    """The development project (val + extra) and the scoring project (train's 20 development shots)."""
    with open_or_create(out / "dev") as project:
        drain(add_sources(project, davis_sources(DATA / "davis2016-val")
                          + expand_sources([DATA / "extra-videos"])), "add val + extra")
        drain(run_teacher(project, workers=workers), "teacher on val + extra")
    with open_or_create(out / "score") as project:
        drain(add_sources(project, development_sources(DATA / "davis2016-train")), "add train (development shots)")
        drain(run_teacher(project, workers=workers), "teacher on train (scoring only)")


def select_variant(project: Project, selection: dict) -> int:
    """Store the variant's selection (made active) and return its id."""
    producer = project.producer(TEACHER)
    val_names = {spec.path.name for spec in davis_sources(DATA / "davis2016-val")}
    videos = {v.id for v in project.videos() if selection["videos"] == "all" or v.name in val_names}
    masks = [m for m in project.masks(producer.id) if m.video_id in videos]
    groups: dict = {}
    for m in masks:
        groups.setdefault(m.video_id if selection["per_video"] else None, []).append(m)
    chosen = []
    cap = selection.get("max_per_video")
    for group in groups.values():
        order = rank_best_first(np.array([m.score for m in group]))
        wanted, counts = n_kept(selection["top_percent"], len(group)), {}
        for i in order:   # best first, at most `cap` of one video
            if len(chosen) >= wanted and not selection["per_video"]:
                break
            if cap and counts.get(group[i].video_id, 0) >= cap:
                continue
            counts[group[i].video_id] = counts.get(group[i].video_id, 0) + 1
            chosen.append(group[i].frame_id)
            if selection["per_video"] and counts[group[i].video_id] >= wanted:
                break
    return project.save_selection(producer.id, "top_percent", selection["top_percent"],
                                  selection["per_video"], sorted(chosen), 0, 0)


def score(project: Project, models: list[Path], step: int, evalseg: Path | None = None) -> dict:
    results = evaluate_contenders(project, models=(models, evalseg), frame_step=step,
                                  ensembles=ENSEMBLES if evalseg else ())
    return {name: {"iou": round(r["max_mean_iou"], 4), "corloc": round(r["corloc"], 4),
                   "threshold": round(r["max_mean_iou_threshold"], 3)} for name, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default="base,extra")
    parser.add_argument("--archs", default="basic_unet")
    parser.add_argument("--images", type=int, default=12000, help="image steps per student")
    parser.add_argument("--step", type=int, default=5, help="score every STEP-th frame")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    out = Path(args.out)
    results_file = out / "results.jsonl"
    done = {json.loads(line)["variant"] for line in results_file.read_text().splitlines()} \
        if results_file.exists() else set()
    setup(out, args.workers)
    for variant in args.variants.split(","):
        if variant in done:
            continue
        selection_overrides, training_overrides = VARIANTS[variant]
        selection = {**BASE_SELECTION, **selection_overrides}
        started = time.perf_counter()
        training_overrides = dict(training_overrides)
        features = training_overrides.pop("u_net_features", None)
        if features:
            import ussl_core.models.builders as builders
            builders.U_NET_FEATURES = tuple(features)
        with Project.open(out / "dev", write=True) as project:
            data = load_selection(project, select_variant(project, selection))
            images = training_overrides.pop("images", args.images)
            archs = training_overrides.pop("archs", args.archs)
            settings = replace(TrainingSettings(), **training_overrides)
            epochs = max(1, round(images / (len(data.frames) * (1 - settings.validation_share))))
            settings = replace(settings, epochs=epochs)
            models, evalseg = [], None
            for arch in archs.split(","):
                name = f"abl_{variant}_{arch}"
                if not is_trained(project.root, name):
                    drain(train_student(project, arch, "compact", settings, name=name, resume=True,
                                        data=data), f"{variant} {arch}")
                models.append(model_paths(project.root, name)["model"])
            if len(models) > 1:   # an ensemble variant: its own EvalSeg-Net, every method scored
                evalseg = model_paths(project.root, f"abl_{variant}_evalseg")["model"]
                if not evalseg.exists():
                    drain(train_evalseg(project, "compact", evalseg_settings(), resume=True,
                                        students=models, name=evalseg.stem), f"{variant} evalseg")
            val = score(project, models, args.step, evalseg)
        with Project.open(out / "score") as project:
            train = score(project, models, args.step, evalseg)
        record = {"variant": variant, "selection": selection, "training": VARIANTS[variant][1],
                  "pairs": int(len(data.frames)), "epochs": epochs,
                  "val": val, "train": train, "seconds": round(time.perf_counter() - started)}
        with results_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

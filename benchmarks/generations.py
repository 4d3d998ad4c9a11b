"""Algorithm 1 over two generations on DAVIS, every contender scored the same way; prints JSON.

    python benchmarks/generations.py --davis ../shared/data/davis2016-val \
        --add ../shared/data/davis2016-train --out /tmp/gens [--archs ...] [--epochs N]

Generation 1: VideoPCA on --davis, the top --top-percent masks by score (of each video with
--per-video: a global top 10 % drew every pair from 5 of the 20 DAVIS-val videos), compact
students, EvalSeg-Net.
Generation 2: --add joins as new unlabeled video; the generation-1 students are the teacher,
EvalSeg-Net scores their candidates (> 0.8 kept), generation-2 students train on them with
the same budget of image steps as generation 1 (fewer epochs over more pairs).
Ground truth is used only to score: max mean IoU over thresholds, on the --davis videos
("val", seen, as the paper's YouTube-Objects protocol) and on the --add videos ("train",
unseen by generation 1). Every step is skipped when its result is already in --out, so an
interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ussl_core.evaluate import evaluate_contenders  # noqa: E402
from ussl_core.evalseg import train_evalseg  # noqa: E402
from ussl_core.generations import (GenerationSettings, current_generation,  # noqa: E402
                                   equal_budget_epochs, next_generation)
from ussl_core.ingest import add_sources, davis_sources  # noqa: E402
from ussl_core.models import STUDENTS  # noqa: E402
from ussl_core.selection import SelectionSettings, select  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher.runner import run_teacher  # noqa: E402
from ussl_core.training import TrainingSettings, default_model_name, train_student  # noqa: E402


# Fixed before any run (every third davis2016-train shot by name): the unseen set, never trained
# on and never used for a choice (not by the ablations either), reported apart.
UNSEEN_SHOTS = ("boat", "car-turn", "drift-turn", "hike", "kite-walk", "mallard-water",
                "paragliding", "scooter-gray", "swing", "train")


def development_sources(root) -> list:
    """The davis2016-train shots that generation 2 may learn from (all but the unseen ten)."""
    return [spec for spec in davis_sources(root) if spec.path.name not in UNSEEN_SHOTS]


def unseen_sources(root) -> list:
    return [spec for spec in davis_sources(root) if spec.path.name in UNSEEN_SHOTS]


def run(events, label: str) -> None:
    started = time.perf_counter()
    last = None
    for last in events:
        pass
    print(f"[{time.perf_counter() - started:7.1f} s] {label}: {last.message if last else ''}",
          file=sys.stderr, flush=True)


def train_generation(project: Project, archs: list[str], settings: TrainingSettings,
                     evalseg_settings: TrainingSettings) -> None:
    generation = current_generation(project)
    for arch in archs:
        if not (project.root / "models" / f"{default_model_name(arch, 'compact', generation)}.keras").exists():
            run(train_student(project, arch, "compact", settings, resume=True), f"g{generation} {arch}")
    if not (project.root / "models" / f"{default_model_name('evalseg', 'compact', generation)}.keras").exists():
        run(train_evalseg(project, "compact", evalseg_settings, resume=True), f"g{generation} evalseg")


def summarise(results: dict[str, dict], generation: int) -> dict:
    iou = {name: round(r["max_mean_iou"], 4) for name, r in results.items()}
    students = {n: v for n, v in iou.items() if n.startswith(f"g{generation}_")}
    return {"teacher": next((v for n, v in iou.items() if n.startswith("teacher")), None),
            "students": students, "multi_net": iou.get("multi_net"),
            "multiselect_net": iou.get("multiselect_net"),
            "student_mean": round(sum(students.values()) / len(students), 4) if students else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True)
    parser.add_argument("--add", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--archs", default=",".join(STUDENTS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--evalseg-epochs", type=int, default=10)
    parser.add_argument("--max-eval-frames", type=int, default=400)
    parser.add_argument("--evalseg-learning-rate", type=float, default=1e-4,
                        help="at 1e-3 EvalSeg-Net's sigmoid saturated in the first epoch once "
                             "(every score 1.0, loss flat)")
    parser.add_argument("--g2-top-percent", type=float, default=None,
                        help="keep this top percent of the candidates instead of EvalSeg > 0.8")
    parser.add_argument("--top-percent", type=float, default=10.0)
    parser.add_argument("--per-video", action="store_true",
                        help="keep the top percent of each video rather than of all masks")
    args = parser.parse_args()
    archs = args.archs.split(",")
    settings = TrainingSettings(epochs=args.epochs, batch_size=8)
    evalseg_settings = TrainingSettings(epochs=args.evalseg_epochs, batch_size=32,
                                        learning_rate=args.evalseg_learning_rate)
    g2_selection = (GenerationSettings(top_percent=args.g2_top_percent) if args.g2_top_percent
                    else GenerationSettings(threshold=0.8))
    root = Path(args.out) / "project"
    started = time.perf_counter()
    project = Project.open(root, write=True) if (root / "project.sqlite").exists() else Project.create(root)
    run(add_sources(project, davis_sources(args.davis)), "add --davis")
    # By name, not "what is there now": a resumed run already holds the added videos too.
    val_names = {spec.name or spec.path.name for spec in davis_sources(args.davis)}
    val_videos = {v.id for v in project.videos() if v.name in val_names}
    run(run_teacher(project), "teacher")
    if current_generation(project) == 1:
        if project.active_selection() is None:
            select(project, project.producer("videopca@g1").id,
                   SelectionSettings(top_percent=args.top_percent, per_video=args.per_video))
        train_generation(project, archs, settings, evalseg_settings)
        run(next_generation(project, davis_sources(args.add), g2_selection),
            "next generation")
    # The teacher's own masks on the added videos, only to score it there.
    run(run_teacher(project), "teacher on the added videos (for scoring only)")
    # Same training budget (image steps) as generation 1, however many candidates were kept.
    epochs2 = equal_budget_epochs(project, args.epochs)
    train_generation(project, archs, TrainingSettings(epochs=epochs2, batch_size=8), evalseg_settings)
    added = {v.id for v in project.videos()} - val_videos
    report = {}
    for label, videos in (("val", val_videos), ("train", added)):
        report[label] = {f"g{g}": summarise(evaluate_contenders(
            project, g, videos, args.max_eval_frames), g) for g in (1, 2)}
    selection = project.active_selection()
    output = {
        "archs": archs, "epochs": {"g1": args.epochs, "g2": epochs2},
        "evalseg_epochs": args.evalseg_epochs,
        "generation1_selection": {"top_percent": args.top_percent, "per_video": args.per_video},
        "generation2_rule": (f"top {args.g2_top_percent} % by EvalSeg-Net" if args.g2_top_percent
                             else "EvalSeg-Net > 0.8"),
        "evalseg_learning_rate": args.evalseg_learning_rate,
        "generation2_selection": selection["n_selected"] if selection else None,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    for label in ("val", "train"):
        g1, g2 = report[label]["g1"], report[label]["g2"]
        output[label] = {
            "teacher_iou": g1["teacher"],
            "students": {arch: {"g1": g1["students"].get(default_model_name(arch, "compact", 1)),
                                "g2": g2["students"].get(default_model_name(arch, "compact", 2))}
                         for arch in archs},
            "multi_net": {"g1": g1["multi_net"], "g2": g2["multi_net"]},
            "multiselect_net": {"g1": g1["multiselect_net"], "g2": g2["multiselect_net"]},
            "generation_mean": {"g1": g1["student_mean"], "g2": g2["student_mean"]},
        }
    project.close()
    (Path(args.out) / "generations.json").write_text(json.dumps(output, indent=2))
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()

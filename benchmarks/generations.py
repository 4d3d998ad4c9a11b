"""Algorithm 1 over two generations with the default recipe, every contender scored the same
way; prints JSON and writes it to OUT/generations.json.

    python benchmarks/generations.py --out /work/runs/gens \
        --g1 ../shared/data/davis2016-val ../shared/data/extra-videos \
        --g2 ../shared/data/davis2016-train --davis-train ../shared/data/davis2016-train

Generation 1: VideoPCA on the --g1 sources (DAVIS roots, folders of footage, videos), the
default selection (SelectionSettings), the five compact students with the default recipe
(TrainingSettings) for --images image steps each, EvalSeg-Net (evalseg_settings).
Generation 2: the --g2 sources join as new unlabeled video (a davis2016-train root loses its
ten unseen shots, UNSEEN_SHOTS, by name); the generation-1 students are the teacher, EvalSeg-Net
selects (GenerationSettings), generation-2 students train for the same image steps.
Ground truth is used only to score (max mean IoU over thresholds, every --eval-step-th frame):
on davis2016-val ("val", seen by both generations), on the development shots of
davis2016-train ("train", unseen by generation 1), and on the ten unseen shots ("unseen", never
trained on, kept in a separate scoring project). CorLoc of the boxes `ussl segment --boxes`
writes with the default method (largest box, the product's threshold) on every davis2016-val
frame, against the teacher's masks boxed the same way. Every step skips what is in --out, so
an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from ussl_core.ensemble import ENSEMBLES  # noqa: E402
from ussl_core.evalseg import evalseg_settings, train_evalseg  # noqa: E402
from ussl_core.evaluate import evaluate_contenders  # noqa: E402
from ussl_core.generations import GenerationSettings, current_generation, next_generation  # noqa: E402
from ussl_core.ingest import add_sources, davis_sources, expand_sources  # noqa: E402
from ussl_core.selection import SelectionSettings, select  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher.runner import run_teacher  # noqa: E402
from ussl_core.store.model_files import default_model_name, generation_models, is_trained  # noqa: E402
from ussl_core.training import TrainingSettings, train_student, training_source  # noqa: E402

STUDENTS = ("lowres", "fconv", "basic_unet", "dilate_unet", "dense_unet")
TEACHER = "videopca@g1"

# Fixed before any run (every third davis2016-train shot by name): the unseen set, never trained
# on and never used for a choice (not by the ablations either), reported apart.
UNSEEN_SHOTS = ("boat", "car-turn", "drift-turn", "hike", "kite-walk", "mallard-water",
                "paragliding", "scooter-gray", "swing", "train")


def development_sources(root) -> list:
    """The davis2016-train shots that generation 2 may learn from (all but the unseen ten)."""
    return [spec for spec in davis_sources(root) if spec.path.name not in UNSEEN_SHOTS]


def unseen_sources(root) -> list:
    return [spec for spec in davis_sources(root) if spec.path.name in UNSEEN_SHOTS]


def learnable_sources(paths: list[str]) -> list:
    """The sources of some paths, without the unseen shots."""
    return [spec for spec in expand_sources(paths) if spec.path.name not in UNSEEN_SHOTS]


def run(events, label: str):
    started = time.perf_counter()
    last = None
    for last in events:
        pass
    print(f"[{time.perf_counter() - started:7.1f} s] {label}: {last.message if last else ''}",
          file=sys.stderr, flush=True)
    return last


def open_or_create(root: Path) -> Project:
    return Project.open(root, write=True) if (root / "project.sqlite").exists() else Project.create(root)


def epochs_for(images: int, project: Project, settings: TrainingSettings) -> int:
    """Epochs that give about `images` image steps on the active selection's training pairs."""
    pairs = project.active_selection()["n_selected"] * (1 - settings.validation_share)
    return max(1, round(images / max(pairs, 1)))


def train_generation(project: Project, archs: list[str], images: int,
                     evalseg: TrainingSettings) -> dict:
    """Every student (the same image steps each) and EvalSeg-Net of the current generation."""
    generation = current_generation(project)
    settings = replace(TrainingSettings(), epochs=epochs_for(images, project, TrainingSettings()))
    data = None
    for arch in archs:
        if not is_trained(project.root, default_model_name(arch, "compact", generation)):
            data = data or training_source(project, settings.input)
            run(train_student(project, arch, "compact", settings, resume=True, data=data),
                f"g{generation} {arch}")
    if not is_trained(project.root, default_model_name("evalseg", "compact", generation)):
        run(train_evalseg(project, "compact", evalseg, resume=True), f"g{generation} evalseg")
    return {"epochs": settings.epochs, "selected_pairs": project.active_selection()["n_selected"]}


def algorithm(root: Path, g1: list, g2: list, archs: list[str], images: int, workers: int,
              selection: SelectionSettings, g2_rule: GenerationSettings,
              evalseg: TrainingSettings, generations: int = 2) -> dict:
    """Generation 1 on g1's sources, then (generations=2) generation 2 with g2's added; returns
    what was run."""
    info = {}
    with open_or_create(root) as project:
        run(add_sources(project, g1), "add generation-1 video")
        run(run_teacher(project, workers=workers), "teacher")
        if current_generation(project) == 1:
            if project.active_selection() is None:
                select(project, project.producer(TEACHER).id, selection)
            info["g1"] = train_generation(project, archs, images, evalseg)
            if generations == 1:
                return info
            run(next_generation(project, g2, g2_rule, workers), "next generation")
        info.setdefault("g1", {"selected_pairs": project.selections(1)[-1]["n_selected"]})
        info["g2"] = train_generation(project, archs, images, evalseg)
        # The teacher's own masks on the added videos, only to score it there.
        run(run_teacher(project, workers=workers), "teacher on the added videos (for scoring only)")
    return info


def summarise(results: dict[str, dict], students: list[str]) -> dict:
    iou = {name: round(r["max_mean_iou"], 4) for name, r in results.items()}
    own = {n: iou[n] for n in students if n in iou}
    teacher = next((n for n in iou if n.startswith("teacher")), None)
    return {"teacher": iou.get(teacher), "students": own,
            "student_mean": round(float(np.mean(list(own.values()))), 4) if own else None,
            **{f"{m}_net": iou.get(f"{m}_net") for m in ENSEMBLES},
            "corloc": {n: round(r["corloc"], 4) for n, r in results.items()},
            "frames": next(iter(results.values()))["n_images"] if results else 0}


def score_sets(root: Path, scoring_root: Path, val_names: set[str], step: int,
               models_of: dict[int, tuple]) -> dict:
    """Max mean IoU (and CorLoc at 0.5) of every contender of each generation on each set."""
    report: dict = {}
    with Project.open(root) as project:
        videos = project.videos()
        val = {v.id for v in videos if v.name in val_names}
        train = {v.id for v in videos if v.gt_source and v.id not in val}
        for label, ids in (("val", val), ("train", train)):
            report[label] = {}
            for g, models in models_of.items():
                results = evaluate_contenders(project, models=models, video_ids=ids, frame_step=step,
                                              ensembles=ENSEMBLES)
                report[label][f"g{g}"] = summarise(results, [p.stem for p in models[0]])
    with Project.open(scoring_root) as project:
        report["unseen"] = {}
        for g, models in models_of.items():
            results = evaluate_contenders(project, models=models, frame_step=step, ensembles=ENSEMBLES)
            report["unseen"][f"g{g}"] = summarise(results, [p.stem for p in models[0]])
    return report


def segment_corloc(model, val_root: Path, out: Path, teacher_project: Path | None = None) -> dict:
    """CorLoc of the largest box `ussl segment --boxes` writes (default method, the product's
    threshold) on every frame of a DAVIS root, and of the teacher's masks boxed the same way."""
    from ussl_core.metrics import box_hit
    from ussl_core.postprocess import BoxSettings, boxes_from_mask, mask_box
    from ussl_core.purity import read_ground_truth
    from ussl_core.segment import SegmentSettings, segment_paths

    hits, count = 0, 0
    for spec in davis_sources(val_root):
        folder = out / spec.path.name
        if not (folder / "boxes.json").exists():
            for _ in segment_paths(model, [spec.path], folder, SegmentSettings(), boxes=True):
                pass
        boxes = json.loads((folder / "boxes.json").read_text())
        for gt_file in sorted(spec.ground_truth.glob("*.png")):
            predicted = boxes.get(gt_file.stem) or [None]
            hits += box_hit(tuple(predicted[0]) if predicted[0] else None,
                            mask_box(read_ground_truth(gt_file)))
            count += 1
    result = {"method": SegmentSettings().method, "corloc": round(hits / count, 4), "frames": count}
    if teacher_project is not None:
        t_hits, t_count = 0, 0
        with Project.open(teacher_project) as project:
            names = {spec.path.name for spec in davis_sources(val_root)}
            videos = {v.id for v in project.videos() if v.name in names}
            frames = {f.id: f for f in project.frames() if f.video_id in videos and f.gt_path}
            masks = [m for m in project.masks(project.producer(TEACHER).id) if m.frame_id in frames]
            for mask, soft in project.read_masks(masks):
                gt = read_ground_truth(project.abspath(frames[mask.frame_id].gt_path))
                box = boxes_from_mask(soft, (gt.shape[1], gt.shape[0]), BoxSettings(threshold=0.5))
                t_hits += box_hit(box[0] if box else None, mask_box(gt))
                t_count += 1
        result["teacher_corloc"] = round(t_hits / t_count, 4)
    return result


def prepare_scoring_project(root: Path, davis_train: Path, workers: int) -> None:
    """The ten unseen shots and their VideoPCA masks, apart from everything trained on."""
    with open_or_create(root) as project:
        run(add_sources(project, unseen_sources(davis_train)), "add the unseen shots (scoring only)")
        run(run_teacher(project, workers=workers), "teacher on the unseen shots (scoring only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--g1", nargs="+", required=True, metavar="SOURCE")
    parser.add_argument("--g2", nargs="+", required=True, metavar="SOURCE")
    parser.add_argument("--davis-val", default=None, help="the DAVIS root scored as 'val' (default: "
                        "the first --g1 source)")
    parser.add_argument("--davis-train", required=True, help="davis2016-train (its unseen shots are scored apart)")
    parser.add_argument("--archs", default=",".join(STUDENTS))
    parser.add_argument("--images", type=int, default=20000, help="image steps per student and generation")
    parser.add_argument("--eval-step", type=int, default=2, help="score every STEP-th frame")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    out = Path(args.out)
    archs = args.archs.split(",")
    val_root = Path(args.davis_val or args.g1[0])
    started = time.perf_counter()
    selection, g2_rule, evalseg = SelectionSettings(), GenerationSettings(), evalseg_settings()
    info = algorithm(out / "project", learnable_sources(args.g1), learnable_sources(args.g2), archs,
                     args.images, args.workers, selection, g2_rule, evalseg)
    prepare_scoring_project(out / "unseen", Path(args.davis_train), args.workers)
    models_of = {g: generation_models(out / "project" / "models", g) for g in (1, 2)}
    report = score_sets(out / "project", out / "unseen", {s.path.name for s in davis_sources(val_root)},
                        args.eval_step, models_of)
    corloc = segment_corloc(out / "project", val_root, out / "segment-val", out / "project")
    output = {
        "command": " ".join(["python", *sys.argv]),
        "recipe": {"selection": asdict(selection), "training": asdict(TrainingSettings()),
                   "evalseg": asdict(evalseg), "generation2": asdict(g2_rule),
                   "images_per_student": args.images, "archs": archs},
        "generations": info, **report, "segment_corloc_val": corloc,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(output, indent=2)
    (out / "generations.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

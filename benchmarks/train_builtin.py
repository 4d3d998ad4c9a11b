"""Train the models that ship inside ussl, from unlabeled video only, and write them with their
card into ussl_core/builtin; prints the card (JSON).

    python benchmarks/train_builtin.py --extra ../shared/data/extra-videos --out /work/runs/builtin \
        --davis-val ../shared/data/davis2016-val --davis-train ../shared/data/davis2016-train

Only shots whose licence allows sharing derived weights are learned from (SHAREABLE below, from
extra-videos/README.md): Apache-2.0, CC BY 4.0 and MIT footage. The non-commercial shots
(S-Lab License 1.0, CC BY-NC 4.0) and the DAVIS shots (research terms, no grant for derived
works) stay out; the card names every source, its licence, and why the excluded ones are.
Algorithm 1 runs as in benchmarks/generations.py with the default recipe: generation 1 from
VideoPCA, then (--generations 2) generation 2 from generation 1's students as the teacher on the
same video (no other shareable video is at hand). The last generation's students and EvalSeg-Net
are copied into
ussl_core/builtin (no optimizer state), then scored on davis2016-val, the development shots of
davis2016-train and the ten unseen shots (all unseen by these models), with the time to
segment one image.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from generations import (STUDENTS, algorithm, development_sources, prepare_scoring_project,  # noqa: E402
                         score_sets, segment_corloc)
from ussl_core.builtin import BUILTIN_DIR, CARD_NAME  # noqa: E402
from ussl_core.evalseg import evalseg_settings  # noqa: E402
from ussl_core.generations import GenerationSettings  # noqa: E402
from ussl_core.ingest import add_sources, davis_sources, expand_sources  # noqa: E402
from ussl_core.segment import SegmentSettings  # noqa: E402
from ussl_core.selection import SelectionSettings  # noqa: E402
from ussl_core.store import Project  # noqa: E402
from ussl_core.teacher.runner import run_teacher  # noqa: E402
from ussl_core.store.model_files import generation_models, read_card, write_card  # noqa: E402
from ussl_core.training import TrainingSettings  # noqa: E402

# extra-videos/README.md: what each file pattern is, where it comes from and its licence.
SOURCES = [
    ("sam2-*", "facebookresearch/sam2 (demo/data/gallery, notebooks/videos)", "Apache-2.0"),
    ("intel-*", "intel-iot-devkit/sample-videos", "CC BY 4.0"),
    ("depthanything-*", "LiheYoung/Depth-Anything (assets/examples_video)", "Apache-2.0"),
    ("gopro-*", "sreyas-mohan/udvd @ef037297 (datasets/Set8/GoPro)", "MIT"),
    ("propainter-*", "sczhou/ProPainter (inputs, web-demos)", "S-Lab License 1.0 (non-commercial)"),
    ("cotracker-*", "facebookresearch/co-tracker (gradio_demo/videos)", "CC BY-NC 4.0"),
    ("davis17-*", "DAVIS 2017 (via sreyas-mohan/udvd)", "DAVIS terms (research use)"),
]
SHAREABLE = {"Apache-2.0", "CC BY 4.0", "MIT"}
EXCLUDED_WHY = ("its licence does not allow sharing weights derived from it (non-commercial or "
                "research-only terms)")


def licence_of(name: str) -> tuple[str, str]:
    for pattern, origin, licence in SOURCES:
        if fnmatch.fnmatch(name, pattern):
            return origin, licence
    return "unknown", "unknown"


def export(project_root: Path, generation: int, target: Path) -> dict[str, Path]:
    """The generation's students and EvalSeg-Net copied to `target` as <architecture>.keras with
    their cards; returns {architecture: path}."""
    students, evalseg = generation_models(project_root / "models", generation)
    target.mkdir(parents=True, exist_ok=True)
    for old in [*target.glob("*.keras"), *target.glob("*.json")]:
        old.unlink()
    copied = {}
    for model in [*students, evalseg]:
        card = read_card(model)
        arch = card["architecture"]
        shutil.copyfile(model, target / f"{arch}.keras")
        card.update(name=arch, builtin=True)
        write_card(target / f"{arch}.keras", card)
        copied[arch] = target / f"{arch}.keras"
    return copied


def seconds_per_image(image_path: Path, repeats: int = 20) -> dict:
    """Time to segment one image with the shipped models (loaded), default method."""
    from ussl_core.media import read_image
    from ussl_core.predict import Segmenter

    settings = SegmentSettings()
    segmenter = Segmenter.builtin(settings.flip_average)
    image = read_image(image_path)
    segmenter.segment([image], settings.method, with_scores=True)   # warm-up (tracing)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        segmenter.segment([image], settings.method, with_scores=True)
        times.append(time.perf_counter() - started)
    return {"image": f"{image.shape[1]}x{image.shape[0]}", "method": settings.method,
            "median_ms": round(1000 * float(np.median(times)), 1), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", required=True, help="the extra-videos folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--davis-val", required=True)
    parser.add_argument("--davis-train", required=True)
    parser.add_argument("--images", type=int, default=20000, help="image steps per student and generation")
    parser.add_argument("--eval-step", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--target", default=str(BUILTIN_DIR), help="where the models and card go")
    parser.add_argument("--generations", type=int, choices=(1, 2), default=2,
                        help="run Algorithm 1 for this many generations; the last one ships")
    args = parser.parse_args()
    out, target = Path(args.out), Path(args.target)
    os.environ["USSL_BUILTIN_DIR"] = str(target)   # the scoring below segments with these models
    started = time.perf_counter()
    specs = expand_sources([Path(args.extra)])
    used = [s for s in specs if licence_of(s.path.name)[1] in SHAREABLE]
    left = [s for s in specs if s not in used]
    selection, g2_rule, evalseg = SelectionSettings(), GenerationSettings(), evalseg_settings()
    info = algorithm(out / "project", used, [], list(STUDENTS), args.images, args.workers,
                     selection, g2_rule, evalseg, args.generations)
    final = args.generations
    copied = export(out / "project", final, target)
    students = [copied[a] for a in STUDENTS if a in copied]
    names = {"students": [p.stem for p in students], "evalseg": "evalseg" if "evalseg" in copied else None}
    (target / CARD_NAME).write_text(json.dumps(names) + "\n")   # the full card follows the figures

    # Scoring: everything here is unseen by the shipped models.
    with (Project.open(out / "davis", write=True) if (out / "davis" / "project.sqlite").exists()
          else Project.create(out / "davis")) as project:
        for _ in add_sources(project, davis_sources(args.davis_val) + development_sources(args.davis_train)):
            pass
        for _ in run_teacher(project, workers=args.workers):
            pass
    prepare_scoring_project(out / "unseen", Path(args.davis_train), args.workers)
    models = {final: (students, copied.get("evalseg"))}
    val_names = {s.path.name for s in davis_sources(args.davis_val)}
    figures = score_sets(out / "davis", out / "unseen", val_names, args.eval_step, models)
    corloc = segment_corloc(None, Path(args.davis_val), out / "segment-val", out / "davis")
    timing = seconds_per_image(next(Path(args.davis_val).glob("JPEGImages/*/*/00000.jpg")))

    import keras
    import tensorflow as tf

    card = {
        "name": "ussl built-in compact models",
        **names,
        "default_method": SegmentSettings().method,
        "generation": final,
        "data": [{"source": s.path.name, "from": licence_of(s.path.name)[0],
                  "licence": licence_of(s.path.name)[1]} for s in used],
        "excluded": [{"source": s.path.name, "from": licence_of(s.path.name)[0],
                      "licence": licence_of(s.path.name)[1], "why": EXCLUDED_WHY} for s in left]
                    + [{"source": "davis2016-val, davis2016-train", "from": "DAVIS 2016",
                        "licence": "DAVIS terms (research use)", "why": EXCLUDED_WHY}],
        "labels": "none: VideoPCA's soft masks (generation 1)"
                  + (", then generation 1's students scored by its EvalSeg-Net (generation 2)" if final == 2 else "")
                  + "; no ground truth was used in training",
        "recipe": {"selection": asdict(selection), "training": asdict(TrainingSettings()),
                   "evalseg": asdict(evalseg), **({"generation2": asdict(g2_rule)} if final == 2 else {}),
                   "images_per_student": args.images},
        "generations": info,
        "figures": {"max_mean_iou_and_corloc": {k: v.get(f"g{final}") for k, v in figures.items()},
                    "segment_corloc_val": corloc, "segment_one_image": timing,
                    "note": "every DAVIS shot is unseen by these models"},
        "versions": {"ussl": __import__("ussl_core").__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "python": platform.python_version()},
        "command": " ".join(["python", *sys.argv]),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (target / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()

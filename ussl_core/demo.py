"""The headless demo: the method on the embedded sample (generated videos) or given sources.

Writes OUT/project (a normal project you can open in the app) and OUT/report: the purity
curve, a summary JSON with the teacher's figures, and example masks beside their frames.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ussl_core.atomic import write_text_atomic
from ussl_core.errors import ProjectError
from ussl_core.ingest import SourceSpec, add_sources, davis_sources
from ussl_core.progress import CancelToken, Progress
from ussl_core.purity import plot_curve, purity_curve
from ussl_core.sample import SampleSpec, write_sample_davis
from ussl_core.selection import SelectionSettings, select
from ussl_core.store import Project
from ussl_core.teacher.runner import producer_name, run_teacher

SAMPLE_VIDEOS = 4
SAMPLE_SPEC = SampleSpec(n_frames=40, width=192, height=144)


def sample_sources(out: Path, n_videos: int = SAMPLE_VIDEOS, spec: SampleSpec = SAMPLE_SPEC,
                   folder: str = "sample-data") -> list[SourceSpec]:
    """Generate the embedded sample (a DAVIS-layout root of synthetic videos) under out/."""
    root = out / folder
    if not (root / "JPEGImages").exists():
        write_sample_davis(root, n_videos, spec)
    return davis_sources(root)


def prepare_sample_project(root: Path, workers: int | None = None,
                           cancel: CancelToken | None = None) -> Iterator[Progress]:
    """The app's sample project at `root`: generated videos (beside it), VideoPCA masks and the
    demo's selection; students are left to train on demand. Resumable like every step."""
    sources = sample_sources(root.parent)
    project = Project.open(root, write=True, holder="ussl sample") if (root / "project.sqlite").exists() \
        else Project.create(root, holder="ussl sample")
    try:
        yield from add_sources(project, sources, cancel=cancel)
        yield from run_teacher(project, "videopca", workers=workers, cancel=cancel)
        if project.active_selection() is None:
            result = select(project, project.producer(producer_name("videopca")).id,
                            SelectionSettings(top_percent=DemoSettings.top_percent))
            yield Progress(1, 1, f"selected {result.n_selected} masks", stage="select")
    finally:
        project.close()


def overlay(frame: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """The frame with the soft mask in red on top (RGB uint8)."""
    mask = cv2.resize(soft, (frame.shape[1], frame.shape[0]))[..., None]
    red = np.array([255, 40, 40], np.float32)
    return (frame * (1 - 0.55 * mask) + red * 0.55 * mask).astype(np.uint8)


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs. The default trains three of the five students (BasicU-Net,
    DenseU-Net, LowRes-Net) to stay well under 15 minutes on a 2-core CPU."""
    archs: tuple[str, ...] = ("basic_unet", "dense_unet", "lowres")
    epochs: int = 15
    evalseg_epochs: int = 8
    top_percent: float = 30.0          # of the teacher's masks (the sample is small)
    generation2_top_percent: float = 40.0
    videos: int = SAMPLE_VIDEOS
    added_videos: int = 2              # new unlabeled videos joining in generation 2
    frames: int = SAMPLE_SPEC.n_frames

    def training(self):
        """The students' recipe (TrainingSettings' defaults) for the demo's epochs."""
        from ussl_core.training import TrainingSettings

        return replace(TrainingSettings(), epochs=self.epochs)

    def evalseg_training(self):
        from ussl_core.evalseg import evalseg_settings

        return evalseg_settings(epochs=self.evalseg_epochs)

    @classmethod
    def reduced(cls) -> "DemoSettings":
        """A minute-long configuration for the test suite."""
        return cls(archs=("lowres", "dense_unet"), epochs=1, evalseg_epochs=1, videos=2,
                   added_videos=1, frames=12)


def run_demo(out: Path, sources: list[SourceSpec] | None = None, workers: int | None = None,
             settings: DemoSettings = DemoSettings(), added: list[SourceSpec] | None = None,
             cancel: CancelToken | None = None) -> Iterator[Progress]:
    """Algorithm 1, two generations, compact preset; each step yields progress and is skipped
    when already done, so a re-run continues."""
    from ussl_core.evalseg import train_evalseg
    from ussl_core.generations import (GenerationSettings, current_generation, equal_budget_epochs,
                                       next_generation)
    from ussl_core.store.model_files import default_model_name, is_trained
    from ussl_core.training import train_student

    out.mkdir(parents=True, exist_ok=True)
    spec = SampleSpec(n_frames=settings.frames, width=SAMPLE_SPEC.width, height=SAMPLE_SPEC.height)
    if sources is None:
        sources = sample_sources(out, settings.videos, spec)
        added = added if added is not None else sample_sources(
            out, settings.added_videos, SampleSpec(**{**spec.__dict__, "seed": 100}), "added-data")
    root = out / "project"
    project = Project.open(root, write=True, holder="ussl demo") if (root / "project.sqlite").exists() \
        else Project.create(root, holder="ussl demo")
    training, evalseg_training = settings.training(), settings.evalseg_training()

    def train_generation():
        generation = current_generation(project)
        budget = training
        if generation > 1:  # the same image steps as generation 1, however many candidates
            budget = replace(training, epochs=equal_budget_epochs(project, settings.epochs))
        for arch in settings.archs:
            if not is_trained(root, default_model_name(arch, "compact", generation)):
                yield from train_student(project, arch, "compact", budget, resume=True, cancel=cancel)
        if not is_trained(root, default_model_name("evalseg", "compact", generation)):
            yield from train_evalseg(project, "compact", evalseg_training, resume=True, cancel=cancel)

    try:
        yield from add_sources(project, sources, cancel=cancel)
        first_videos = {v.id for v in project.videos()}
        yield from run_teacher(project, "videopca", workers=workers, cancel=cancel)
        producer = project.producer(producer_name("videopca"))
        if current_generation(project) == 1:
            if project.active_selection() is None:
                result = select(project, producer.id, SelectionSettings(top_percent=settings.top_percent))
                yield Progress(1, 1, f"selected {result.n_selected} masks", stage="select")
            yield from train_generation()
            yield from next_generation(project, added or [], GenerationSettings(
                threshold=None, top_percent=settings.generation2_top_percent), workers, cancel)
        yield from train_generation()
        write_report(project, producer.id, out / "report", first_videos)
        yield Progress(1, 1, f"report in {out / 'report'}", stage="report")
    finally:
        project.close()


def write_report(project: Project, producer_id: int, report: Path,
                 first_videos: set[int] | None = None) -> dict:
    """Purity curve, a teacher vs students vs ensembles table (max mean IoU), example masks."""
    from ussl_core.evaluate import evaluate_contenders
    from ussl_core.generations import current_generation

    report.mkdir(parents=True, exist_ok=True)
    curve = purity_curve(project, producer_id)
    plot_curve(curve, report / "purity.png")
    summary: dict = {"videos": len(project.videos()),
                     "frames": sum(v.frame_count for v in project.videos()),
                     "teacher": "videopca@g1", "purity_source": curve.source,
                     "selection_size": (project.active_selection() or {}).get("n_selected")}
    if curve.source == "ground_truth":
        summary.update(teacher_mean_iou_all=round(curve.mean_iou[-1], 4),
                       teacher_mean_iou_top10=round(curve.mean_iou[9], 4))
        table = {}
        for generation in range(1, current_generation(project) + 1):
            results = evaluate_contenders(project, generation, first_videos)
            table[f"g{generation}"] = {name: round(r["max_mean_iou"], 4) for name, r in results.items()}
        summary["max_mean_iou"] = table
        write_text_atomic(report / "table.md", _table_markdown(table))
    write_text_atomic(report / "summary.json", json.dumps(summary, indent=2))
    _write_examples(project, producer_id, report / "examples")
    return summary


def _table_markdown(table: dict[str, dict[str, float]]) -> str:
    lines = ["| generation | contender | max mean IoU |", "|---|---|---|"]
    for generation, rows in table.items():
        lines += [f"| {generation} | {name} | {value:.3f} |" for name, value in rows.items()]
    return "\n".join(lines) + "\n"


def mask_panel(frame: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """A soft mask as a grey RGB image of the frame's size (white = foreground)."""
    grey = np.rint(np.clip(cv2.resize(soft, (frame.shape[1], frame.shape[0])), 0, 1) * 255)
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)


def _write_examples(project: Project, producer_id: int, folder: Path, per_video: int = 2) -> None:
    """Per example frame one PNG row: frame | teacher | each student | Multi-Net | MultiSelect-Net
    (masks in grey, white = foreground)."""
    from ussl_core.ensemble import multi_net
    from ussl_core.export import write_png
    from ussl_core.generations import current_generation

    segmenter = _latest_segmenter(project, current_generation(project))
    shots = {s.id: s for s in project.shots()}
    frames = {f.id: f for f in project.frames()}
    for video in project.videos():
        masks = sorted(project.masks(producer_id, video.id), key=lambda m: -m.score)[:per_video]
        for mask, soft in project.read_masks(masks):
            shot = shots[mask.shot_id]
            frame = project.read_frames(shot, [frames[mask.frame_id].idx - shot.start])[0]
            panels = [frame, mask_panel(frame, soft)]
            if segmenter is not None:
                for result in segmenter.segment([frame], "multiselect" if segmenter.evalseg else "multi"):
                    panels += [mask_panel(frame, m) for m in result.student_masks.values()]
                    panels.append(mask_panel(frame, multi_net(list(result.student_masks.values()))))
                    panels.append(mask_panel(frame, result.mask))
            write_png(folder / f"{video.name}_{frames[mask.frame_id].name}.png", np.concatenate(panels, axis=1))
    if not any(folder.glob("*.png")):
        raise ProjectError(f"{project.root}: no masks to show in the report")


def _latest_segmenter(project: Project, generation: int):
    from ussl_core.store.model_files import generation_models

    students, evalseg = generation_models(project, generation)
    if not students:
        return None
    from ussl_core.predict import Segmenter

    return Segmenter(students, evalseg)

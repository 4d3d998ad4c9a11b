"""The headless demo: the method on the embedded sample (generated videos) or given sources.

Writes OUT/project (a normal project you can open in the app) and OUT/report: the purity
curve, a summary JSON with the teacher's figures, and example masks beside their frames.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

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


def sample_sources(out: Path, n_videos: int = SAMPLE_VIDEOS, spec: SampleSpec = SAMPLE_SPEC) -> list[SourceSpec]:
    """Generate the embedded sample (a DAVIS-layout root of synthetic videos) under out/."""
    root = out / "sample-data"
    if not (root / "JPEGImages").exists():
        write_sample_davis(root, n_videos, spec)
    return davis_sources(root)


def overlay(frame: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """The frame with the soft mask in red on top (RGB uint8)."""
    mask = cv2.resize(soft, (frame.shape[1], frame.shape[0]))[..., None]
    red = np.array([255, 40, 40], np.float32)
    return (frame * (1 - 0.55 * mask) + red * 0.55 * mask).astype(np.uint8)


def run_demo(out: Path, sources: list[SourceSpec] | None = None, workers: int | None = None,
             cancel: CancelToken | None = None) -> Iterator[Progress]:
    """Generation-1 teacher steps end to end; each yields progress. Re-running continues."""
    out.mkdir(parents=True, exist_ok=True)
    sources = sources if sources is not None else sample_sources(out)
    root = out / "project"
    project = Project.open(root, write=True, holder="ussl demo") if (root / "project.sqlite").exists() \
        else Project.create(root, holder="ussl demo")
    try:
        yield from add_sources(project, sources, cancel=cancel)
        yield from run_teacher(project, "videopca", workers=workers, cancel=cancel)
        producer = project.producer(producer_name("videopca"))
        result = select(project, producer.id, SelectionSettings(top_percent=10))
        yield Progress(1, 1, f"selected {result.n_selected} masks", stage="select")
        write_report(project, producer.id, out / "report")
        yield Progress(1, 1, f"report in {out / 'report'}", stage="report")
    finally:
        project.close()


def write_report(project: Project, producer_id: int, report: Path) -> dict:
    report.mkdir(parents=True, exist_ok=True)
    curve = purity_curve(project, producer_id)
    plot_curve(curve, report / "purity.png")
    summary = {"videos": len(project.videos()), "frames": sum(v.frame_count for v in project.videos()),
               "teacher": "videopca@g1", "purity_source": curve.source,
               "selection_size": (project.active_selection() or {}).get("n_selected")}
    if curve.source == "ground_truth":
        summary.update(teacher_mean_iou_all=round(curve.mean_iou[-1], 4),
                       teacher_mean_iou_top10=round(curve.mean_iou[9], 4),
                       teacher_corloc_all=round(curve.corloc[-1], 4))
    (report / "summary.json").write_text(json.dumps(summary, indent=2))
    _write_examples(project, producer_id, report / "examples")
    return summary


def _write_examples(project: Project, producer_id: int, folder: Path, per_video: int = 2) -> None:
    from ussl_core.export import write_png

    shots = {s.id: s for s in project.shots()}
    videos = {v.id: v for v in project.videos()}
    frames = {f.id: f for f in project.frames()}
    for video in videos.values():
        masks = sorted(project.masks(producer_id, video.id), key=lambda m: -m.score)[:per_video]
        for mask, soft in project.read_masks(masks):
            shot = shots[mask.shot_id]
            frame = project.read_frames(shot, [frames[mask.frame_id].idx - shot.start])[0]
            row = np.concatenate([frame, overlay(frame, soft)], axis=1)
            write_png(folder / f"{video.name}_{frames[mask.frame_id].name}.png", row)
    if not any(folder.glob("*.png")):
        raise ProjectError(f"{project.root}: no masks to show in the report")

"""Evaluating folders of soft masks against folders of ground truth (`ussl evaluate`)."""

from __future__ import annotations

from pathlib import Path

from ussl_core.ensemble import ensemble_mask
from ussl_core.errors import UsslError
from ussl_core.media import IMAGE_EXTENSIONS, natural_key
from ussl_core.metrics import SegmentationScores
from ussl_core.purity import read_ground_truth


def _masks_by_key(folder: Path) -> dict[str, Path]:
    """Image files under `folder` keyed by their relative path without extension."""
    if not folder.is_dir():
        raise UsslError(f"{folder}: {'not a folder' if folder.exists() else 'does not exist'}")
    return {str(p.relative_to(folder).with_suffix("")): p for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


def read_soft_mask(path: Path):
    """A soft map PNG as float32 in [0, 1] (16-bit maps keep their precision)."""
    import cv2
    import numpy as np

    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise UsslError(f"{path}: not a readable mask image")
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    return image.astype(np.float32) / scale


def evaluate_folders(pred_dir: Path, gt_dir: Path, n_thresholds: int = 256) -> dict:
    """All metrics for predictions `<stem>.png` against ground truths `<stem>.png` (nested
    folders matched by relative path). Ground truths without a prediction are counted and
    scored as empty predictions, so a missing output cannot flatter the figures."""
    import numpy as np

    preds, gts = _masks_by_key(pred_dir), _masks_by_key(gt_dir)
    if not gts:
        raise UsslError(f"{gt_dir}: no ground-truth masks (png/jpg) found")
    matched = [k for k in gts if k in preds]
    if not matched:
        raise UsslError(f"{pred_dir}: no prediction is named like a ground-truth mask "
                        f"(expected e.g. {next(iter(gts))}.png)")
    scores = SegmentationScores(n_thresholds)
    for key in sorted(gts, key=natural_key):
        gt = read_ground_truth(gts[key])
        pred = read_soft_mask(preds[key]) if key in preds else np.zeros(gt.shape, np.float32)
        scores.add(pred, gt)
    result = scores.result()
    result["n_missing_predictions"] = len(gts) - len(matched)
    return result


def evaluate_contenders(project, generation: int | None = None, video_ids: set[int] | None = None,
                        max_frames: int | None = None, seed: int = 0, batch: int = 32,
                        teacher: str = "videopca@g1", models: tuple[list, object] | None = None,
                        frame_step: int = 1, ensembles: tuple[str, ...] = ("multi", "multiselect"),
                        segmenter_options: dict | None = None) -> dict[str, dict]:
    """Score the teacher, each student of a generation, and the ensembles with the same metrics
    on the project's frames that have ground truth (ground truth is used only here).

    `models` = (student paths, EvalSeg-Net path or None) scores models from elsewhere (another
    project, the shipped ones) on this project's frames instead of a generation's own. Frames:
    every `frame_step`-th of each video, then at most `max_frames` of them at random. Ensembles
    are named as `Segmenter.segment`'s methods ("multi" is reported as multi_net, "multiselect" as
    multiselect_net, "mean" as mean_net). Predictions are made from the stored frames (working
    size) and scored at the ground truth's size. Returns {contender: SegmentationScores.result()}.
    """
    import numpy as np

    from ussl_core.predict import Segmenter
    from ussl_core.store.model_files import generation_models

    frames = [f for f in project.frames() if f.gt_path and (video_ids is None or f.video_id in video_ids)
              and f.idx % frame_step == 0]
    if max_frames and len(frames) > max_frames:
        keep = sorted(np.random.default_rng(seed).permutation(len(frames))[:max_frames].tolist())
        frames = [frames[i] for i in keep]
    if not frames:
        raise UsslError(f"{project.root}: no frames with ground truth to evaluate on")
    students, evalseg = models if models is not None else generation_models(project, generation)
    segmenter = Segmenter(students, evalseg, **(segmenter_options or {})) if students else None
    scores: dict[str, SegmentationScores] = {}

    def add(name: str, soft, gt) -> None:
        scores.setdefault(name, SegmentationScores()).add(soft, gt)

    teacher_masks = {}
    try:
        producer = project.producer(teacher)
        wanted = {f.id for f in frames}
        teacher_masks = {m.frame_id: m for m in project.masks(producer.id) if m.frame_id in wanted}
    except UsslError:
        pass
    shots = {s.id: s for s in project.shots()}
    by_shot: dict[int, list] = {}
    for f in frames:
        by_shot.setdefault(f.shot_id, []).append(f)
    for shot_id, group in by_shot.items():
        shot = shots[shot_id]
        if not shot.frames_shard:
            continue
        images = project.read_frames(shot, [f.idx - shot.start for f in group])
        gts = [read_ground_truth(project.abspath(f.gt_path)) for f in group]
        for f, gt in zip(group, gts):
            if f.id in teacher_masks:
                add(f"teacher ({teacher})", project.read_mask(teacher_masks[f.id]), gt)
        if segmenter is None:
            continue
        for start in range(0, len(group), batch):
            chunk = list(images[start:start + batch])
            for image, masks, gt in zip(chunk, segmenter.student_masks(chunk), gts[start:start + batch]):
                for name, mask in masks.items():
                    add(name, mask, gt)
                rated = (segmenter.evalseg_scores(image, masks)
                         if segmenter.evalseg is not None and "multiselect" in ensembles else {})
                for method in ensembles:
                    if method == "multiselect" and not rated:
                        continue
                    add(ENSEMBLE_NAMES[method], ensemble_mask(masks, rated, method)[0], gt)
    return {name: s.result() for name, s in scores.items()}


ENSEMBLE_NAMES = {"multi": "multi_net", "multiselect": "multiselect_net", "mean": "mean_net"}

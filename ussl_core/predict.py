"""Segmenting images with trained students, Multi-Net or MultiSelect-Net (imports TensorFlow).

Models are loaded once. Interactive use calls each model through a compiled function on one
image (much cheaper than `model.predict` per call); batches go through the same function.
Student outputs are linear (see models.builders) and are clipped to [0, 1] here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ussl_core.ensemble import COMMON_SIZE, ENSEMBLES, ensemble_mask, resize_mask
from ussl_core.errors import NoModelsError, UsslError
from ussl_core.media import resize_rgb
from ussl_core.store.model_files import read_card


def clip_unit(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


@dataclass
class Segmentation:
    """One image's result: the chosen soft mask at image size, and every student's mask."""
    mask: np.ndarray
    method: str
    student_masks: dict[str, np.ndarray] = field(default_factory=dict)  # at COMMON_SIZE
    evalseg_scores: dict[str, float] = field(default_factory=dict)
    chosen: str | None = None   # MultiSelect-Net's pick


class LoadedModel:
    """A `.keras` model with its card and a compiled single-batch call."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        from ussl_core.models.io import load_model

        self.path = Path(path)
        self.model = load_model(self.path)
        self.card = read_card(self.path)
        self.name = self.card.get("name", self.path.stem)
        self.architecture = self.card.get("architecture", self.model.name)
        shape = tuple(self.model.inputs[0].shape)
        if len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2]:   # not one of ussl's models
            raise UsslError(f"{self.path}: not a ussl segmentation model (its input is {shape}, "
                            "not a square RGB image)")
        self.input_size = int(shape[1])
        self._call = tf.function(lambda *x: self.model(list(x) if len(x) > 1 else x[0], training=False),
                                 reduce_retracing=True)

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        return self._call(*[np.asarray(i, np.float32) for i in inputs]).numpy()


class Segmenter:
    """Students (+ optional EvalSeg-Net) loaded once; segments images one by one or in batches."""

    def __init__(self, students: list[Path], evalseg: Path | None = None,
                 flip_average: bool = False) -> None:
        """flip_average: each student's mask is the mean of its masks of the image and of the
        image mirrored left to right (twice the time)."""
        if not students:
            raise NoModelsError("no student models to segment with; train one with `ussl train`")
        self.students = [LoadedModel(p) for p in students]
        self.evalseg = LoadedModel(evalseg) if evalseg else None
        self.flip_average = flip_average

    @classmethod
    def builtin(cls, flip_average: bool = False) -> "Segmenter":
        """The students and EvalSeg-Net shipped with ussl (see ussl_core.builtin)."""
        from ussl_core.builtin import builtin_models

        return cls(*builtin_models(), flip_average=flip_average)

    @classmethod
    def from_project(cls, project_root: Path, generation: int | None = None,
                     flip_average: bool = False) -> "Segmenter":
        """The latest generation's students and EvalSeg-Net of a project (or of a models folder)."""
        from ussl_core.store.model_files import generation_models, latest_generation

        generation = generation or latest_generation(project_root)
        if generation is None:
            raise NoModelsError(f"{project_root}: no trained models; train one with `ussl train`")
        return cls(*generation_models(project_root, generation), flip_average=flip_average)

    def student_masks(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Each student's soft mask of each image, at COMMON_SIZE x COMMON_SIZE."""
        out: list[dict[str, np.ndarray]] = [{} for _ in images]
        for student in self.students:
            batch = np.stack([resize_rgb(im, (student.input_size, student.input_size)) for im in images])
            predictions = clip_unit(student(batch)[..., 0])
            if self.flip_average:
                mirrored = clip_unit(student(np.ascontiguousarray(batch[:, :, ::-1]))[..., 0])
                predictions = 0.5 * (predictions + mirrored[:, :, ::-1])
            for i, p in enumerate(predictions):
                out[i][student.name] = resize_mask(p, COMMON_SIZE)
        return out

    def evalseg_scores(self, image: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
        if self.evalseg is None:
            return {}
        size = self.evalseg.input_size
        small = resize_rgb(image, (size, size))
        names = list(masks)
        images = np.repeat(small[None], len(names), axis=0)
        candidates = np.stack([resize_mask(masks[n], size)[..., None] for n in names])
        scores = self.evalseg(images, candidates)[:, 0]
        return {n: float(s) for n, s in zip(names, scores)}

    def segment(self, images: list[np.ndarray], method: str = "multi",
                with_scores: bool = False) -> list[Segmentation]:
        """Soft masks at each image's own size by a student's name or architecture, 'multi'
        (Multi-Net: product of the students) or 'multiselect' (the student EvalSeg-Net rates best).
        `with_scores` also rates every student's mask with EvalSeg-Net (when there is one)."""
        results = []
        for image, masks in zip(images, self.student_masks(images)):
            rate = method == "multiselect" or (with_scores and self.evalseg is not None)
            scores = self.evalseg_scores(image, masks) if rate else {}
            key = method if method in ENSEMBLES else self._student_name(method)
            soft, chosen = ensemble_mask(masks, scores, key)
            full = resize_mask(soft, (image.shape[1], image.shape[0]))
            results.append(Segmentation(full, method, masks, scores, chosen))
        return results

    def _student_name(self, key: str) -> str:
        for s in self.students:
            if key in (s.name, s.architecture):
                return s.name
        known = ", ".join(s.name for s in self.students)
        raise UsslError(f"no student {key!r} among the loaded models ({known}); "
                        "use multi, mean, multiselect or one of these")

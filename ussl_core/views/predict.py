"""The Predict panel's Qt-free state and work: the dropped images and what is known of each,
segmenting and rendering one image, loading the models, exporting, and the texts the panel shows.

Every student's mask and its EvalSeg-Net score are kept for every image (small), while the
full-size views of a method (the soft mask, boxes, GrabCut cut-out) are made for the shown image
and its neighbours only and kept in a small cache. Export writes what `ussl segment` writes
(<stem>.png, an 8-bit soft mask at the input's size; boxes.json) plus boxes.csv and
<stem>.cutout.png (RGBA). TensorFlow is imported only when models are loaded (`load_models`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ussl_core.builtin import builtin_available, builtin_fingerprint
from ussl_core.ensemble import ENSEMBLES, ensemble_mask, resize_mask
from ussl_core.errors import MediaError, NoModelsError, UsslError
from ussl_core.export import soft_to_uint8, write_png
from ussl_core.media import is_image_file, list_image_files, read_image, resize_rgb
from ussl_core.postprocess import BoxSettings, boxes_from_mask, grabcut_cutout
from ussl_core.progress import CancelToken
from ussl_core.segment import SegmentSettings, output_stems, write_boxes
from ussl_core.store import model_files

if TYPE_CHECKING:
    from ussl_core.predict import Segmenter

METHOD_LABELS = {"multi": "Multi-Net", "mean": "Mean-Net", "multiselect": "MultiSelect-Net"}
METHOD_TIPS = {"multi": "Multi-Net: the pixel-wise product of every student's mask",
               "mean": "Mean-Net: the pixel-wise mean of every student's mask",
               "multiselect": "MultiSelect-Net: per image, the student EvalSeg-Net rates best"}
DEFAULT_METHOD = SegmentSettings().method
RENDER_CACHE = 12           # full-size views kept: the shown image, its neighbours, a few more

# The models' states
NO_PROJECT, LOADING, READY, NO_MODELS, FAILED = "no_project", "loading", "ready", "no_models", "failed"

BUILTIN_HINT = ("{why}: segmenting with the models shipped with ussl (compact students and "
                "EvalSeg-Net that ussl trained on unlabeled video; their card is in "
                "ussl_core/builtin/card.json). A project's own trained models take over when it has them.")


# ============================================================================ one image
@dataclass(frozen=True)
class ImageResult:
    """What segmenting one image leaves (small): every student's mask and its score."""
    path: Path
    size: tuple[int, int]                       # (width, height) of the input
    student_masks: dict[str, np.ndarray]        # at ensemble.COMMON_SIZE
    scores: dict[str, float]                    # EvalSeg-Net's, {} without one
    thumbnail: np.ndarray                       # RGB, fits the film strip's thumbnails

    @property
    def pick(self) -> str | None:
        """MultiSelect-Net's choice: the student EvalSeg-Net rates best."""
        return max(self.scores, key=self.scores.get) if self.scores else None


@dataclass(frozen=True)
class Rendered:
    """One method's full-size views of one image."""
    path: Path
    method: str
    image: np.ndarray                           # RGB input
    mask: np.ndarray                            # float32 soft mask at the input's size
    boxes: list[tuple[int, int, int, int]]      # (x0, y0, x1, y1), largest first
    cutout: np.ndarray | None = None            # RGBA, alpha from GrabCut (None: not made)


def expand_paths(paths: Sequence[Path]) -> tuple[list[Path], dict[Path, str]]:
    """Image files from dropped files and folders (a folder's images in natural order), and a
    message for each path that is neither."""
    images: list[Path] = []
    problems: dict[Path, str] = {}
    for path in map(Path, paths):
        try:
            if path.is_dir():
                images += list_image_files(path)
            elif not path.exists():
                raise MediaError(path, "does not exist")
            elif is_image_file(path):
                images.append(path)
            else:
                raise MediaError(path, "not an image file")
        except MediaError as exc:
            problems[path] = str(exc)
    return images, problems


def thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image shrunk (never enlarged) to fit `size` (width, height), aspect kept."""
    h, w = image.shape[:2]
    scale = min(size[0] / w, size[1] / h, 1.0)
    return resize_rgb(image, (max(1, round(w * scale)), max(1, round(h * scale))))


def segment_image(segmenter: Segmenter, path: Path,
                  thumb_size: tuple[int, int]) -> tuple[ImageResult, np.ndarray]:
    """Read one image and run every student (and EvalSeg-Net) on it."""
    image = read_image(path)
    masks = segmenter.student_masks([image])[0]
    scores = segmenter.evalseg_scores(image, masks)
    result = ImageResult(path, (image.shape[1], image.shape[0]), masks, scores,
                         thumbnail(image, thumb_size))
    return result, image


def render(result: ImageResult, image: np.ndarray, method: str, cutout: bool = True) -> Rendered:
    """A method's soft mask at the input's size, its boxes and GrabCut cut-out, as `ussl segment
    --boxes --grabcut` makes them."""
    soft, _ = ensemble_mask(result.student_masks, result.scores, method)
    mask = np.clip(resize_mask(soft, result.size), 0.0, 1.0).astype(np.float32)
    boxes = boxes_from_mask(mask, None, BoxSettings(mode="all"))
    return Rendered(result.path, method, image, mask, boxes, grabcut_cutout(image, mask) if cutout else None)


@dataclass(frozen=True, eq=False)
class Task:
    """One image's work for a thread (one at a time: the loaded models are not shared)."""
    kind: str                       # "segment": run the students; "render": views only
    path: Path
    method: str
    make_view: bool                 # the shown image or a neighbour: make its full-size views
    result: ImageResult | None = None   # the image's segmentation, for "render"


@dataclass(frozen=True)
class Prediction:
    """What a task leaves: a new segmentation, views, or why the file failed."""
    task: Task
    result: ImageResult | None = None
    view: Rendered | None = None
    error: str = ""


def run_task(segmenter: Segmenter, task: Task, thumb_size: tuple[int, int]) -> Prediction:
    """Segment or render one image. A file that cannot be read or segmented is an error naming
    it (so that it is one message and off the film strip, never a dead panel)."""
    try:
        if task.kind == "segment":
            result, image = segment_image(segmenter, task.path, thumb_size)
        else:
            result, image = task.result, read_image(task.path)
        view = render(result, image, task.method) if task.make_view else None
        return Prediction(task, result if task.kind == "segment" else None, view)
    except UsslError as exc:
        return Prediction(task, error=str(exc))
    except Exception as exc:   # e.g. OpenCV on a strange image: name the file
        return Prediction(task, error=f"{task.path}: {type(exc).__name__}: {exc}")


# ============================================================================ the film strip
@dataclass(frozen=True)
class ExportJob:
    """What to export, made on the GUI thread; `run` writes it in a thread."""
    folder: Path
    method: str
    items: list[tuple[ImageResult, Rendered | None]]   # a cached view is reused when it has all
    stems: dict[Path, str]
    masks: bool = True
    boxes: bool = True
    cutouts: bool = True
    left_out: int = 0               # images asked for but not segmented yet

    def run(self, cancel: CancelToken) -> Exported:
        self.folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        skipped: list[str] = []
        all_boxes: dict[str, list] = {}
        for result, view in self.items:
            cancel.raise_if_cancelled()
            try:
                if view is None or (self.cutouts and view.cutout is None):
                    view = render(result, read_image(result.path), self.method, self.cutouts)
            except MediaError as exc:   # the file changed or went away since it was segmented
                skipped.append(str(exc))
                continue
            stem = self.stems[result.path]
            if self.masks:
                written.append(self.folder / f"{stem}.png")
                write_png(written[-1], soft_to_uint8(view.mask))
            if self.cutouts:
                written.append(self.folder / f"{stem}.cutout.png")
                write_png(written[-1], view.cutout)
            all_boxes[stem] = view.boxes
        if self.boxes and all_boxes:
            written += write_boxes(self.folder, all_boxes)
        return Exported(self.folder, len(self.items) - len(skipped), written, skipped, self.left_out)


@dataclass(frozen=True)
class Exported:
    """What an export wrote."""
    folder: Path
    images: int
    written: list[Path]
    skipped: list[str]              # one message per image that could not be read again
    left_out: int = 0

    def summary(self) -> str:
        note = f"; {self.left_out} not segmented yet were left out" if self.left_out else ""
        return f"Exported {plural(self.images, 'image')} to {self.folder}{note}"


class FilmStripImages:
    """The dropped images in film-strip order and what is known of each: segmentations (all
    kept), errors, and a few images' full-size views (a least-recently-used cache)."""

    def __init__(self, cache_size: int = RENDER_CACHE) -> None:
        self.paths: list[Path] = []
        self.results: dict[Path, ImageResult] = {}
        self.errors: dict[Path, str] = {}
        self.cache_size = cache_size
        self._views: OrderedDict[tuple[Path, str], Rendered] = OrderedDict()

    def add(self, paths: Sequence[Path]) -> tuple[list[Path], dict[Path, str]]:
        """Add images and folders of images (an image already there is not added twice);
        returns the images added and a message for each path that is not an image."""
        images, problems = expand_paths(paths)
        added = []
        for path in images:
            if path not in self.paths:
                self.errors.pop(path, None)
                self.paths.append(path)
                added.append(path)
        self.errors.update(problems)
        return added, problems

    def remove(self, path: Path, message: str) -> int:
        """Take off a file that could not be read or segmented; returns the row it had."""
        row = self.paths.index(path)
        self.paths.pop(row)
        self.errors[path] = message
        return row

    def clear(self) -> None:
        """Every image off the strip (the errors stay, for the message's details)."""
        self.paths.clear()
        self.forget_results()

    def forget_results(self) -> None:
        """Other models: every segmentation and view is out of date."""
        self.results.clear()
        self._views.clear()

    def view(self, path: Path, method: str) -> Rendered | None:
        return self._views.get((Path(path), method))

    def segmented(self) -> int:
        return sum(1 for path in self.paths if path in self.results)

    def next_task(self, row: int, method: str) -> Task | None:
        """What to compute next: the shown image (`row`) first, then every unsegmented image in
        strip order, then the shown image's neighbours' views."""
        paths = self.paths
        near = {paths[r] for r in (row - 1, row, row + 1) if 0 <= r < len(paths)}

        def task(kind: str, path: Path) -> Task:
            return Task(kind, path, method, path in near, self.results.get(path))

        if 0 <= row < len(paths):
            if paths[row] not in self.results:
                return task("segment", paths[row])
            if (paths[row], method) not in self._views:
                return task("render", paths[row])
        for path in paths:
            if path not in self.results:
                return task("segment", path)
        for neighbour in (row + 1, row - 1):
            if 0 <= neighbour < len(paths) and (paths[neighbour], method) not in self._views:
                return task("render", paths[neighbour])
        return None

    def accept(self, prediction: Prediction) -> bool:
        """Keep what a task made; False when its image is no longer on the strip."""
        path = prediction.task.path
        if path not in self.paths:
            return False
        if prediction.result is not None:
            self.results[path] = prediction.result
        view = prediction.view
        if view is not None:
            self._views[(path, view.method)] = view
            self._views.move_to_end((path, view.method))
            while len(self._views) > self.cache_size:
                self._views.popitem(last=False)
        return True

    def export_job(self, folder: Path, method: str, paths: Sequence[Path], masks: bool = True,
                   boxes: bool = True, cutouts: bool = True) -> ExportJob | None:
        """The export of those `paths` that are segmented (None when none is)."""
        ready = [path for path in paths if path in self.results]
        if not ready:
            return None
        return ExportJob(Path(folder), method, [(self.results[p], self.view(p, method)) for p in ready],
                         output_stems(self.paths), masks, boxes, cutouts, len(paths) - len(ready))


# ============================================================================ models
def models_fingerprint(root: Path | None) -> tuple:
    """What the loaded models depend on: the project's model files (the shipped models' when
    there is no project)."""
    return builtin_fingerprint() if root is None else model_files.revision(root)


@dataclass(frozen=True)
class LoadedModels:
    """What loading the models leaves."""
    fingerprint: tuple
    segmenter: Segmenter | None = None    # None: unchanged, or no models to load
    source: str | None = None               # "project" or "builtin"
    missing: str = ""                       # why the project's own models are not used
    unchanged: bool = False                 # the models already loaded are still current


def load_models(root: Path | None, known: tuple | None = None) -> LoadedModels:
    """The project's latest generation; the models shipped with ussl when there is no project
    or it has no trained models. Nothing is loaded when the model files still match `known`.
    Slow (TensorFlow, seconds) and cannot stop halfway."""
    fingerprint = models_fingerprint(root)
    if fingerprint == known:
        return LoadedModels(fingerprint, unchanged=True)
    from ussl_core.predict import Segmenter   # TensorFlow: only here

    missing = ""
    if root is not None:
        try:
            return LoadedModels(fingerprint, Segmenter.from_project(root), "project")
        except NoModelsError as exc:
            if not builtin_available():
                return LoadedModels(fingerprint, missing=str(exc))
            missing = str(exc)
    return LoadedModels(fingerprint, Segmenter.builtin(), "builtin", missing)


@dataclass(frozen=True)
class MethodChoice:
    """One entry of the method list: an ensemble, or one student alone."""
    name: str
    label: str
    tip: str
    enabled: bool = True
    architecture: str | None = None         # a student's; None for an ensemble


def method_choices(segmenter: Segmenter | None) -> list[MethodChoice]:
    """The ensembles, then every loaded student; MultiSelect-Net needs an EvalSeg-Net."""
    choices = []
    for method in ENSEMBLES:
        if method == "multiselect" and segmenter is not None and segmenter.evalseg is None:
            choices.append(MethodChoice(method, METHOD_LABELS[method],
                                        "Needs an EvalSeg-Net: train one in the Training panel", False))
        else:
            choices.append(MethodChoice(method, METHOD_LABELS[method], METHOD_TIPS[method]))
    for student in segmenter.students if segmenter is not None else []:
        choices.append(MethodChoice(student.name, student.name,
                                    f"Only {student.name} ({student.architecture})",
                                    architecture=student.architecture))
    return choices


def usable_method(current: str, choices: Sequence[MethodChoice]) -> str:
    """`current` while it is offered and enabled; otherwise the default method (Multi-Net when
    the default is MultiSelect-Net and no EvalSeg-Net is loaded)."""
    enabled = {choice.name for choice in choices if choice.enabled}
    if current in enabled:
        return current
    rated = "multiselect" in enabled and any(choice.architecture for choice in choices)
    return DEFAULT_METHOD if DEFAULT_METHOD != "multiselect" or rated else "multi"


def choose_method(name: str, choices: Sequence[MethodChoice]) -> str:
    """The method named `name`, or the first student of that architecture; ValueError when it
    is neither or not available."""
    by_name = {choice.name: choice for choice in choices}
    students = [choice for choice in choices if choice.architecture]
    if name not in by_name and students:
        matches = [choice.name for choice in students if choice.architecture == name]
        if not matches:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(by_name)}")
        name = matches[0]
    if name not in by_name or not by_name[name].enabled:
        raise ValueError(f"{name!r} is not available with this project's models")
    return name


# ============================================================================ texts
def plural(n: int, noun: str, suffix: str = "s") -> str:
    return f"{n} {noun}{suffix if n != 1 else ''}"


def models_hint(state: str, source: str | None, project_open: bool, message: str) -> str:
    """The banner above the images: what the models are, or why there are none ("" for none)."""
    return {
        NO_PROJECT: "Open a project that has trained models (File \u25b8 Open project) to "
                    "segment images.",
        READY: BUILTIN_HINT.format(why="This project has no trained models yet" if project_open
                                   else "No project is open") if source == "builtin" else "",
        LOADING: "Loading the models\u2026",
        NO_MODELS: "This project has no trained models yet, so images cannot be segmented. "
                   "Train students (and EvalSeg-Net) in the Training panel, or with "
                   "`ussl train`; dropped images are segmented as soon as models exist.",
        FAILED: f"The project's models could not be loaded: {message}",
    }.get(state, "")


def progress_text(total: int, segmented: int, segmenting: bool) -> str:
    if segmenting and segmented < total:
        return f"Segmenting {segmented + 1} of {total}\u2026"
    return plural(total, "image") if total else ""


def view_summary(path: Path, result: ImageResult | None, view: Rendered, position: int, count: int) -> str:
    """The line under the shown image: name, size, method (and pick), boxes, place in the strip."""
    w, h = result.size if result else (view.image.shape[1], view.image.shape[0])
    label = METHOD_LABELS.get(view.method, view.method)
    if view.method == "multiselect" and result and result.pick:
        label += f" (picked {result.pick})"
    return (f"{path.name}  \u00b7  {w}\u00d7{h}  \u00b7  {label}  \u00b7  "
            f"{plural(len(view.boxes), 'box', 'es')}  \u00b7  {position} of {count}")


@dataclass(frozen=True)
class StudentTile:
    """One student's mask of the shown image with its EvalSeg-Net score (the paper's Figure 4)."""
    name: str
    mask: np.ndarray | None
    caption: str
    tooltip: str
    picked: bool                            # MultiSelect-Net's pick


def student_tiles(names: Sequence[str], result: ImageResult | None, method: str) -> list[StudentTile]:
    pick = result.pick if result else None
    tiles = []
    for name in names:
        score = result.scores.get(name) if result else None
        star = "\u2605 " if name == pick else ""
        tooltip = (f"{name}: " + (f"EvalSeg-Net score {score:.3f}" if score is not None
                                  else "no EvalSeg-Net score (no EvalSeg-Net)")
                   + ("; MultiSelect-Net's pick" if name == pick else "")
                   + ("; shown above" if name == method else ""))
        tiles.append(StudentTile(name, result.student_masks[name] if result else None,
                                 f"{name}\n{star}{score:.3f}" if score is not None else name,
                                 tooltip, name == pick))
    return tiles


def students_heading(names: Sequence[str], result: ImageResult | None) -> str:
    if not names:
        return "Students: none loaded"
    if result is not None and not result.scores:
        return "Students (no EvalSeg-Net in this generation: no scores)"
    return "Students, with EvalSeg-Net's score (\u2605 MultiSelect-Net's pick)"


def export_blocked(exporting: bool, any_part: bool, ready: bool, models_ready: bool) -> str:
    """Why an export button is disabled ("" when it is not)."""
    if exporting:
        return "An export is running"
    if not any_part:
        return "Tick what to export: masks, boxes or cut-outs"
    if ready:
        return ""
    return "Nothing segmented yet" + ("" if models_ready else ": the project has no models loaded")


def skipped_line(path: Path, message: str) -> str:
    """A message line for a skipped file: its name and the error without the path it starts
    with (the full one is in the tooltip)."""
    path = Path(path)
    short = message[len(str(path)) + 2:] if message.startswith(f"{path}: ") else message
    return f"Skipped {path.name}: {short}"

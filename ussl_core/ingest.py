"""Adding sources to a project: video files, frame folders, image folders, DAVIS roots.

Adding reads each source once, cheaply (shot detection on thumbnails), and records the
video, its shots and frames, and the ground-truth file of each frame when given. Adding a
source that is already in the project is skipped, so a re-run of `ussl add` is harmless.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ussl_core.errors import MediaError
from ussl_core.media import (IMAGE_EXTENSIONS, FrameFolderSource, MediaSource, ShotSettings, is_image_file,
                             is_video_file, list_image_files, natural_key, open_source, scan_shots)
from ussl_core.progress import CancelToken, Progress
from ussl_core.store import Project


@dataclass(frozen=True)
class SourceSpec:
    """One source to add: its path, where its ground truth lies, and how to read it."""
    path: Path
    ground_truth: Path | None = None
    images: bool = False  # a folder of unrelated images (each its own shot), not video frames
    name: str | None = None


def davis_sources(root: str | os.PathLike) -> list[SourceSpec]:
    """Every shot of a DAVIS-layout root: JPEGImages/<res>/<shot> with Annotations/<res>/<shot>.

    Whichever resolution folder exists is used (480p, 240p, 1080p ...); with several, the
    largest resolution.
    """
    root = Path(root)
    images = root / "JPEGImages"
    if not images.is_dir():
        raise MediaError(root, "not a DAVIS root (no JPEGImages folder)")
    resolutions = sorted((p for p in images.iterdir() if p.is_dir()),
                         key=lambda p: natural_key(p.name))
    if not resolutions:
        raise MediaError(images, "no resolution folder (such as 480p) in JPEGImages")
    res = resolutions[-1]
    shots = sorted((p for p in res.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
    if not shots:
        raise MediaError(res, "no shot folders")
    annotations = root / "Annotations" / res.name
    return [SourceSpec(shot, annotations / shot.name if (annotations / shot.name).is_dir() else None)
            for shot in shots]


def is_davis_root(path: Path) -> bool:
    return (Path(path) / "JPEGImages").is_dir()


def _visible_entries(folder: Path) -> list[Path]:
    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise MediaError(folder, f"cannot be listed ({exc.strerror or exc})") from None
    return sorted(entries, key=lambda p: natural_key(p.name))


def collection_members(folder: Path) -> list[Path]:
    """The videos of a collection folder: its video files and its sub-folders of frames.

    A folder is a collection when it holds no image of its own (then it is a frame folder) but
    video files or folders of frames, as a folder of downloaded footage does. Empty list otherwise.
    """
    entries = _visible_entries(folder)
    if any(is_image_file(p) and p.is_file() for p in entries):
        return []
    members = []
    for entry in entries:
        if entry.is_file() and is_video_file(entry):
            members.append(entry)
        elif entry.is_dir() and any(is_image_file(p) and p.is_file() for p in _visible_entries(entry)):
            members.append(entry)
    return members


def expand_sources(paths: list[Path], davis: bool = False, images: bool = False,
                   ground_truth: Path | None = None) -> list[SourceSpec]:
    """The sources a user means by some paths: every shot of a DAVIS root (with its
    annotations), every video file and frame folder of a collection folder (mixed footage in
    one step), or the path itself (a video, a frame folder, or with `images` an image folder).

    `davis` insists that each path is a DAVIS root (an error otherwise); DAVIS roots are also
    recognised without it. `ground_truth` applies to the non-DAVIS sources (DIR/<frame>.png or
    DIR/<video>/<frame>.png).
    """
    specs: list[SourceSpec] = []
    for path in map(Path, paths):
        if davis or (path.is_dir() and is_davis_root(path) and not images):
            specs += davis_sources(path)
            continue
        members = collection_members(path) if path.is_dir() and not images else []
        specs += [SourceSpec(m, ground_truth) for m in members] or [SourceSpec(path, ground_truth, images)]
    return specs


def ground_truth_files(folder: Path, frame_names: list[str]) -> list[Path | None]:
    """The mask of each frame in `folder`, matched by file stem (any image extension)."""
    if not folder.is_dir():
        raise MediaError(folder, "ground-truth folder does not exist")
    by_stem = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    found = [by_stem.get(name) for name in frame_names]
    if not any(found):
        raise MediaError(folder, "no ground-truth masks named like the frames "
                                 f"(expected e.g. {frame_names[0]}.png)")
    return found


def _ground_truth_for(spec: SourceSpec, source: MediaSource) -> tuple[list[Path | None] | None, Path | None]:
    if spec.ground_truth is None:
        return None, None
    folder = spec.ground_truth
    # One ground-truth root for several sources: DIR/<video name>/<frame>.png.
    if (folder / source.name).is_dir():
        folder = folder / source.name
    return ground_truth_files(folder, source.frame_names), folder


def add_sources(project: Project, specs: list[SourceSpec],
                shot_settings: ShotSettings = ShotSettings(),
                cancel: CancelToken | None = None) -> Iterator[Progress]:
    """Add each source; yields one progress event per source. Skips sources already added."""
    project.require_writable()
    known = {v.source: v.name for v in project.videos()}
    for done, spec in enumerate(specs):
        if cancel:
            cancel.raise_if_cancelled()
        existing = known.get(project.relpath(spec.path))
        if existing is not None:
            yield Progress(done + 1, len(specs), f"{existing}: already in the project", stage="add")
            continue
        if spec.images:
            names = [p.stem for p in list_image_files(spec.path)]
            source = open_source(spec.path)
            shots = [(i, i + 1) for i in range(len(names))]
            kind = "images"
        else:
            source = open_source(spec.path)
            if isinstance(source, FrameFolderSource):
                source.check_one_size()
            names = source.frame_names
            shots = scan_shots(source, shot_settings)
            kind = source.kind
        gt_files, gt_folder = _ground_truth_for(spec, source)
        video_name = _unique_name(project, spec.name or source.name)
        project.add_video(video_name, kind, spec.path, names, (source.width, source.height),
                          source.fps, shots, [str(p) if p else None for p in gt_files] if gt_files else None,
                          gt_folder)
        yield Progress(done + 1, len(specs),
                       f"{video_name}: {len(names)} frames, {len(shots)} shot(s)"
                       + (", with ground truth" if gt_files else ""), stage="add")


def _unique_name(project: Project, name: str) -> str:
    candidate, n = name, 2
    while project.video_by_name(candidate) is not None:
        candidate, n = f"{name}-{n}", n + 1
    return candidate

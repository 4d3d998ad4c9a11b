"""Tests of adding sources to a project: frame folders, image folders, DAVIS roots."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ussl_core.errors import MediaError, ProjectError
from ussl_core.ingest import (SourceSpec, add_sources, davis_sources, expand_sources,
                             ground_truth_files)
from ussl_core.media import ShotSettings
from ussl_core.progress import CancelToken, Cancelled
from ussl_core.sample import SampleSpec, generate_video, write_frame_folder
from ussl_core.store import Project

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def write_frames(folder: Path, n: int, size: tuple[int, int] = (32, 24), ext: str = ".jpg",
                 seed: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"{i:05d}" for i in range(n)]
    base = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / f"{name}{ext}"), np.roll(base, i, axis=1))
    return names


def write_masks(folder: Path, names: list[str], size: tuple[int, int] = (32, 24)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        mask = np.zeros((size[1], size[0]), np.uint8)
        mask[5:10, 5:10] = 255
        cv2.imwrite(str(folder / f"{name}.png"), mask)


@pytest.fixture
def project(tmp_path):
    project = Project.create(tmp_path / "project")
    yield project
    project.close()


# ----------------------------------------------------------------------------- DAVIS layout


def fake_davis(root: Path, res: str, shots: dict[str, bool]) -> Path:
    """JPEGImages/<res>/<shot> (+ Annotations/<res>/<shot> where the value is True)."""
    for shot, with_gt in shots.items():
        names = write_frames(root / "JPEGImages" / res / shot, 3)
        if with_gt:
            write_masks(root / "Annotations" / res / shot, names)
    return root


def test_davis_sources_use_the_resolution_folder_that_exists(tmp_path):
    root = fake_davis(tmp_path / "davis", "240p", {"shot10": True, "shot2": False, "car": True})
    specs = davis_sources(root)
    assert [s.path.name for s in specs] == ["car", "shot2", "shot10"]  # natural order
    assert all(s.path.parent == root / "JPEGImages" / "240p" for s in specs)
    gt = {s.path.name: s.ground_truth for s in specs}
    assert gt["car"] == root / "Annotations" / "240p" / "car"
    assert gt["shot10"] == root / "Annotations" / "240p" / "shot10"
    assert gt["shot2"] is None
    assert not any(s.images for s in specs)


def test_davis_sources_prefer_the_largest_resolution(tmp_path):
    root = tmp_path / "davis"
    for res in ("480p", "1080p", "240p"):
        fake_davis(root, res, {"a": True})
    specs = davis_sources(root)
    assert [s.path for s in specs] == [root / "JPEGImages" / "1080p" / "a"]
    assert specs[0].ground_truth == root / "Annotations" / "1080p" / "a"


def test_davis_sources_errors(tmp_path):
    with pytest.raises(MediaError, match="JPEGImages"):
        davis_sources(tmp_path)
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(MediaError, match="resolution"):
        davis_sources(tmp_path)
    (tmp_path / "JPEGImages" / "480p").mkdir()
    with pytest.raises(MediaError, match="no shot folders"):
        davis_sources(tmp_path)


def test_add_davis_root_with_ground_truth(tmp_path, project):
    root = fake_davis(tmp_path / "davis", "240p", {"a": True, "b": False})
    events = list(add_sources(project, davis_sources(root)))
    assert [e.done for e in events] == [1, 2] and events[-1].total == 2
    assert "with ground truth" in events[0].message and "with ground truth" not in events[1].message
    a, b = project.videos()
    assert (a.name, a.kind, a.frame_count, a.width, a.height) == ("a", "frames", 3, 32, 24)
    assert a.gt_source is not None and b.gt_source is None
    assert all(f.gt_path for f in project.frames(a.id))
    assert not any(f.gt_path for f in project.frames(b.id))
    # Stored relative to the project, and they resolve to the real files.
    frame = project.frames(a.id)[2]
    assert not Path(frame.gt_path).is_absolute()
    assert project.abspath(frame.gt_path) == (root / "Annotations" / "240p" / "a" / "00002.png").resolve()
    assert not Path(a.source).is_absolute()


# ----------------------------------------------------------------------------- frame folders


def test_adding_twice_skips(tmp_path, project):
    folder = tmp_path / "clip"
    write_frames(folder, 4)
    list(add_sources(project, [SourceSpec(folder)]))
    events = list(add_sources(project, [SourceSpec(folder), SourceSpec(tmp_path / "clip")]))
    assert all("already in the project" in e.message for e in events)
    assert len(project.videos()) == 1 and len(project.frames()) == 4
    # The same folder by another spelling of its path is the same source.
    list(add_sources(project, [SourceSpec(tmp_path / "clip" / ".." / "clip")]))
    assert len(project.videos()) == 1


def test_ground_truth_matched_by_stem(tmp_path, project):
    folder = tmp_path / "clip"
    names = write_frames(folder, 4)
    gt = tmp_path / "gt"
    write_masks(gt, [names[0], names[3]])
    # Another image extension still matches by stem; other files are ignored.
    mask = np.zeros((24, 32), np.uint8)
    cv2.imwrite(str(gt / f"{names[1]}.bmp"), mask)
    (gt / f"{names[2]}.txt").write_text("not a mask")
    list(add_sources(project, [SourceSpec(folder, gt)]))
    frames = project.frames()
    found = [Path(f.gt_path).name if f.gt_path else None for f in frames]
    assert found == ["00000.png", "00001.bmp", None, "00003.png"]
    assert ground_truth_files(gt, names) == [gt / "00000.png", gt / "00001.bmp", None,
                                             gt / "00003.png"]


def test_one_ground_truth_root_for_several_sources(tmp_path, project):
    specs = []
    for name in ("first", "second"):
        names = write_frames(tmp_path / "src" / name, 2)
        write_masks(tmp_path / "gt" / name, names)
        specs.append(SourceSpec(tmp_path / "src" / name, tmp_path / "gt"))
    list(add_sources(project, specs))
    for video in project.videos():
        assert Path(video.gt_source).name == video.name
        assert all(Path(f.gt_path).parent.name == video.name for f in project.frames(video.id))


def test_ground_truth_without_matching_names_raises(tmp_path, project):
    folder = tmp_path / "clip"
    write_frames(folder, 3)
    gt = tmp_path / "gt"
    write_masks(gt, ["frame_a", "frame_b"])
    with pytest.raises(MediaError) as info:
        list(add_sources(project, [SourceSpec(folder, gt)]))
    assert str(gt) in str(info.value) and "00000.png" in str(info.value)
    assert project.videos() == []  # nothing half-added
    with pytest.raises(MediaError, match="does not exist"):
        list(add_sources(project, [SourceSpec(folder, tmp_path / "nowhere")]))
    assert project.videos() == []


def test_image_folder_gives_one_shot_per_image(tmp_path, project):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in ("b.png", "a.jpg", "c10.png", "c9.jpg"):
        # Unrelated images of different sizes.
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (20 + len(name), 30, 3), np.uint8))
    events = list(add_sources(project, [SourceSpec(folder, images=True)]))
    assert "4 frames, 4 shot(s)" in events[0].message
    video = project.videos()[0]
    assert video.kind == "images" and video.frame_count == 4
    shots = project.shots(video.id)
    assert [(s.start, s.stop) for s in shots] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [f.name for f in project.frames(video.id)] == ["a", "b", "c9", "c10"]
    assert [f.shot_id for f in project.frames(video.id)] == [s.id for s in shots]


def test_name_collisions_get_unique_names(tmp_path, project):
    specs = []
    for parent in ("x", "y", "z"):
        folder = tmp_path / parent / "clip"
        write_frames(folder, 2, seed=len(specs))
        specs.append(SourceSpec(folder))
    list(add_sources(project, specs))
    assert [v.name for v in project.videos()] == ["clip", "clip-2", "clip-3"]
    # An explicit name is used, and made unique the same way.
    other = tmp_path / "w" / "other"
    write_frames(other, 2)
    list(add_sources(project, [SourceSpec(other, name="clip-2")]))
    assert project.videos()[-1].name == "clip-2-2"


def test_long_frame_folder_is_split_into_shots(tmp_path, project):
    frames, _ = generate_video(SampleSpec(n_frames=25, width=64, height=48, seed=0))
    write_frame_folder(tmp_path / "clip", frames)
    list(add_sources(project, [SourceSpec(tmp_path / "clip")], ShotSettings(max_shot_length=10)))
    assert [(s.start, s.stop) for s in project.shots()] == [(0, 8), (8, 16), (16, 25)]
    assert [f.idx for f in project.frames()] == list(range(25))


def test_add_cancel_before_next_source(tmp_path, project):
    specs = []
    for name in ("a", "b"):
        write_frames(tmp_path / name, 2)
        specs.append(SourceSpec(tmp_path / name))
    token = CancelToken()
    with pytest.raises(Cancelled):
        for _ in add_sources(project, specs, cancel=token):
            token.cancel()
    assert [v.name for v in project.videos()] == ["a"]


def test_add_needs_write_access(tmp_path, project):
    write_frames(tmp_path / "a", 2)
    reader = Project.open(project.root)
    try:
        with pytest.raises(ProjectError, match="read-only"):
            list(add_sources(reader, [SourceSpec(tmp_path / "a")]))
    finally:
        reader.close()


# ----------------------------------------------------------------------------- the real data


def test_real_davis_train_root(tmp_path):
    root = SHARED_DATA / "davis2016-train"
    if not (root / "JPEGImages").is_dir():
        pytest.skip(f"the DAVIS-2016 training split is not at {root}")
    specs = davis_sources(root)
    assert len(specs) == 30
    assert all(s.path.parent.name == "240p" and s.ground_truth is not None for s in specs)
    project = Project.create(tmp_path / "davis")
    try:
        started = time.perf_counter()
        list(add_sources(project, specs))
        elapsed = time.perf_counter() - started
        videos = project.videos()
        assert len(videos) == 30
        assert sum(v.frame_count for v in videos) == 2079
        assert all((v.width, v.height) == (427, 240) for v in videos)
        frames = project.frames()
        assert len(frames) == 2079
        assert all(f.gt_path for f in frames)
        assert all(project.abspath(f.gt_path).is_file() for f in frames[::97])
        # DAVIS shots have no scene cuts.
        assert len(project.shots()) == 30
        assert elapsed < 30, f"adding 2079 frames took {elapsed:.1f} s"
    finally:
        project.close()


# ----------------------------------------------------------------------------- collection folders


def write_mjpg(path: Path, n: int, size: tuple[int, int] = (32, 24)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    assert writer.isOpened()
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    for i in range(n):
        writer.write(np.roll(base, i, axis=1))
    writer.release()


def test_a_folder_of_footage_adds_each_video_and_frame_folder_in_one_step(tmp_path, project):
    footage = tmp_path / "footage"
    footage.mkdir()
    write_mjpg(footage / "clip-a.avi", 8)
    write_frames(footage / "shot-b", 5)
    (footage / "empty-folder").mkdir()
    (footage / "notes.txt").write_text("not media")
    specs = expand_sources([footage])
    assert [s.path.name for s in specs] == ["clip-a.avi", "shot-b"]
    list(add_sources(project, specs))
    assert sorted((v.name, v.frame_count) for v in project.videos()) == [("clip-a", 8), ("shot-b", 5)]


def test_expand_sources_keeps_frame_folders_videos_and_image_collections_whole(tmp_path):
    frames = tmp_path / "frames"
    write_frames(frames, 3)
    write_frames(frames / "nested", 2)        # a folder with images of its own is a frame folder
    davis = fake_davis(tmp_path / "davis", "480p", {"a": True, "b": False})
    assert expand_sources([frames]) == [SourceSpec(frames)]
    assert expand_sources([frames], images=True) == [SourceSpec(frames, images=True)]
    assert [s.path.name for s in expand_sources([davis])] == ["a", "b"]   # recognised as DAVIS
    assert expand_sources([davis]) == expand_sources([davis], davis=True)
    with pytest.raises(MediaError, match="not a DAVIS root"):
        expand_sources([frames], davis=True)


@pytest.mark.skipif(not (SHARED_DATA / "extra-videos").is_dir(), reason="needs ../shared/data")
def test_the_shared_extra_videos_folder_expands_to_its_25_shots():
    specs = expand_sources([SHARED_DATA / "extra-videos"])
    assert len(specs) == 25
    assert sum(s.path.suffix == ".mp4" for s in specs) == 20
    assert {s.path.name for s in specs if s.path.is_dir()} >= {"gopro-motorbike", "davis17-giant-slalom"}

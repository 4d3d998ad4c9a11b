"""ussl_core.views.videos: the Videos panel's rows, reads and viewer cache, without Qt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_davis
from ussl_core.ingest import add_sources, davis_sources
from ussl_core.sample import SampleSpec
from ussl_core.steps import AddStep
from ussl_core.store import Project
from ussl_core.store.project import Frame, Mask, Shot, Video
from ussl_core.teacher.runner import producer_name, run_teacher
from ussl_core.views.videos import (CHUNK, COLUMNS, DASH, LRU, PREFETCH, TEACHER_COLUMN,
                                    ChunkResult, MediaSources, StateRequest, VideoDetail,
                                    VideoRow, ViewerCache, display_size, plan_adds, read_chunk,
                                    read_state)

TEACHER = producer_name("videopca")
N_FRAMES = 10


def row(**changes) -> VideoRow:
    values = dict(id=1, name="Clip", kind="video", source="clip.mp4", frames=20, shots=2,
                  width=96, height=72, masks=0, has_gt=True)
    return VideoRow(**{**values, **changes})


def video(width: int = 96, height: int = 72, frames: int = 30) -> Video:
    return Video(7, "clip", "video", "clip.mp4", frames, width, height, 25.0, None)


def detail(n_frames: int = 30, masked: range = range(0), gt: range = range(0)) -> VideoDetail:
    """A video of one shot; frame ids are 100 + idx; masks of producer 3 on `masked` frames."""
    frames = [Frame(100 + i, 7, 1, i, f"{i:05d}", f"gt/{i}.png" if i in gt else None)
              for i in range(n_frames)]
    masks = {100 + i: Mask(100 + i, 3, 0.5, "masks.h5", i, 7, 1) for i in masked}
    return VideoDetail(video(frames=n_frames), frames, {1: Shot(1, 7, 0, 0, n_frames, None)},
                       3 if masks else None, masks)


# ----------------------------------------------------------------------------- pure shaping
def test_teacher_status_texts_and_sort_keys():
    assert row().teacher_status == DASH
    assert row(masks=5).teacher_status == "5/20"
    assert row(masks=20).teacher_status == "done"
    assert row(kind="images", masks=20).teacher_status == DASH   # the video teacher skips them
    texts = row(masks=5, has_gt=False).texts()
    assert len(texts) == len(COLUMNS) and texts[TEACHER_COLUMN] == "5/20"
    assert texts == ("Clip", "20", "2", "96\u00d772", "5/20", "no")
    keys = row(masks=5).sort_keys()
    assert keys[0] == "clip" and keys[3] == 96 * 72 and keys[TEACHER_COLUMN] == 0.25
    assert row(frames=0).sort_keys()[TEACHER_COLUMN] == 0.0      # no division by zero


def test_display_size_keeps_the_aspect_and_caps_the_long_side():
    assert display_size(video(96, 72)) == (96, 72)
    assert display_size(video(1920, 1080)) == (640, 360)
    assert display_size(video(480, 1280)) == (240, 640)
    assert display_size(video(0, 0)) == (1, 1)


def test_caption_and_ground_truth_of_a_detail():
    shown = detail(masked=range(2), gt=range(1))
    assert shown.caption(0) == "1 / 30   00000   score 0.500"
    assert shown.caption(5) == "6 / 30   00005"
    assert shown.has_ground_truth and not detail().has_ground_truth


def test_plan_adds_sorts_paths_into_steps(tmp_path):
    davis = make_davis(tmp_path / "davis", n_videos=1,
                       spec=SampleSpec(n_frames=4, width=32, height=24))
    frames = tmp_path / "frames"
    frames.mkdir()
    clip = tmp_path / "clip.MP4"
    clip.write_bytes(b"")
    still = tmp_path / "still.png"
    still.write_bytes(b"")

    plan = plan_adds([davis, frames, clip, still], images=False)
    assert plan.steps == [AddStep((str(davis),), davis=True), AddStep((str(clip), str(frames)))]
    assert plan.skipped == ["still.png"] and plan.message.startswith("Skipped still.png: ")

    as_images = plan_adds([frames, clip], images=True)
    assert as_images.steps == [AddStep((str(frames),), images=True), AddStep((str(clip),))]
    assert as_images.message == ""

    nothing = plan_adds([tmp_path / f"{i}.txt" for i in range(5)], images=False)
    assert nothing.steps == [] and nothing.message.startswith("Skipped 0.txt, 1.txt, 2.txt...:")


def test_lru_drops_the_least_recently_used():
    cache = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1          # "b" is now the oldest
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2
    assert cache.get("b") is None
    cache.clear()
    assert len(cache) == 0


# ----------------------------------------------------------------------------- the viewer cache
def test_next_request_reads_a_chunk_from_the_shown_frame():
    shown = detail(masked=range(30), gt=range(0, 30, 2))
    cache = ViewerCache()
    request = cache.next_request(Path("/p"), shown, 5)
    assert request is not None and request.chunk == (7, 5 // CHUNK)
    assert [f.idx for f in request.frames] == list(range(5, 5 + CHUNK))
    assert [m.frame_id for m in request.masks] == [100 + i for i in range(5, 5 + CHUNK)]
    assert [f.idx for f in request.ground_truth] == [6, 8, 10, 12]
    assert request.size == (96, 72) and request.root == Path("/p")

    pixels = {f.idx: np.full((72, 96, 3), f.idx, np.uint8) for f in request.frames}
    masks = {(3, m.frame_id): np.ones((8, 8), np.float32) for m in request.masks}
    gts = {f.id: np.ones((8, 8), bool) for f in request.ground_truth}
    cache.add(ChunkResult(7, pixels, masks, gts))
    frame = shown.frames[6]
    assert cache.has_pixels(7, frame) and cache.pixels(7, frame)[0, 0, 0] == 6
    assert cache.mask(shown.masks[frame.id]) is not None and cache.mask(None) is None
    assert cache.ground_truth(frame) is not None
    assert cache.missing(shown, frame) == (False, False, False)
    # What is ready is not read again: the next chunk starts after it, within PREFETCH.
    following = cache.next_request(Path("/p"), shown, 5)
    assert following is not None and following.frames[0].idx == 5 + CHUNK
    assert cache.next_request(Path("/p"), shown, 5 + PREFETCH - 1).frames[0].idx == 5 + PREFETCH - 1

    cache.forget_masks()   # a job may have rewritten them
    assert cache.missing(shown, frame) == (False, True, False)


def test_a_failed_chunk_is_not_asked_again_until_forgotten():
    shown = detail(n_frames=CHUNK)
    cache = ViewerCache()
    request = cache.next_request(Path("/p"), shown, 0)
    cache.failed.add(request.chunk)
    assert cache.next_request(Path("/p"), shown, 0) is None
    cache.forget_masks()
    assert cache.next_request(Path("/p"), shown, 0) is not None
    cache.failed.add(request.chunk)
    cache.clear()
    assert cache.next_request(Path("/p"), shown, 0) is not None


# ----------------------------------------------------------------------------- reading the store
@pytest.fixture(scope="module")
def project_root(tmp_path_factory) -> Path:
    """Two 10-frame 96x72 videos with ground truth, no teacher masks yet."""
    base = tmp_path_factory.mktemp("views_videos")
    davis = make_davis(base / "davis", n_videos=2,
                       spec=SampleSpec(n_frames=N_FRAMES, width=96, height=72))
    with Project.create(base / "project") as project:
        for _ in add_sources(project, davis_sources(davis)):
            pass
    return base / "project"


def first_video_id(root: Path) -> int:
    with Project.open(root) as project:
        return project.videos()[0].id


def test_state_and_chunks_before_and_after_the_teacher(project_root):
    video_id = first_video_id(project_root)
    state = read_state(StateRequest(project_root, TEACHER, video_id, None))
    assert [r.name for r in state.rows] == ["sample-00", "sample-01"]
    assert all(r.frames == N_FRAMES and r.masks == 0 and r.has_gt for r in state.rows)
    assert state.producers == [] and state.request.video_id == video_id
    shown = state.detail
    assert shown is not None and shown.video.id == video_id and len(shown.frames) == N_FRAMES
    assert shown.producer_id is None and shown.masks == {} and shown.has_ground_truth

    # No frames shard yet: the pixels are decoded from the source, at the display size.
    sources = MediaSources()
    request = ViewerCache().next_request(project_root, shown, 0)
    chunk = read_chunk(request, sources)
    assert chunk.video_id == video_id and sorted(chunk.frames) == list(range(CHUNK))
    assert all(p.shape == (72, 96, 3) and p.dtype == np.uint8 for p in chunk.frames.values())
    assert chunk.masks == {}
    assert set(chunk.ground_truth) == {f.id for f in shown.frames[:CHUNK]}
    assert all(gt.dtype == bool for gt in chunk.ground_truth.values())

    with Project.open(project_root, write=True) as project:
        list(run_teacher(project, workers=1))
    state = read_state(StateRequest(project_root, TEACHER, video_id, TEACHER))
    assert [r.teacher_status for r in state.rows] == ["done", "done"]
    assert [p.name for p in state.producers] == [TEACHER]
    shown = state.detail
    assert shown.producer_id == state.producers[0].id and len(shown.masks) == N_FRAMES

    # Now from the stored frames shard, with the teacher's masks.
    cache = ViewerCache()
    request = cache.next_request(project_root, shown, CHUNK)
    assert [f.idx for f in request.frames] == list(range(CHUNK, N_FRAMES))
    chunk = read_chunk(request, sources)
    assert sorted(chunk.frames) == list(range(CHUNK, N_FRAMES))
    assert set(chunk.masks) == {(shown.producer_id, f.id) for f in shown.frames[CHUNK:]}
    assert all(m.ndim == 2 and 0 <= m.min() <= m.max() <= 1 for m in chunk.masks.values())
    cache.add(chunk)
    assert cache.next_request(project_root, shown, CHUNK) is None


def test_state_of_a_video_that_is_gone_has_no_detail(project_root):
    state = read_state(StateRequest(project_root, "nobody@g1", 10_000, "nobody@g1"))
    assert state.detail is None and all(r.masks == 0 for r in state.rows)
    assert read_state(StateRequest(project_root, TEACHER, None, None)).detail is None

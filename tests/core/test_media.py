"""Tests of ussl_core.media on small media generated into tmp_path, plus the real clips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ussl_core.errors import MediaError
from ussl_core.media import (
    ShotSettings,
    is_image_file,
    is_video_file,
    list_image_files,
    natural_key,
    open_source,
    read_image,
    resize_rgb,
    scan_shots,
)

SHARED_VIDEOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "videos"

# ----------------------------------------------------------------------------- helpers


def write_video(
    path: Path, frames: list[np.ndarray], fourcc: str = "MJPG", fps: float = 25.0
) -> bool:
    """Write BGR frames; False when this OpenCV build cannot write the format."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        return False
    for frame in frames:
        writer.write(frame)
    writer.release()
    return True


def grey_ramp_frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """Frame i is a flat grey of level 4*i, so a decoded frame reveals its index."""
    return [np.full((height, width, 3), 4 * i, np.uint8) for i in range(count)]


def frame_index(frame: np.ndarray) -> int:
    return int(round(frame.mean() / 4))


def scene_frame(scene: int, t: int, width: int = 96, height: int = 64) -> np.ndarray:
    """A textured scene with a small moving square; scenes differ in colour and texture."""
    rng = np.random.default_rng(scene)
    texture = rng.integers(0, 60, (height, width, 1), dtype=np.uint8)
    base = np.array([[(200, 60, 20)], [(20, 180, 220)], [(40, 200, 40)]][scene % 3], np.uint8)
    frame = np.clip(np.roll(texture, t, axis=1) + base, 0, 255).astype(np.uint8)
    frame[10:26, 5 + t : 21 + t] = 255
    return frame


def scene_frames(lengths: list[int]) -> list[np.ndarray]:
    return [scene_frame(s, t) for s, n in enumerate(lengths) for t in range(n)]


# ----------------------------------------------------------------------------- names


def test_natural_key_orders_numbers_and_ignores_case() -> None:
    names = ["frame10", "Frame2", "frame1", "b", "A", "frame02"]
    assert sorted(names, key=natural_key) == ["A", "b", "frame1", "frame02", "Frame2", "frame10"]


def test_extension_checks_are_case_insensitive() -> None:
    assert is_video_file("clip.MP4") and is_video_file(Path("x/y.avi"))
    assert not is_video_file("a.png")
    assert is_image_file("a.JPEG") and not is_image_file("a.txt")


# ----------------------------------------------------------------------------- images


def test_read_image_rgb_png_exact(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 2] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_read_image_non_ascii_path(tmp_path: Path) -> None:
    path = tmp_path / "bild_äöü_日本.png"
    Image.fromarray(np.full((3, 5, 3), 77, np.uint8)).save(path)
    assert read_image(path).shape == (3, 5, 3)


def test_read_image_grayscale_becomes_three_channels(tmp_path: Path) -> None:
    grey = (np.arange(24, dtype=np.uint8) * 10).reshape(4, 6)
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (4, 6, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


def test_read_image_16_bit_is_scaled(tmp_path: Path) -> None:
    bgr16 = np.zeros((2, 3, 3), np.uint16)
    bgr16[..., 0] = 65535  # blue
    bgr16[..., 1] = 257 * 100  # green
    bgr16[..., 2] = 257 * 7  # red
    assert cv2.imwrite(str(tmp_path / "c16.png"), bgr16)
    out = read_image(tmp_path / "c16.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], (7, 100, 255))


def test_read_image_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[...] = (200, 100, 50, 0)  # fully transparent: the colour is kept, not blackened
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (4, 6, 3)
    np.testing.assert_array_equal(out[2, 3], (200, 100, 50))


def test_read_image_expands_palette(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (10, 20, 30)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert palette.mode == "P"
    palette.save(tmp_path / "p.png")
    expected = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expected)


def test_read_image_honours_exif_orientation(tmp_path: Path) -> None:
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:6, :6] = (255, 0, 0)  # red top-left corner
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    image.save(tmp_path / "o6.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "o6.jpg")
    assert out.shape == (40, 20, 3)
    # A clockwise turn moves the top-left corner to the top-right.
    assert out[:4, -4:, 0].mean() > 200 and out[:4, :4, 0].mean() < 50


def test_resize_rgb() -> None:
    image = np.zeros((10, 20, 3), np.uint8)
    assert resize_rgb(image, None) is image
    assert resize_rgb(image, (8, 4)).shape == (4, 8, 3)
    assert resize_rgb(image, (40, 30)).shape == (30, 40, 3)
    with pytest.raises(ValueError):
        resize_rgb(image, (0, 5))


# ----------------------------------------------------------------------------- videos


@pytest.mark.parametrize("fourcc,suffix", [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_generated_video(tmp_path: Path, fourcc: str, suffix: str) -> None:
    path = tmp_path / f"ramp{suffix}"
    if not write_video(path, grey_ramp_frames(40), fourcc):
        pytest.skip(f"this OpenCV build cannot write {fourcc} into {suffix}")
    source = open_source(path)
    assert (source.kind, source.name) == ("video", "ramp")
    assert (source.frame_count, source.width, source.height) == (40, 64, 48)
    assert source.fps == pytest.approx(25.0)
    assert source.frame_names[:2] == ["00000", "00001"] and len(source.frame_names) == 40

    everything = list(source.iter_frames())
    # Lossy codecs (mp4v at its default bitrate) lag a level behind on flat frames.
    assert all(abs(frame_index(f) - i) <= 1 for i, f in enumerate(everything))
    frames = list(source.iter_frames(5, 9))
    assert all(np.array_equal(a, b) for a, b in zip(frames, everything[5:9], strict=True))
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    small = list(source.iter_frames(38, size=(32, 16)))
    assert len(small) == 2 and small[0].shape == (16, 32, 3)
    np.testing.assert_array_equal(source.read_frame(23), everything[23])
    np.testing.assert_array_equal(source.read_frame(39), everything[39])
    with pytest.raises(IndexError):
        source.read_frame(40)


def test_iter_frames_without_exact_seeking_skips_from_start(tmp_path: Path) -> None:
    path = tmp_path / "ramp.avi"
    assert write_video(path, grey_ramp_frames(20))
    source = open_source(path)
    source.seek_exact = False  # as for a codec whose seeking is inexact
    everything = list(source.iter_frames())
    assert [frame_index(f) for f in everything] == list(range(20))
    skipped = list(source.iter_frames(12, 15))
    assert all(np.array_equal(a, b) for a, b in zip(skipped, everything[12:15], strict=True))


@pytest.mark.parametrize(
    "name,frames", [("bgs_video.avi", 374), ("slow_traffic_small.mp4", 914)]
)
def test_real_clips(name: str, frames: int) -> None:
    if not SHARED_VIDEOS.parent.parent.is_dir():
        pytest.skip(f"{SHARED_VIDEOS.parent.parent} (the shared data checkout) is absent")
    source = open_source(SHARED_VIDEOS / name)
    assert (source.frame_count, source.width, source.height) == (frames, 640, 360)
    assert source.read_frame(frames - 1).shape == (360, 640, 3)


# ----------------------------------------------------------------------------- folders


def test_frame_folder_natural_order_and_resizing(tmp_path: Path) -> None:
    levels = {"1": 10, "2": 20, "10": 100}
    for stem, level in levels.items():
        Image.fromarray(np.full((12, 16, 3), level, np.uint8)).save(tmp_path / f"{stem}.png")
    Image.fromarray(np.full((24, 32, 3), 200, np.uint8)).save(tmp_path / "11.png")
    (tmp_path / "notes.txt").write_text("not a frame")

    assert [p.name for p in list_image_files(tmp_path)] == ["1.png", "2.png", "10.png", "11.png"]
    source = open_source(tmp_path)
    assert (source.kind, source.name, source.fps) == ("frames", tmp_path.name, None)
    assert source.frame_names == ["1", "2", "10", "11"]
    assert (source.frame_count, source.width, source.height) == (4, 16, 12)
    frames = list(source.iter_frames())
    assert [int(f.mean()) for f in frames] == [10, 20, 100, 200]
    assert all(f.shape == (12, 16, 3) for f in frames)  # the larger frame is fitted
    assert source.read_frame(2, size=(8, 6)).shape == (6, 8, 3)


def test_frame_folder_with_clashing_names(tmp_path: Path) -> None:
    for suffix in (".png", ".bmp"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / f"1{suffix}")
    with pytest.raises(MediaError, match="two frames named '1'"):
        open_source(tmp_path)


# ----------------------------------------------------------------------------- shots


def test_two_scene_video_is_cut_at_scene_change(tmp_path: Path) -> None:
    path = tmp_path / "scenes.avi"
    assert write_video(path, scene_frames([30, 30]))
    assert scan_shots(open_source(path)) == [(0, 30), (30, 60)]


def test_two_scene_jpeg_folder_is_cut_at_scene_change(tmp_path: Path) -> None:
    for i, frame in enumerate(scene_frames([12, 10])):
        cv2.imwrite(str(tmp_path / f"f{i}.jpg"), frame)
    assert scan_shots(open_source(tmp_path)) == [(0, 12), (12, 22)]


def test_cut_too_close_to_previous_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "flash.avi"
    assert write_video(path, scene_frames([20, 3, 17]))
    settings = ShotSettings(min_shot_length=5)
    assert scan_shots(open_source(path), settings) == [(0, 20), (20, 40)]


def test_long_shots_are_split_evenly(tmp_path: Path) -> None:
    path = tmp_path / "long.avi"
    assert write_video(path, [scene_frame(0, t % 8, 32, 24) for t in range(100)])
    shots = scan_shots(open_source(path), ShotSettings(max_shot_length=40))
    assert shots == [(0, 33), (33, 66), (66, 100)]


# ----------------------------------------------------------------------------- bad inputs


def expect_media_error(call, path: Path, *causes: str) -> str:
    with pytest.raises(MediaError) as info:
        call(path)
    message = str(info.value)
    assert str(path) in message
    assert any(cause in message for cause in causes), message
    return message


def test_missing_path(tmp_path: Path) -> None:
    expect_media_error(open_source, tmp_path / "nope.mp4", "does not exist")
    expect_media_error(read_image, tmp_path / "nope.png", "does not exist")


def test_empty_video_file(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    expect_media_error(open_source, tmp_path / "empty.mp4", "empty file")


def test_text_file_named_as_video(tmp_path: Path) -> None:
    (tmp_path / "fake.mp4").write_text("this is not a video\n" * 20)
    expect_media_error(open_source, tmp_path / "fake.mp4", "not a readable video")


def test_truncated_video(tmp_path: Path) -> None:
    path = tmp_path / "cut.avi"
    assert write_video(path, grey_ramp_frames(60))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    # FFmpeg's AVI reader still opens it (no index) and decodes only the first frames.
    message = expect_media_error(open_source, path, "truncated", "not a readable video")
    if "truncated" in message:
        assert "of 60 frames decodable" in message


def test_truncated_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "cut.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    expect_media_error(read_image, path, "truncated")
    expect_media_error(open_source, tmp_path, "truncated")  # as the first frame of a folder


def test_empty_png(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    expect_media_error(read_image, tmp_path / "empty.png", "empty file")


def test_non_image_named_png(tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_text("hello")
    expect_media_error(read_image, tmp_path / "fake.png", "not a readable image")


def test_empty_folder(tmp_path: Path) -> None:
    expect_media_error(open_source, tmp_path, "no frames (no .jpg/.png images) in folder")


def test_folder_with_only_text_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    expect_media_error(open_source, tmp_path, "no frames")


def test_unknown_file_type(tmp_path: Path) -> None:
    (tmp_path / "notes.xyz").write_text("plain text")
    expect_media_error(open_source, tmp_path / "notes.xyz", "not a video file or folder of frames")

"""Reading media: single images, video files and folders of frames, plus shot detection.

Everything here returns RGB uint8 arrays (H x W x 3, C-contiguous). Any input a user can get
wrong (missing, empty, truncated, not media) raises exactly one `MediaError` naming the path
and the cause; programming errors (a frame index out of range) raise ValueError/IndexError.

Videos are decoded with OpenCV's FFmpeg backend and are never held in memory whole: frames
are produced by generators that own their own `cv2.VideoCapture`, so sources are plain,
picklable descriptions that can be shared with worker processes.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ussl_core.errors import MediaError
from ussl_core.settings import check, option

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
)
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}
)

_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
# Some writers pad a JPEG after its end marker; FF D9 cannot occur inside entropy-coded
# data, so finding it anywhere in the tail is a safe sign that the file is complete.
_JPEG_TAIL_BYTES = 1024

Size = tuple[int, int]  # (width, height)
PathLike = str | os.PathLike


# ----------------------------------------------------------------------------- names


def natural_key(name: str) -> tuple:
    """Sort key putting "frame2" before "frame10"; case-insensitive, ties broken exactly."""
    folded = name.casefold()
    # re.split with a capturing group alternates text and digit runs, always starting with
    # text, so the parts of any two keys compare str-to-str and int-to-int.
    parts = tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", folded)))
    return (parts, folded, name)


def is_image_file(path: PathLike) -> bool:
    """True when the name has an image extension (does not touch the disk)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_file(path: PathLike) -> bool:
    """True when the name has a video extension (does not touch the disk)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# ----------------------------------------------------------------------------- images


def _read_bytes(path: Path) -> np.ndarray:
    """The file's bytes as uint8; np.fromfile keeps non-ASCII paths working on every OS."""
    if not path.exists():
        raise MediaError(path, "does not exist")
    if path.is_dir():
        raise MediaError(path, "is a folder, not a file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise MediaError(path, f"cannot be read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise MediaError(path, "empty file")
    return data


def _check_jpeg_complete(path: Path, data: np.ndarray) -> None:
    """libjpeg decodes a cut-off JPEG without error (grey lower part); detect it here."""
    if data[:3].tobytes() != _JPEG_MAGIC:
        return
    if _JPEG_EOI not in data[-_JPEG_TAIL_BYTES:].tobytes():
        raise MediaError(path, "truncated JPEG (no end-of-image marker)")


def _decode(path: Path, data: np.ndarray, flags: int) -> np.ndarray:
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error:
        image = None  # e.g. more pixels than OpenCV's safety limit
    if image is None or image.size == 0:
        raise MediaError(path, "not a readable image")
    return image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # Scale 0..65535 onto 0..255 with rounding (65535 / 257 == 255), not by truncation.
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise TypeError(f"unexpected pixel type {image.dtype}")


def _bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """Any OpenCV colour layout (grey, BGR, BGRA) as a new C-contiguous RGB array."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_image(path: Path, flags: int) -> np.ndarray:
    data = _read_bytes(path)
    _check_jpeg_complete(path, data)
    return _decode(path, data, flags)


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB.

    EXIF orientation is applied, grey becomes 3 channels, palettes are expanded, an alpha
    channel is dropped (not composited: the colour under transparent pixels is kept), and
    16-bit samples are scaled to 8 bits.
    """
    path = Path(path)
    # IMREAD_COLOR applies EXIF orientation and drops alpha; ANYDEPTH keeps 16-bit samples
    # so that we scale them ourselves.
    image = _decode_image(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if image.dtype not in (np.uint8, np.uint16):
        # Float TIFFs and the like: let OpenCV pick its own 8-bit conversion.
        image = _decode_image(path, cv2.IMREAD_COLOR)
    return _bgr_to_rgb(_to_uint8(image))


def list_image_files(folder: PathLike) -> list[Path]:
    """The image files directly inside `folder`, in natural order; hidden files are skipped."""
    folder = Path(folder)
    if not folder.exists():
        raise MediaError(folder, "does not exist")
    if not folder.is_dir():
        raise MediaError(folder, "not a folder")
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise MediaError(folder, f"cannot be listed ({exc.strerror or exc})") from None
    # Dot files include macOS "._name.jpg" resource forks, which are not images.
    files = [
        p for p in entries if is_image_file(p) and not p.name.startswith(".") and p.is_file()
    ]
    if not files:
        raise MediaError(folder, "no frames (no .jpg/.png images) in folder")
    return sorted(files, key=lambda p: natural_key(p.name))


def resize_rgb(image: np.ndarray, size: Size | None) -> np.ndarray:
    """Resize to size=(width, height); area averaging to shrink, bilinear to enlarge."""
    if size is None:
        return image
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {size}")
    old_height, old_width = image.shape[:2]
    if (width, height) == (old_width, old_height):
        return image
    shrinking = width <= old_width and height <= old_height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (int(width), int(height)), interpolation=interpolation)


# ----------------------------------------------------------------------------- sources


class MediaSource:
    """A sequence of RGB frames. Use `open_source` to get one.

    `width`/`height` are the original size of frame 0; every frame is delivered at that
    size (or at `size` when given), even when later frames of a folder differ.
    """

    path: Path
    kind: str
    name: str
    frame_count: int
    width: int
    height: int
    fps: float | None
    frame_names: list[str]

    def __len__(self) -> int:
        return self.frame_count

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, frames={self.frame_count}, "
            f"size={self.width}x{self.height})"
        )

    def iter_frames(
        self, start: int = 0, stop: int | None = None, size: Size | None = None
    ) -> Iterator[np.ndarray]:
        """Frames start..stop-1 in order, decoded lazily, as RGB uint8 (resized if `size`)."""
        stop = self.frame_count if stop is None else stop
        if not 0 <= start <= stop <= self.frame_count:
            raise IndexError(
                f"frame range {start}..{stop} outside 0..{self.frame_count} of {self.path}"
            )
        # Validated eagerly above; the generator below starts decoding on first next().
        return self._frames(start, stop, size or (self.width, self.height))

    def read_frame(self, index: int, size: Size | None = None) -> np.ndarray:
        if not 0 <= index < self.frame_count:
            raise IndexError(f"frame {index} outside 0..{self.frame_count - 1} of {self.path}")
        return next(self.iter_frames(index, index + 1, size))

    def _frames(self, start: int, stop: int, size: Size) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _scan_frames(self, size: int) -> Iterator[np.ndarray]:
        """All frames, cheaply, as size x size RGB thumbnails for shot detection."""
        return self.iter_frames(size=(size, size))


class FrameFolderSource(MediaSource):
    """A folder of image files, one per frame, in natural order of their names."""

    def __init__(self, folder: PathLike) -> None:
        self.path = Path(folder)
        self.kind = "frames"
        self.name = self.path.resolve().name or str(self.path)
        self.files = list_image_files(self.path)
        self.frame_names = [p.stem for p in self.files]
        self._check_unique_names()
        first = read_image(self.files[0])
        self.height, self.width = first.shape[:2]
        self.frame_count = len(self.files)
        self.fps = None

    def check_one_size(self) -> None:
        """The frames of a video are all of one size: another size means another folder's images
        (masks would be exported at the wrong size). Only the headers are read."""
        try:
            from PIL import Image
        except ImportError:   # pragma: no cover - Pillow comes with matplotlib
            return
        for file in self.files[1:]:
            try:
                with Image.open(file) as image:
                    size = image.size
            except (OSError, ValueError):
                continue   # unreadable: said when the frame is decoded
            if size != (self.width, self.height):
                raise MediaError(file, f"is {size[0]}x{size[1]}, but the first frame of its folder is "
                                       f"{self.width}x{self.height}; a frame folder holds one video's "
                                       "frames (a folder of unrelated images: add it with --images)")

    def _check_unique_names(self) -> None:
        # Frame names key stored results, so "1.jpg" and "1.png" side by side are ambiguous.
        seen: dict[str, Path] = {}
        for file in self.files:
            other = seen.setdefault(file.stem, file)
            if other is not file:
                raise MediaError(
                    self.path, f"two frames named {file.stem!r} ({other.name}, {file.name})"
                )

    def _frames(self, start: int, stop: int, size: Size) -> Iterator[np.ndarray]:
        for file in self.files[start:stop]:
            yield resize_rgb(read_image(file), size)

    def _scan_frames(self, size: int) -> Iterator[np.ndarray]:
        for file in self.files:
            data = _read_bytes(file)
            _check_jpeg_complete(file, data)
            # libjpeg can decode straight to 1/4 scale, several times faster than full size.
            is_jpeg = data[:3].tobytes() == _JPEG_MAGIC
            flags = cv2.IMREAD_REDUCED_COLOR_4 if is_jpeg else cv2.IMREAD_COLOR
            small = _decode(file, data, flags)
            yield _bgr_to_rgb(cv2.resize(small, (size, size), interpolation=cv2.INTER_AREA))


@dataclass(frozen=True)
class _VideoProbe:
    frame_count: int
    width: int
    height: int
    fps: float | None
    seek_exact: bool


# Probing decodes the whole video, so results are kept per (file, size, mtime).
_PROBE_CACHE: dict[tuple[str, int, int], _VideoProbe] = {}
_PROBE_CACHE_MAX = 64
_PROBE_LOCK = threading.Lock()


def _open_capture(path: Path) -> cv2.VideoCapture:
    # Name the FFmpeg backend: CAP_ANY would also try e.g. the image-sequence backend,
    # which reinterprets '%' in file names.
    if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    return cv2.VideoCapture(str(path))


def _probe_video(path: Path) -> _VideoProbe:
    """Decode the video once: true frame count, frame size, and whether seeking is exact."""
    capture = _open_capture(path)
    try:
        ok, first = capture.read() if capture.isOpened() else (False, None)
        if not ok or first is None:
            raise MediaError(path, "not a readable video")
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = capture.get(cv2.CAP_PROP_FPS)
        # Keep decoded frames at 1, 2, 4, 8, ... to test seeking at the last one (past the
        # middle of the video) without decoding every frame.
        count, probe_index, probe_frame = 1, 0, first
        while capture.grab():
            if count & (count - 1) == 0:
                ok, frame = capture.retrieve()
                if ok and frame is not None:
                    probe_index, probe_frame = count, frame
            count += 1
    finally:
        capture.release()
    if declared > 0 and count < declared - max(2, declared // 100):
        raise MediaError(path, f"truncated: {count} of {declared} frames decodable")
    return _VideoProbe(
        frame_count=count,
        width=first.shape[1],
        height=first.shape[0],
        fps=fps if math.isfinite(fps) and fps > 0 else None,
        seek_exact=_seek_matches(path, probe_index, probe_frame),
    )


def _seek_matches(path: Path, index: int, expected: np.ndarray) -> bool:
    """Whether seeking to `index` yields the frame that sequential decoding gave."""
    if index == 0:
        return True
    capture = _open_capture(path)
    try:
        if not capture.set(cv2.CAP_PROP_POS_FRAMES, index):
            return False
        ok, frame = capture.read()
        return bool(ok) and frame is not None and np.array_equal(frame, expected)
    finally:
        capture.release()


def _cached_probe(path: Path) -> _VideoProbe:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _PROBE_LOCK:
        probe = _PROBE_CACHE.get(key)
    if probe is None:
        probe = _probe_video(path)
        with _PROBE_LOCK:
            if len(_PROBE_CACHE) >= _PROBE_CACHE_MAX:
                _PROBE_CACHE.pop(next(iter(_PROBE_CACHE)))
            _PROBE_CACHE[key] = probe
    return probe


class VideoFileSource(MediaSource):
    """A video file read through OpenCV/FFmpeg; the frame count is the decodable count."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.kind = "video"
        self.name = self.path.stem
        if not self.path.exists():
            raise MediaError(self.path, "does not exist")
        if self.path.stat().st_size == 0:
            raise MediaError(self.path, "empty file")
        probe = _cached_probe(self.path)
        self.frame_count = probe.frame_count
        self.width, self.height = probe.width, probe.height
        self.fps = probe.fps
        self.seek_exact = probe.seek_exact
        self.frame_names = [f"{i:05d}" for i in range(self.frame_count)]

    def _frames(self, start: int, stop: int, size: Size) -> Iterator[np.ndarray]:
        capture = _open_capture(self.path)
        try:
            self._move_to(capture, start)
            for index in range(start, stop):
                ok, frame = capture.read()
                if not ok or frame is None:
                    raise MediaError(self.path, f"frame {index} could not be decoded")
                yield resize_rgb(_bgr_to_rgb(frame), size)
        finally:
            capture.release()

    def _move_to(self, capture: cv2.VideoCapture, start: int) -> None:
        if not capture.isOpened():
            raise MediaError(self.path, "not a readable video")
        if start == 0:
            return
        if self.seek_exact and capture.set(cv2.CAP_PROP_POS_FRAMES, start):
            return
        # Seeking is inexact for this file (or refused): decode from the start and skip.
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        for index in range(start):
            if not capture.grab():
                raise MediaError(self.path, f"frame {index} could not be decoded")


def open_source(path: PathLike) -> MediaSource:
    """Open a video file or a folder of frames, validating that it can be read."""
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "does not exist")
    if path.is_dir():
        return FrameFolderSource(path)
    if is_video_file(path):
        return VideoFileSource(path)
    cause = "not a video file or folder of frames"
    if is_image_file(path):
        cause += " (to use images as frames, open the folder that holds them)"
    raise MediaError(path, cause)


# ----------------------------------------------------------------------------- shots


@dataclass(frozen=True)
class ShotSettings:
    max_shot_length: int = option(300, "frames; longer runs are split into equal-ish pieces of "
                                       "at most this", low=1)
    cut_threshold: float = option(0.5, "colour-histogram (Bhattacharyya) distance above which a "
                                       "scene cut is declared", low=0, high=1)
    min_shot_length: int = option(5, "a cut closer than this to the previous one is ignored", low=1)
    scan_size: int = option(64, "frames are compared at this small size (pixels)", low=8)

    def __post_init__(self) -> None:
        check(self)


# Hue, saturation, value bins. Value is included so that cuts between grey scenes of
# different brightness (where hue and saturation are all zero) are still seen.
_HIST_BINS = [12, 4, 4]
_HIST_RANGES = [0, 180, 0, 256, 0, 256]


def _colour_histogram(rgb: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, _HIST_BINS, _HIST_RANGES)
    return cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)


def _find_cuts(source: MediaSource, settings: ShotSettings) -> list[int]:
    """Frames that start a new scene (not including 0)."""
    cuts: list[int] = []
    last_cut, previous = 0, None
    for index, thumb in enumerate(source._scan_frames(settings.scan_size)):
        hist = _colour_histogram(thumb)
        if previous is not None and index - last_cut >= settings.min_shot_length:
            distance = cv2.compareHist(previous, hist, cv2.HISTCMP_BHATTACHARYYA)
            if distance > settings.cut_threshold:
                cuts.append(index)
                last_cut = index
        previous = hist
    return cuts


def _split_long(start: int, stop: int, max_length: int) -> list[tuple[int, int]]:
    length = stop - start
    pieces = -(-length // max_length)  # ceil division
    bounds = [start + k * length // pieces for k in range(pieces + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def scan_shots(
    source: MediaSource, settings: ShotSettings = ShotSettings()
) -> list[tuple[int, int]]:
    """Split the source into shots [(start, stop), ...] covering 0..frame_count in order.

    A shot ends at a scene cut (a large colour-histogram change between consecutive frames)
    or, for long shots, is cut into near-equal pieces of at most `max_shot_length` frames.
    """
    if source.frame_count == 0:
        return []
    bounds = [0, *_find_cuts(source, settings), source.frame_count]
    shots: list[tuple[int, int]] = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        shots.extend(_split_long(start, stop, settings.max_shot_length))
    return shots

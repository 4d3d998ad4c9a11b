"""The Videos panel's frame viewer: one video's frames with a producer's masks and the ground
truth's outline, scrubbed or played. Pixels, masks and ground truth are read in chunks in a
thread (ussl_core.views.videos.read_chunk), a few frames ahead of the shown one."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QLabel, QSlider, QStyle,
                               QToolButton, QVBoxLayout, QWidget)

from app.background import BackgroundCalls
from app.widgets.mask_view import MaskView
from ussl_core.store.project import Producer
from ussl_core.views.videos import (ChunkRequest, ChunkResult, MediaSources, VideoDetail,
                                    ViewerCache, read_chunk)

PLAY_INTERVAL_MS = 100      # ~10 frames/s


class VideoViewer(QWidget):
    """Shows a VideoDetail; `producer_changed` when the user picks whose masks to show (the
    panel then reads the detail again with that producer's masks)."""

    producer_changed = Signal()

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.calls = BackgroundCalls(context, self)
        self.cache = ViewerCache()
        self.sources = MediaSources()
        self.root: Path | None = None
        self.detail: VideoDetail | None = None   # the shown video's frames and masks
        self.index = 0
        self._chunk_loading = False             # one chunk is read at a time
        self._build()
        self.player = QTimer(self)
        self.player.setInterval(PLAY_INTERVAL_MS)
        self.player.timeout.connect(self._play_tick)

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.view = MaskView()
        self.view.set_placeholder("Select a video")
        layout.addWidget(self.view, 1)

        scrub = QHBoxLayout()
        scrub.setSpacing(6)
        self.play_button = QToolButton()
        self.play_button.setCheckable(True)
        self.play_button.setIcon(self.style().standardIcon(QStyle.SP_MediaPlay))
        self.play_button.setToolTip("Play / pause (about 10 frames per second)")
        self.play_button.toggled.connect(self.set_playing)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self._show_index)
        self.frame_label = QLabel("")
        self.frame_label.setMinimumWidth(210)
        self.frame_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        scrub.addWidget(self.play_button)
        scrub.addWidget(self.slider, 1)
        scrub.addWidget(self.frame_label)
        layout.addLayout(scrub)

        options = QHBoxLayout()
        options.setSpacing(6)
        self.producer_combo = QComboBox()
        self.producer_combo.setMinimumContentsLength(14)
        self.producer_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.producer_combo.setToolTip("Whose masks to show")
        self.producer_combo.currentIndexChanged.connect(lambda _: self.producer_changed.emit())
        self.opacity_slider = QSlider(Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setMaximumWidth(110)
        self.opacity_slider.setToolTip("Mask opacity")
        self.opacity_slider.valueChanged.connect(lambda v: self.view.set_opacity(v / 100))
        self.view.set_opacity(0.5)
        self.side_check = QCheckBox("Side by side")
        self.side_check.setToolTip("frame | mask | overlay")
        self.side_check.toggled.connect(
            lambda on: self.view.set_mode("side_by_side" if on else "overlay"))
        self.gt_check = QCheckBox("Ground-truth outline")
        self.gt_check.setChecked(True)
        self.gt_check.toggled.connect(lambda _: self._render())
        for widget in (QLabel("Masks"), self.producer_combo, QLabel("Opacity"), self.opacity_slider,
                       self.side_check, self.gt_check):
            options.addWidget(widget)
        options.addStretch(1)
        layout.addLayout(options)

    # ------------------------------------------------------------------ what is shown
    def set_project(self, root: Path | None) -> None:
        """Another project (or none): nothing of the previous one is shown, kept or delivered."""
        self.set_playing(False)
        self.calls.forget()
        self._chunk_loading = False
        self.root = root
        self.detail, self.index = None, 0
        self.cache.clear()
        # A new set of sources: a read of the previous project still running keeps its own.
        self.sources = MediaSources()
        self.set_producers([], None)
        self.slider.setRange(0, 0)
        self._clear_view("Select a video" if root else "No project")

    def forget_masks(self) -> None:
        """A job ended: the masks on screen may have been rewritten."""
        self.cache.forget_masks()

    def producer(self) -> str | None:
        """The producer whose masks are shown (None: no masks)."""
        return self.producer_combo.currentData()

    def set_producers(self, producers: list[Producer], preferred: str | None) -> None:
        """The producers to choose from; the shown one stays, else `preferred`, else the first."""
        names = [p.name for p in producers]
        combo = self.producer_combo
        if [combo.itemData(i) for i in range(combo.count())] == names and names:
            return
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        if not names:
            combo.addItem("(no masks yet)", None)
            combo.setEnabled(False)
        else:
            for p in producers:
                combo.addItem(p.name, p.name)
            combo.setEnabled(True)
            fallback = preferred if preferred in names else names[0]
            wanted = current if current in names else fallback
            combo.setCurrentIndex(names.index(wanted))
        combo.blockSignals(False)

    def show_detail(self, detail: VideoDetail | None, empty_text: str) -> None:
        """Show a video (a new one from its first frame), or `empty_text` when None."""
        previous = self.detail
        self.detail = detail
        if detail is None:
            self.slider.setRange(0, 0)
            self._clear_view(empty_text)
            return
        new_video = previous is None or previous.video.id != detail.video.id
        has_gt = detail.has_ground_truth
        self.gt_check.setEnabled(has_gt)
        self.gt_check.setToolTip("" if has_gt else "This video has no ground truth")
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(len(detail.frames) - 1, 0))
        if new_video:
            self.index = 0
            self.slider.setValue(0)
            self.view.set_frame(None)
            self.view.set_placeholder("Loading\u2026")
        self.slider.blockSignals(False)
        self._render()

    def _clear_view(self, placeholder: str) -> None:
        self.view.set_frame(None)
        self.view.set_mask(None)
        self.view.set_ground_truth(None)
        self.view.set_placeholder(placeholder)
        self.frame_label.setText("")

    def _show_index(self, index: int) -> None:
        self.index = index
        self._render()

    def _render(self) -> None:
        detail = self.detail
        if detail is None or not detail.frames:
            return
        self.index = min(max(self.index, 0), len(detail.frames) - 1)
        frame = detail.frames[self.index]
        pixels = self.cache.pixels(detail.video.id, frame)
        self.frame_label.setText(detail.caption(self.index))
        if pixels is not None:
            self.view.set_frame(pixels)
            self.view.set_mask(self.cache.mask(detail.masks.get(frame.id)))
            show_gt = frame.gt_path and self.gt_check.isChecked()
            self.view.set_ground_truth(self.cache.ground_truth(frame) if show_gt else None)
        self._ensure_loaded()

    # ------------------------------------------------------------------ reading
    def _ensure_loaded(self) -> None:
        """Read the next frames the viewer needs (the shown one first), one chunk at a time."""
        detail = self.detail
        if detail is None or self._chunk_loading or self.root is None:
            return
        request = self.cache.next_request(self.root, detail, self.index)
        if request is None:
            return
        self._chunk_loading = True
        sources = self.sources
        self.calls.run("chunk", lambda _cancel: read_chunk(request, sources), self._chunk_loaded,
                       lambda message: self._chunk_failed(request, message))

    def _chunk_loaded(self, chunk: ChunkResult) -> None:
        self._chunk_loading = False
        self.cache.add(chunk)
        if self.detail is not None:
            self._render()

    def _chunk_failed(self, request: ChunkRequest, message: str) -> None:
        self._chunk_loading = False
        self.cache.failed.add(request.chunk)
        self.set_playing(False)
        if not self.view.has_frame():
            self.view.set_placeholder(message)
        self.frame_label.setText(message)
        self.frame_label.setToolTip(message)

    # ------------------------------------------------------------------ playing
    def set_playing(self, playing: bool) -> None:
        if playing and (self.detail is None or len(self.detail.frames) < 2):
            playing = False
        if self.play_button.isChecked() != playing:
            self.play_button.blockSignals(True)
            self.play_button.setChecked(playing)
            self.play_button.blockSignals(False)
        self.play_button.setIcon(self.style().standardIcon(
            QStyle.SP_MediaPause if playing else QStyle.SP_MediaPlay))
        if playing:
            self.player.start()
        else:
            self.player.stop()

    def _play_tick(self) -> None:
        detail = self.detail
        if detail is None or not detail.frames:
            self.set_playing(False)
            return
        following = (self.index + 1) % len(detail.frames)
        if self.cache.has_pixels(detail.video.id, detail.frames[following]):
            self.slider.setValue(following)
        else:
            self._ensure_loaded()   # wait for it rather than skip frames

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        self.set_playing(False)
        super().closeEvent(event)

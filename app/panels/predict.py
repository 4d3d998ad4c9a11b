"""Predict: drop images (or folders of them), see masks, boxes and cut-outs, export them.

The models are the open project's latest generation, loaded once in a thread and reloaded when
the project's models change. Each dropped image is read and segmented in a thread, one image
per task, current image first; the state (images, segmentations, the cache of full-size views),
the work and the export are Qt-free, in ussl_core.views.predict. A bad file is one message
naming it, never a dead panel.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFrame, QGridLayout, QHBoxLayout,
                               QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget)

from app.background import BackgroundCalls
from app.context import StoreChange
from app.gc_policy import freeze_after_import
from app.panels.predict_messages import MessageRow
from app.panels.predict_students import StudentsRow
from app.style import MUTED, THUMB
from app.widgets.drops import dropped_paths
from app.widgets.film_strip import FilmStrip
from app.widgets.image_tile import ImageTile
from app.workers import GeneratorWorker
from ussl_core.builtin import builtin_available
from ussl_core.views.predict import (DEFAULT_METHOD, FAILED, LOADING, NO_MODELS, NO_PROJECT, READY,
                                     Exported, ExportJob, FilmStripImages, ImageResult, LoadedModels,
                                     Prediction, Rendered, Task, choose_method, export_blocked,
                                     load_models, method_choices, models_hint, plural,
                                     progress_text, run_task, skipped_line, usable_method,
                                     view_summary)

THUMB_SIZE = (THUMB.width(), THUMB.height())


class PredictPanel(QWidget):
    """Masks, boxes and cut-outs of dropped images from the project's trained students.

    Drive it without dialogs: `add_paths`, `set_method`, `select`, `move`, `export`. State for
    tests and callers: `paths` (film strip order), `results` (path -> ImageResult), `errors`
    (path -> message), `rendered(path)`, `method`, `models_state`, `segmenter`.
    """

    title = "Predict"
    image_done = Signal(object)     # Path: segmented, or failed (then it is in `errors`)
    models_loaded = Signal(str)     # the models' state after a (re)load
    exported = Signal(object)       # list[Path] written

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.StrongFocus)
        self.images = FilmStripImages()
        self.segmenter = None
        self.models_state = NO_PROJECT
        self.models_source = None         # "project" or "builtin" once models are loaded
        self.models_message = ""
        self._method = DEFAULT_METHOD
        self._fingerprint: tuple | None = None
        self._models_stale = False        # a reload waits until the panel is shown or given images
        self._exporting: ExportJob | None = None
        # "models" and "predict" belong to the open project; an export outlives it.
        self.calls = BackgroundCalls(context, self)
        self.exports = BackgroundCalls(context, self)
        self._build()
        context.project_changed.connect(self._project_changed)
        context.changed.connect(self._store_changed)
        self._project_changed()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.setSpacing(4)

        bar = QHBoxLayout()
        bar.setSpacing(4)
        self.open_button = QPushButton("Open images\u2026")
        self.open_button.setToolTip("Add image files (or drop images and folders onto this panel)")
        self.open_button.clicked.connect(self.open_images_dialog)
        self.open_folder_button = QPushButton("Open folder\u2026")
        self.open_folder_button.setToolTip("Add every image of a folder, in natural order")
        self.open_folder_button.clicked.connect(self.open_folder_dialog)
        self.clear_button = QToolButton()
        self.clear_button.setText("Clear")
        self.clear_button.setToolTip("Remove every image from the film strip")
        self.clear_button.clicked.connect(self.clear)
        self.method_combo = QComboBox()
        self.method_combo.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.method_combo.currentIndexChanged.connect(self._method_chosen)
        self.progress_label = QLabel("")
        self.progress_label.setStyleSheet(MUTED)
        for widget in (self.open_button, self.open_folder_button, self.clear_button,
                       QLabel("  Method"), self.method_combo):
            bar.addWidget(widget)
        bar.addStretch(1)
        bar.addWidget(self.progress_label)
        bar.addSpacing(12)
        self.masks_check = QCheckBox("Masks")
        self.masks_check.setToolTip("<stem>.png: the soft mask, 8-bit, at the input's size "
                                    "(as `ussl segment` writes it)")
        self.boxes_check = QCheckBox("Boxes")
        self.boxes_check.setToolTip("boxes.json and boxes.csv: one box per connected region "
                                    "of the mask above 0.5, in input pixels (x0, y0, x1, y1)")
        self.cutouts_check = QCheckBox("Cut-outs")
        self.cutouts_check.setToolTip("<stem>.cutout.png: the input with the GrabCut-refined "
                                      "mask as alpha")
        self.export_current_button = QPushButton("Export current\u2026")
        self.export_current_button.clicked.connect(lambda: self.export_dialog("current"))
        self.export_all_button = QPushButton("Export all\u2026")
        self.export_all_button.clicked.connect(lambda: self.export_dialog("all"))
        for check in (self.masks_check, self.boxes_check, self.cutouts_check):
            check.setChecked(True)
            check.toggled.connect(self._update_actions)
            bar.addWidget(check)
        bar.addWidget(self.export_current_button)
        bar.addWidget(self.export_all_button)
        outer.addLayout(bar)

        self.hint_label = QLabel("")
        self.hint_label.setWordWrap(True)
        self.hint_label.setFrameShape(QFrame.StyledPanel)
        self.hint_label.setStyleSheet("QLabel { background: #fff6e0; color: #5c4300; padding: 6px; }")
        self.hint_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        outer.addWidget(self.hint_label)

        self.message_row = MessageRow()
        self.message_label, self.dismiss_button = self.message_row.label, self.message_row.dismiss_button
        outer.addWidget(self.message_row)

        grid = QGridLayout()
        grid.setSpacing(4)
        self.input_tile = ImageTile("Input", "Drop images or folders here, or use Open")
        self.mask_tile = ImageTile("Soft mask")
        self.overlay_tile = ImageTile("Overlay and boxes")
        self.cutout_tile = ImageTile("GrabCut cut-out")
        for i, tile in enumerate((self.input_tile, self.mask_tile, self.overlay_tile, self.cutout_tile)):
            grid.addWidget(tile, i // 2, i % 2)
        outer.addLayout(grid, 1)
        self.info_label = QLabel("")
        self.info_label.setStyleSheet(MUTED)
        self.info_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        outer.addWidget(self.info_label)

        self.students_row = StudentsRow()
        outer.addWidget(self.students_row)

        self.strip = FilmStrip()
        self.strip.currentRowChanged.connect(self._show_current)
        outer.addWidget(self.strip)

    # ------------------------------------------------------------------ state
    @property
    def paths(self) -> list[Path]:
        return self.images.paths

    @property
    def results(self) -> dict[Path, ImageResult]:
        return self.images.results

    @property
    def errors(self) -> dict[Path, str]:
        return self.images.errors

    @property
    def student_tiles(self) -> dict[str, ImageTile]:
        return self.students_row.tiles

    @property
    def method(self) -> str:
        return self._method

    @property
    def current_path(self) -> Path | None:
        row = self.strip.currentRow()
        return self.paths[row] if 0 <= row < len(self.paths) else None

    def rendered(self, path: Path | None = None) -> Rendered | None:
        """The current method's full-size views of `path` (default: the shown image), if made."""
        path = path if path is not None else self.current_path
        return self.images.view(path, self._method) if path is not None else None

    def is_idle(self) -> bool:
        """Nothing left to segment or render for the shown image, and no thread running."""
        return (not self.calls.running("models") and not self.calls.running("predict")
                and self._next_task() is None)

    def method_names(self) -> list[str]:
        """The methods the combo box offers (enabled or not): multi, multiselect, students."""
        return [self.method_combo.itemData(i) for i in range(self.method_combo.count())]

    # ------------------------------------------------------------------ models
    def _project_changed(self) -> None:
        self.calls.forget()
        self._set_models(LOADING, None, "", None)   # another project (or none): its models, from scratch
        self.reload_models()

    def _store_changed(self, change: StoreChange) -> None:
        if not change.live and change.touches({"models"}):
            self.reload_models()

    def reload_models(self) -> None:
        """(Re)load the project's latest generation in a thread, when its model files changed;
        the models shipped with ussl when no project is open or it has no trained models. A
        reload asked for while one runs follows it (loading cannot stop halfway)."""
        root = self.context.root
        if root is None and not builtin_available():
            self._set_models(NO_PROJECT, None, "", None)
            return
        if not (self.isVisible() or self.paths):
            # Loading imports TensorFlow into the GUI process: wait until the panel is
            # shown or given images, so that jobs finishing elsewhere do not cost a stall.
            self._models_stale = True
            return
        self._models_stale = False
        known = self._fingerprint
        if known is None:
            self.models_state = LOADING
            self._update_hint()

        def work(_cancel) -> LoadedModels:
            loaded = load_models(root, known)
            freeze_after_import("tensorflow")
            return loaded

        self.calls.run("models", work, self._models_done, self._models_failed, coalesce=True)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        super().showEvent(event)
        if self._models_stale:
            self.reload_models()

    def _models_done(self, loaded: LoadedModels) -> None:
        if loaded.segmenter is not None:
            self._set_models(READY, loaded.segmenter, loaded.missing, loaded.fingerprint, loaded.source)
        elif not loaded.unchanged:
            self._set_models(NO_MODELS, None, loaded.missing, loaded.fingerprint)
        self.models_loaded.emit(self.models_state)
        self._pump()

    def _models_failed(self, message: str) -> None:
        self._set_models(FAILED, None, message, None)
        self.models_loaded.emit(self.models_state)
        self._pump()

    def _set_models(self, state: str, segmenter, message: str, fingerprint: tuple | None,
                    source: str | None = None) -> None:
        self.models_state, self.segmenter, self.models_message = state, segmenter, message
        self.models_source = source
        self._fingerprint = fingerprint
        self._drop_task()
        self.images.forget_results()
        self.strip.reset_thumbnails()
        self._fill_methods()
        self._update_hint()
        self._show_current()

    def _fill_methods(self) -> None:
        combo = self.method_combo
        combo.blockSignals(True)
        combo.clear()
        choices = method_choices(self.segmenter)
        for i, choice in enumerate(choices):
            combo.addItem(choice.label, choice.name)
            combo.setItemData(i, choice.tip, Qt.ToolTipRole)
            combo.model().item(i).setEnabled(choice.enabled)
        self._method = usable_method(self._method, choices)
        combo.setCurrentIndex(self.method_names().index(self._method))
        combo.setEnabled(self.segmenter is not None)
        combo.setToolTip("" if self.segmenter is not None else "Available once the project has trained models")
        combo.blockSignals(False)

    def _update_hint(self) -> None:
        text = models_hint(self.models_state, self.models_source, self.context.root is not None,
                           self.models_message)
        self.hint_label.setText(text)
        self.hint_label.setVisible(bool(text))
        self._update_actions()

    # ------------------------------------------------------------------ adding images
    def open_images_dialog(self) -> None:
        patterns = "*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp"
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images", "",
                                                f"Images ({patterns});;All files (*)")
        if paths:
            self.add_paths([Path(p) for p in paths])

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if path:
            self.add_paths([Path(path)])

    def add_paths(self, paths: list[Path]) -> list[Path]:
        """Add image files and folders of images to the film strip; returns the images added
        (images already there are not added twice). Paths that are not images are reported."""
        added, problems = self.images.add(paths)
        for path in added:
            self.strip.add_image(path.name, str(path))
        if problems:
            self._show_errors(list(problems))
        if added and self.strip.currentRow() < 0:
            self.strip.setCurrentRow(self.paths.index(added[0]))
        self._update_actions()
        if self._models_stale:
            self.reload_models()
        self._pump()
        return added

    def clear(self) -> None:
        """Remove every image (results from a running task are then ignored)."""
        self._drop_task()
        self.images.clear()
        self.strip.clear()
        self.message_row.set_message("")
        self._show_current()
        self._update_actions()

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if dropped_paths(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = dropped_paths(event)
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.add_paths(paths)

    # ------------------------------------------------------------------ choosing
    def set_method(self, name: str) -> None:
        """Show masks by "multi", "multiselect" or a student (its name or architecture)."""
        name = choose_method(name, method_choices(self.segmenter))
        self.method_combo.setCurrentIndex(self.method_names().index(name))   # -> _method_chosen

    def _method_chosen(self, index: int) -> None:
        method = self.method_combo.itemData(index)
        if method and method != self._method:
            self._method = method
            self._show_current()
            self._pump()

    def select(self, path: Path) -> None:
        self.strip.setCurrentRow(self.paths.index(Path(path)))

    def move(self, step: int) -> None:
        """Show the previous (-1) or next (+1) image of the film strip."""
        if self.paths:
            row = min(max(self.strip.currentRow() + step, 0), len(self.paths) - 1)
            self.strip.setCurrentRow(row)

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        if event.key() in (Qt.Key_Left, Qt.Key_Right) and not event.modifiers() & ~Qt.KeypadModifier:
            self.move(-1 if event.key() == Qt.Key_Left else 1)
            return
        super().keyPressEvent(event)

    # ------------------------------------------------------------------ segmenting (threads)
    def _next_task(self) -> Task | None:
        if self.models_state != READY:
            return None
        return self.images.next_task(self.strip.currentRow(), self._method)

    def _pump(self) -> None:
        """Start the next task unless one runs (one at a time: the models are not shared). The
        next starts when its thread ends, whether its result was still wanted or not."""
        self._update_progress()
        if self.calls.running("predict"):
            return
        task = self._next_task()
        if task is None:
            return
        segmenter = self.segmenter
        self.calls.run("predict", lambda _cancel: run_task(segmenter, task, THUMB_SIZE),
                       self._predicted, lambda message: self._show_errors([message], raw=True),
                       on_finished=self._pump)

    def _drop_task(self) -> None:
        """Drop the running task's result (made for other models or images); the next task
        starts when its thread ends."""
        self.calls.cancel("predict")

    def _predicted(self, prediction: Prediction) -> None:
        path = prediction.task.path
        if path not in self.paths:
            return
        if prediction.error:
            self._drop_bad(path, prediction.error)
        else:
            self.images.accept(prediction)
            if prediction.result is not None:
                self.strip.set_thumbnail(self.paths.index(path), prediction.result.thumbnail)
            if path == self.current_path:
                self._show_current()
        self.image_done.emit(path)

    def _drop_bad(self, path: Path, message: str) -> None:
        """A file that could not be read or segmented: one message, and off the film strip."""
        self.strip.remove_quietly(self.images.remove(path, message))
        self._show_errors([path])
        self._show_current()
        self._update_actions()

    # ------------------------------------------------------------------ showing
    def _show_current(self, *_args) -> None:
        path = self.current_path
        result = self.results.get(path) if path is not None else None
        view = self.rendered(path)
        tiles = (self.input_tile, self.mask_tile, self.overlay_tile, self.cutout_tile)
        if view is None:
            waiting = ("Drop images or folders here, or use Open" if path is None else
                       "Segmenting\u2026" if self.models_state in (READY, LOADING) else
                       "Waiting for trained models")
            for tile in tiles:
                tile.set_content(None)
                tile.placeholder = waiting
            self.info_label.setText(path.name if path is not None else "")
            if path is not None:
                self._pump()   # another image was chosen: make its views now
        else:
            self.input_tile.set_content(view.image)
            self.mask_tile.set_content(view.mask)
            self.overlay_tile.set_content(view.image, view.mask, view.boxes)
            self.cutout_tile.set_content(view.cutout)
            self.info_label.setText(view_summary(path, result, view, self.strip.currentRow() + 1,
                                                 len(self.paths)))
        names = [s.name for s in self.segmenter.students] if self.segmenter is not None else []
        self.students_row.show_image(names, result, self._method)
        self._update_actions()

    def _update_progress(self) -> None:
        self.progress_label.setText(progress_text(len(self.paths), self.images.segmented(),
                                                  self.models_state == READY))

    def _show_errors(self, items: list, raw: bool = False) -> None:
        lines = items if raw else [skipped_line(p, self.errors[p]) for p in items]
        self.message_row.add_lines(lines, "\n".join(list(self.errors.values())[-20:]))   # full paths

    def _update_actions(self, *_args) -> None:
        checks = (self.masks_check, self.boxes_check, self.cutouts_check)
        any_part = any(check.isChecked() for check in checks)
        for button, ready, normal in (
                (self.export_current_button, self.current_path in self.results,
                 "Write the shown image's mask, boxes and cut-out to a folder"),
                (self.export_all_button, any(p in self.results for p in self.paths),
                 "Write every segmented image's mask, boxes and cut-out to a folder")):
            why = export_blocked(self._exporting is not None, any_part, ready, self.models_state == READY)
            button.setEnabled(not why)
            button.setToolTip(why or normal)
        self.clear_button.setEnabled(bool(self.paths))

    # ------------------------------------------------------------------ export
    def export_dialog(self, which: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder")
        if folder:
            self.export(Path(folder), which)

    def export(self, folder: Path, which: str = "current", masks: bool | None = None,
               boxes: bool | None = None, cutouts: bool | None = None) -> GeneratorWorker | None:
        """Write masks (<stem>.png), boxes (boxes.json, boxes.csv) and cut-outs
        (<stem>.cutout.png) of the current image or of "all" segmented images to `folder`, in
        a thread; `exported` carries the written paths. Parts default to the check boxes.
        Returns the worker, or None when there is nothing to export or an export runs."""
        if which not in ("current", "all"):
            raise ValueError(f"which must be 'current' or 'all', not {which!r}")
        parts = [self.masks_check.isChecked() if masks is None else masks,
                 self.boxes_check.isChecked() if boxes is None else boxes,
                 self.cutouts_check.isChecked() if cutouts is None else cutouts]
        paths = [self.current_path] if which == "current" else list(self.paths)
        job = self.images.export_job(Path(folder), self._method, paths, *parts)
        if self._exporting is not None or job is None or not any(parts):
            self.message_row.set_message("An export is already running" if self._exporting is not None
                                         else "Nothing to export: tick masks, boxes or cut-outs" if job
                                         else "Nothing segmented to export yet")
            return None
        self._exporting = job
        self.progress_label.setText(f"Exporting {plural(len(job.items), 'image')}\u2026")
        worker = self.exports.run("export", job.run, self._export_done, self._export_failed)
        self._update_actions()
        return worker

    def _export_ended(self) -> None:
        self._exporting = None
        self._update_progress()
        self._update_actions()

    def _export_done(self, exported: Exported) -> None:
        self._export_ended()
        self.progress_label.setText(exported.summary())
        if exported.skipped:
            self.message_row.set_message("Not exported: " + "; ".join(exported.skipped))
        self.exported.emit(exported.written)

    def _export_failed(self, message: str) -> None:
        self._export_ended()
        self.message_row.set_message(f"Export failed: {message}")

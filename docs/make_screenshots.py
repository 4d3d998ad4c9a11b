"""Screenshots of every panel of the real window on a project, for docs/screenshots/.

    xvfb-run -s "-screen 0 1600x1000x24" python docs/make_screenshots.py PROJECT \\
        --images ../shared/data/davis2016-val/JPEGImages/480p/blackswan [--video blackswan]
    xvfb-run -s "-screen 0 1600x1000x24" python docs/make_screenshots.py --fresh IMAGE [IMAGE ...]

--fresh: the app as just installed (no project), each image dropped on the window and shown
in the Predict panel with the models shipped with ussl: predict_fresh_<image stem>.png.

PROJECT is a project with teacher masks, a selection and trained models (for example the one
`benchmarks/generations.py --out DIR` leaves in DIR/project). It is only read. --images gives
the Predict panel a few frames to segment (every 20th image of that folder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, nargs="?")
    parser.add_argument("--images", type=Path)
    parser.add_argument("--fresh", type=Path, nargs="+", metavar="IMAGE")
    parser.add_argument("--video", default="blackswan")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from app.window import MainWindow

    app = QApplication.instance() or QApplication([])

    def settle(seconds: float, until=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            app.processEvents()
            time.sleep(0.01)
        for _ in range(20):
            app.processEvents()

    window = MainWindow()
    window.resize(1500, 900)
    window.show()
    if args.fresh:
        return shoot_fresh(window, args, settle)
    if args.project is None or args.images is None:
        parser.error("give PROJECT and --images, or --fresh IMAGE ...")
    if not window.open_project(args.project):
        return 1
    panels = {panel.title: panel for panel in window.panels}
    video_id = next(v.id for v in window.context.project.videos() if v.name == args.video)

    def shoot(title: str, file: str) -> None:
        path = args.out / file
        window.grab().save(str(path))
        print(f"{title}: {path}")

    # Videos: the chosen video, a frame from its middle, side by side with the ground truth.
    videos = panels["Videos"]
    window.tabs.setCurrentWidget(videos)
    settle(10, lambda: videos.model.rowCount() > 0)
    videos.table.select_video(video_id)
    settle(3)
    videos.slider.setValue(videos.slider.maximum() // 2)
    videos.gt_check.setChecked(True)
    videos.side_check.setChecked(True)
    settle(4)
    shoot("Videos", "videos.png")

    # Audit: the grid sorted by score with the purity curve and the cut-off.
    audit = panels["Audit"]
    window.tabs.setCurrentWidget(audit)
    settle(30, lambda: audit.model.rowCount() > 0 and audit.curve is not None)
    audit.percent_spin.setValue(10.0)
    audit.grid.setFocus()
    settle(6)
    shoot("Audit", "audit.png")

    # Training: the runs, one selected with its card and losses.
    training = panels["Training"]
    window.tabs.setCurrentWidget(training)
    settle(1)
    if training.history.rowCount():
        training.history.selectRow(0)
    settle(2)
    shoot("Training", "training.png")

    generations = panels["Generations"]
    window.tabs.setCurrentWidget(generations)
    settle(1)
    shoot("Generations", "generations.png")

    # Predict: a few frames of one video.
    predict = panels["Predict"]
    window.tabs.setCurrentWidget(predict)
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    images = images[:: max(1, len(images) // 5)][:5]
    predict.add_paths(images)
    settle(180, lambda: len(predict.results) >= len(images) and predict.is_idle())
    predict.strip.setCurrentRow(min(2, predict.strip.count() - 1))
    settle(60, lambda: predict.rendered() is not None and predict.is_idle())
    settle(2)
    shoot("Predict", "predict.png")

    # Per-image: one video's frames, sorted by disagreement between teacher and students.
    browser = panels["Per-image"]
    window.tabs.setCurrentWidget(browser)
    settle(5)
    browser.set_video(video_id)
    settle(300, browser.is_complete)
    browser.sort_by("disagreement", descending=True)
    settle(8)
    shoot("Per-image", "per_image.png")

    window.tabs.setCurrentWidget(videos)
    window.setAttribute(Qt.WA_DeleteOnClose, False)
    window.close()
    return 0


def shoot_fresh(window, args, settle) -> int:
    """Each image dropped on a window with no project: the shipped models segment it."""
    predict = next(panel for panel in window.panels if panel.title == "Predict")
    for image in args.fresh:
        predict.clear()
        window.drop_paths([image])
        settle(240, lambda: predict.rendered(image) is not None and predict.is_idle())
        settle(2)
        path = args.out / f"predict_fresh_{image.stem}.png"
        window.grab().save(str(path))
        print(f"Predict (fresh app, {image.name}): {path}")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

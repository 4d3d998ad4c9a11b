"""Training throughput through the real input pipeline vs in-memory tensors; prints JSON.

    python benchmarks/input_pipeline.py [--project PROJECT] [--arch basic_unet] [--epochs 3]

Same model, same batch size: (a) `fit` on tensors already at the input size, in memory, no
augmentation; (b) `fit` on `training.make_dataset` (random 80 % crops, flips, resizing, from
the stored frames and masks). The goal is (b) >= 90 % of (a). With --project the selected pairs
of that project are used; otherwise 160 generated 300x300 frames.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def images_per_second(model, data, n_images: int, epochs: int) -> float:
    model.fit(data, epochs=1, verbose=0)  # warm-up: tracing, first allocation
    started = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0)
    return n_images * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project")
    parser.add_argument("--arch", default="basic_unet")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from ussl_core.models import PRESETS, build_model
    from ussl_core.training import TrainingSettings, load_selection, make_dataset

    if args.project:
        from ussl_core.store import Project

        with Project.open(args.project) as project:
            data = load_selection(project)
        frames, masks = data.frames, data.masks
    else:
        from ussl_core.sample import SampleSpec, generate_video

        video, truth = generate_video(SampleSpec(n_frames=160, width=300, height=300))
        frames, masks = video, truth.astype(np.uint8) * 255
    settings = TrainingSettings(batch_size=args.batch_size)
    size = PRESETS["compact"][args.arch]["input_size"]
    model = build_model(args.arch, "compact")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    out = int(model.output_shape[1])
    pipeline = make_dataset(frames, masks, size, out, args.batch_size, True, settings, shuffle=True)
    x = tf.image.resize(frames.astype(np.float32), (size, size)).numpy()
    y = tf.image.resize(masks[..., None].astype(np.float32) / 255.0, (out, out)).numpy()
    in_memory = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size)
    memory_rate = images_per_second(model, in_memory, len(frames), args.epochs)
    pipeline_rate = images_per_second(model, pipeline, len(frames), args.epochs)
    print(json.dumps({"arch": args.arch, "images": int(len(frames)), "batch_size": args.batch_size,
                      "in_memory_images_per_s": round(memory_rate, 1),
                      "pipeline_images_per_s": round(pipeline_rate, 1),
                      "ratio": round(pipeline_rate / memory_rate, 3)}, indent=2))


if __name__ == "__main__":
    main()

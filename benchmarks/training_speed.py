"""Training throughput of each compact student on this machine, and where the time goes; prints JSON.

    python benchmarks/training_speed.py [--archs lowres,fconv,...] [--batches 12] [--out FILE]

For every student, on generated 320x240 frames (8 per timed batch) with masks (the store's working size):
- `fit_images_per_s`: the real training path, `training.train_student`'s own compiled model and
  `training.make_dataset` (augmentation, resizing) fed to Keras `fit` for six epochs, after a
  warm-up epoch (`--fresh-iterators`: a new dataset iterator every epoch, as before);
- `step_images_per_s`: the compiled train step alone, on batches already in memory;
- `forward_images_per_s`: inference alone (the model called in a compiled function);
- `input_images_per_s`: the input pipeline alone (augmented batches drawn, no model).
Run it on an idle machine: the figures are wall-clock rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def rate(work, n_images: int, repeats: int = 5) -> float:
    """Images per second of `work()` (which handles n_images): the median of `repeats` runs
    after a warm-up run."""
    work()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return n_images / sorted(seconds)[len(seconds) // 2]


def fit_images_per_s(model, pipeline, batches: int, batch: int, fresh_iterators: bool,
                     epochs: int = 6) -> float:
    """Images per second of Keras `fit` over several epochs after a warm-up epoch: through one
    endless iterator as `training.fit_with_events` runs it, or (`fresh_iterators`, as ussl did
    before) through a new iterator every epoch."""
    data, steps = (pipeline, {}) if fresh_iterators else (pipeline.repeat(), {"steps_per_epoch": batches})
    model.fit(data, epochs=1, verbose=0, **steps)
    started = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0, **steps)
    return batches * batch * epochs / (time.perf_counter() - started)


def measure(arch: str, frames: np.ndarray, masks: np.ndarray, batches: int,
            fresh_iterators: bool) -> dict:
    import tensorflow as tf

    from ussl_core.models import PRESETS, build_model
    from ussl_core.training import TrainingSettings, compile_student, make_dataset

    settings = TrainingSettings()
    batch = settings.batch_size
    n = batches * batch
    model = build_model(arch, "compact")
    compile_student(model, settings)
    size = PRESETS["compact"][arch]["input_size"]
    out = int(model.output_shape[1])
    pipeline = make_dataset(frames[:n], masks[:n], size, out, batch, True, settings, shuffle=True)
    fit_rate = fit_images_per_s(model, pipeline, batches, batch, fresh_iterators)

    x = tf.image.resize(frames[:batch].astype(np.float32), (size, size))
    y = tf.image.resize(masks[:batch, ..., None].astype(np.float32) / 255.0, (out, out))

    def steps():
        for _ in range(batches):
            model.train_on_batch(x, y)
    step_rate = rate(steps, n)

    forward = tf.function(lambda images: model(images, training=False))

    def forwards():
        for _ in range(batches):
            forward(x).numpy()
    forward_rate = rate(forwards, n)

    def draw():
        for _ in pipeline:
            pass
    input_rate = rate(draw, n)
    return {"params": int(model.count_params()), "input_size": size, "batch_size": batch,
            "fit_images_per_s": round(fit_rate, 1), "step_images_per_s": round(step_rate, 1),
            "forward_images_per_s": round(forward_rate, 1), "input_images_per_s": round(input_rate, 1)}


def main() -> None:
    from ussl_core.models import STUDENTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(STUDENTS))
    parser.add_argument("--batches", type=int, default=24, help="batches per timed pass")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--fresh-iterators", action="store_true",
                        help="fit as ussl did before: a new dataset iterator every epoch")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from ussl_core.sample import SampleSpec, generate_video

    video, truth = generate_video(SampleSpec(n_frames=args.batches * 8, width=320, height=240))
    masks = truth.astype(np.uint8) * 255
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "command": " ".join(["python", *sys.argv]),
              "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
              "students": {}}
    for arch in args.archs.split(","):
        result["students"][arch] = measure(arch, video, masks, args.batches, args.fresh_iterators)
        print(arch, result["students"][arch], file=sys.stderr, flush=True)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

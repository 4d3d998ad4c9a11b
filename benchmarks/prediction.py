"""Single-image prediction latency of a compact student (model already loaded); prints JSON.

    python benchmarks/prediction.py [--arch basic_unet] [--model PATH.keras]

Measures the interactive path (`predict.LoadedModel`, a compiled call on one image) at the
model's input size, and the whole `Segmenter.segment` on one 854x480 image (resize in, predict,
resize out), as medians over repeated runs after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def median_ms(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), sorted(times)[int(0.9 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="basic_unet")
    parser.add_argument("--model", help="a trained .keras model (default: a freshly built one)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    from ussl_core.models import build_model
    from ussl_core.models.io import save_model_atomic
    from ussl_core.predict import LoadedModel, Segmenter

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else Path(tmp) / f"{args.arch}.keras"
        if not args.model:
            save_model_atomic(build_model(args.arch, "compact"), path)
        model = LoadedModel(path)
        size = model.input_size
        image = np.random.default_rng(0).integers(0, 255, (1, size, size, 3)).astype(np.float32)
        for _ in range(5):
            model(image)
        call_ms, call_p90 = median_ms(lambda: model(image), args.repeats)
        segmenter = Segmenter([path])
        frame = np.random.default_rng(1).integers(0, 255, (480, 854, 3)).astype(np.uint8)
        for _ in range(3):
            segmenter.segment([frame], "multi")
        segment_ms, segment_p90 = median_ms(lambda: segmenter.segment([frame], "multi"), args.repeats)
    print(json.dumps({"arch": args.arch, "preset": "compact", "input_size": size,
                      "model_call_ms_median": round(call_ms, 1), "model_call_ms_p90": round(call_p90, 1),
                      "segment_854x480_ms_median": round(segment_ms, 1),
                      "segment_854x480_ms_p90": round(segment_p90, 1)}, indent=2))


if __name__ == "__main__":
    main()

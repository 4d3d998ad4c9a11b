"""Tiny saved models (students and an EvalSeg-Net) written like trained ones, for tests that need
a project or folder with models but cannot afford to train them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

STUDENT_CONSTANT = 0.7   # the lowres student's output everywhere


def save_model_with_card(model, folder: Path, name: str, arch: str, generation: int = 1) -> Path:
    from ussl_core.models.io import save_model_atomic
    from ussl_core.store.model_files import MODEL_SUFFIX, write_card

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{MODEL_SUFFIX}"
    save_model_atomic(model, path)
    write_card(path, {"name": name, "architecture": arch, "preset": "tiny", "generation": generation})
    return path


def scoring_evalseg(size: int):
    """An EvalSeg-Net stand-in of registered layers: quality = sigmoid(10 * mean(candidate) - 5)."""
    import keras

    image = keras.Input((size, size, 3), name="image")
    candidate = keras.Input((size, size, 1), name="candidate")
    pooled = keras.layers.Concatenate(name="pooled")([keras.layers.GlobalAveragePooling2D()(image),
                                                      keras.layers.GlobalAveragePooling2D()(candidate)])
    quality = keras.layers.Dense(1, activation="sigmoid", name="quality")(pooled)
    model = keras.Model([image, candidate], quality, name="evalseg")
    model.get_layer("quality").set_weights([np.array([[0.0], [0.0], [0.0], [10.0]], np.float32),
                                            np.array([-5.0], np.float32)])
    return model


def save_tiny_models(folder: Path, generation: int = 1) -> dict[str, Path]:
    """Two tiny students (a random BasicU-Net, a LowRes-Net whose output is constant 0.7) and
    an EvalSeg-Net that scores a candidate by its mean, saved in `folder` like trained models."""
    import keras

    from ussl_core.models import build_model

    keras.utils.set_random_seed(3)
    unet = build_model("basic_unet", "compact", input_size=32, widths=(4, 8), centre=8)
    lowres = build_model("lowres", "compact", input_size=32, output_size=8, maps=8, tail_maps=4)
    fc = lowres.get_layer("fc_mask")
    kernel, bias = fc.get_weights()
    fc.set_weights([np.zeros_like(kernel), np.full_like(bias, STUDENT_CONSTANT)])
    g = f"g{generation}"
    return {"unet": save_model_with_card(unet, folder, f"{g}_basic_unet_tiny", "basic_unet", generation),
            "lowres": save_model_with_card(lowres, folder, f"{g}_lowres_tiny", "lowres", generation),
            "evalseg": save_model_with_card(scoring_evalseg(32), folder, f"{g}_evalseg_tiny",
                                            "evalseg", generation)}


def save_tiny_builtin(folder: Path) -> Path:
    """A stand-in for ussl_core/builtin: the tiny models and a card naming them."""
    paths = save_tiny_models(folder, generation=2)
    for key, arch in (("unet", "basic_unet"), ("lowres", "lowres"), ("evalseg", "evalseg")):
        card_path = paths[key].with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["architecture"] = arch
        card_path.write_text(json.dumps(card))
    (folder / "card.json").write_text(json.dumps({
        "students": [paths["unet"].stem, paths["lowres"].stem], "evalseg": paths["evalseg"].stem,
        "data": [{"source": "generated test images", "licence": "none"}]}))
    return folder

"""The five students and EvalSeg-Net: sizes, named blocks, one training step, safe save/load,
the paper-size builders, the in-model input features, and `ussl models --json`."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gc
import json
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from ussl_core.cli import main
from ussl_core.errors import UsslError
from ussl_core.models import ARCHITECTURES, PAPER_PARAMS, PRESETS, STUDENTS, build_model
from ussl_core.models.io import load_model, save_model_atomic
from ussl_core.models.layers import ImageFeatures

# (input size, output size) per preset; EvalSeg-Net's output is one quality value.
SIZES = {
    "compact": {"lowres": (64, 16), "fconv": (128, 64), "basic_unet": (128, 128),
                "dilate_unet": (128, 128), "dense_unet": (128, 128), "evalseg": (64, None)},
    "paper": {"lowres": (128, 32), "fconv": (256, 128), "basic_unet": (256, 256),
              "dilate_unet": (256, 256), "dense_unet": (256, 256), "evalseg": (128, None)},
}

NAMED_LAYERS = {
    "lowres": ["rgb_features", "derivatives_features", "hue_saturation_features", "rgb_conv3",
               "derivatives_conv5", "hue_saturation_pool", "mid_conv3", "top_conv5", "tail_conv5",
               "flatten", "fc_mask", "mask"],
    "fconv": ["rgb_conv3", "derivatives_conv5", "hue_saturation_pool", "top_conv5_2",
              "tail_conv5", "mask"],
    "basic_unet": ["features", "down1_conv1", "down5_conv2", "centre_conv1", "centre_conv2",
                   "up5_concat", "up1_conv3", "mask"],
    "dilate_unet": ["features", "down1_conv1", "down4_conv2", "centre_atrous1", "centre_atrous6",
                    "up1_conv3", "mask"],
    "dense_unet": ["features", "stem", "down1_conv1", "down4_conv4", "down4_transition",
                   "up4_transition", "up1_transition", "up1_conv4", "mask"],
    "evalseg": ["image", "candidate", "rgb_conv3", "candidate_conv3", "hue_saturation_pool",
                "fc", "quality"],
}


def random_inputs(arch: str, size: int, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    if arch == "evalseg":
        return [image, rng.uniform(0, 1, (batch, size, size, 1)).astype(np.float32)]
    return image


def layer_names(model) -> set[str]:
    return {layer.name for layer in model.layers}


# ----------------------------------------------------------------------------- compact builders
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_compact_builder_builds_fits_and_round_trips(arch: str, tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    model = build_model(arch, "compact")
    in_size, out_size = SIZES["compact"][arch]
    assert PRESETS["compact"][arch]["input_size"] == in_size
    assert model.count_params() < 3_000_000
    missing = [n for n in NAMED_LAYERS[arch] if n not in layer_names(model)]
    assert not missing, f"{arch} lacks the layers {missing}"
    assert tuple(model.inputs[0].shape) == (None, in_size, in_size, 3)
    if arch == "evalseg":
        assert tuple(model.output_shape) == (None, 1)
        assert model.get_layer("quality").activation.__name__ == "sigmoid"
    else:
        assert tuple(model.output_shape) == (None, out_size, out_size, 1)
        # Students regress the soft masks with a linear output (clipped at use).
        last = model.get_layer("fc_mask" if arch == "lowres" else "mask")
        assert last.activation.__name__ == "linear"

    # One training step on random data at the model's input size moves the weights.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", run_eagerly=True)
    x = random_inputs(arch, in_size, 2)
    y = np.random.default_rng(2).uniform(0, 1, (2, 1) if arch == "evalseg"
                                          else (2, out_size, out_size, 1)).astype(np.float32)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(float(np.ravel(loss)[0]))
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert changed > len(before) // 2

    # Save atomically and load with safe_mode: same architecture, identical predictions.
    path = tmp_path / "models" / f"{arch}.keras"
    save_model_atomic(model, path)
    assert path.exists() and not list(path.parent.glob("*.tmp*"))
    loaded = load_model(path)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    x_test = random_inputs(arch, in_size, 2, seed=3)
    expected = np.asarray(model(x_test, training=False))
    np.testing.assert_allclose(np.asarray(loaded(x_test, training=False)), expected, rtol=0, atol=1e-6)
    assert loaded.count_params() == model.count_params()


def test_dilate_unet_centre_rates_rise_and_fall() -> None:
    model = build_model("dilate_unet", "compact")
    rates = [model.get_layer(f"centre_atrous{i}").dilation_rate[0] for i in range(1, 7)]
    assert rates == [1, 2, 4, 8, 4, 2]
    # DilateU-Net has four down levels (the centre replaces the fifth).
    assert "down5_conv1" not in layer_names(model)


def test_lowres_rejects_inconsistent_sizes() -> None:
    from ussl_core.errors import SettingsError

    with pytest.raises(SettingsError, match="quarter"):
        build_model("lowres", "compact", output_size=20)
    with pytest.raises(SettingsError, match="unknown preset"):
        build_model("lowres", "huge")
    with pytest.raises(SettingsError, match="unknown architecture"):
        build_model("resnet", "compact")


# ----------------------------------------------------------------------------- paper builders
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_paper_builder_size_and_forward(arch: str) -> None:
    started = time.perf_counter()
    model = build_model(arch, "paper")
    try:
        params = model.count_params()
        if arch in PAPER_PARAMS:
            assert abs(params - PAPER_PARAMS[arch]) <= 0.15 * PAPER_PARAMS[arch], (arch, params)
        missing = [n for n in NAMED_LAYERS[arch] if n not in layer_names(model)]
        assert not missing
        in_size, out_size = SIZES["paper"][arch]
        out = np.asarray(model(random_inputs(arch, in_size, 1), training=False))
        assert out.shape == ((1, 1) if arch == "evalseg" else (1, out_size, out_size, 1))
        assert np.isfinite(out).all()
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()
    # Paper-size nets are big (up to 78M parameters) but one forward must stay affordable.
    assert time.perf_counter() - started < 90


def test_paper_students_are_larger_than_compact() -> None:
    for arch in STUDENTS:
        assert PRESETS["paper"][arch]["input_size"] >= PRESETS["compact"][arch]["input_size"]


# ----------------------------------------------------------------------------- input features
def test_image_features_config_round_trip_and_unknown_features() -> None:
    layer = ImageFeatures(["rgb", "derivatives", "hue_saturation"], name="f")
    config = layer.get_config()
    assert config["features"] == ["rgb", "derivatives", "hue_saturation"]
    again = ImageFeatures.from_config(config)
    assert again.features == ("rgb", "derivatives", "hue_saturation") and again.name == "f"
    # Through Keras' own (de)serialisation, as the .keras loader does it.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ImageFeatures) and restored.features == layer.features
    assert layer.compute_output_shape((None, 8, 8, 3)) == (None, 8, 8, 7)
    out = layer(np.zeros((1, 8, 8, 3), np.float32))
    assert tuple(out.shape) == (1, 8, 8, 7)
    with pytest.raises(ValueError, match="features"):
        ImageFeatures(["rgb", "depth"])
    with pytest.raises(ValueError, match="features"):
        ImageFeatures([])


def test_derivatives_zero_on_constant_and_central_difference_on_ramp() -> None:
    layer = ImageFeatures(["derivatives"])
    flat = np.asarray(layer(np.full((1, 7, 9, 3), 77.0, np.float32)))
    assert flat.shape == (1, 7, 9, 2)
    np.testing.assert_array_equal(flat, 0.0)

    # value(y, x) = x^2 + 3y: central differences are 2x along x and 3 along y (a forward
    # difference would give 2x + 1), halved at the borders by the symmetric padding.
    h, w = 7, 9
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    grey = xs ** 2 + 3 * ys
    image = np.repeat(grey[None, ..., None], 3, axis=-1).astype(np.float32)
    out = np.asarray(layer(image))[0] * 255.0
    dx, dy = out[..., 0], out[..., 1]
    np.testing.assert_allclose(dx[:, 1:-1], 2 * xs[:, 1:-1], atol=1e-3)
    np.testing.assert_allclose(dy[1:-1, :], np.full((h - 2, w), 3.0), atol=1e-3)
    np.testing.assert_allclose(dx[:, 0], 0.5 * (1 - 0), atol=1e-3)                   # (v[1] - v[0]) / 2
    np.testing.assert_allclose(dx[:, -1], 0.5 * ((w - 1) ** 2 - (w - 2) ** 2), atol=1e-3)
    np.testing.assert_allclose(dy[0, :], 1.5, atol=1e-3)
    # A colour-only change with the same mean intensity has no derivative.
    colour = np.zeros((1, 4, 6, 3), np.float32)
    colour[..., :3, 0], colour[..., 3:, 1] = 90.0, 90.0
    np.testing.assert_allclose(np.asarray(layer(colour)), 0.0, atol=1e-6)


def test_hue_saturation_of_pure_colours() -> None:
    layer = ImageFeatures(["hue_saturation"])
    pixels = np.array([[[[255, 0, 0], [0, 255, 0], [128, 128, 128], [255, 255, 255]]]], np.float32)
    out = np.asarray(layer(pixels))[0, 0]
    np.testing.assert_allclose(out[0], [1.0, 0.0], atol=1e-5)                     # red: hue 0, S 1
    np.testing.assert_allclose(out[1], [np.cos(2 * np.pi / 3), np.sin(2 * np.pi / 3)], atol=1e-5)
    np.testing.assert_allclose(out[2], [0.0, 0.0], atol=1e-5)                     # grey: no saturation
    np.testing.assert_allclose(out[3], [0.0, 0.0], atol=1e-5)
    rgb = np.asarray(ImageFeatures(["rgb"])(pixels))[0, 0]
    np.testing.assert_allclose(rgb[0], [1.0, 0.0, 0.0], atol=1e-6)


# ----------------------------------------------------------------------------- safe loading
def test_lambda_layer_is_refused(tmp_path: Path) -> None:
    image = keras.Input((8, 8, 3), name="image")
    out = keras.layers.Lambda(lambda t: t * 2.0, name="double")(image)
    model = keras.Model(image, out)
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(UsslError, match="Lambda") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_load_model_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsslError, match="does not exist"):
        load_model(tmp_path / "missing.keras")
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(UsslError) as info:
        load_model(garbage)
    assert str(garbage) in str(info.value)


# ----------------------------------------------------------------------------- CLI
def test_models_json_lists_both_presets(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    assert all({"name", "preset", "params"} <= set(row) for row in rows)
    assert {(r["name"], r["preset"]) for r in rows} == {(a, p) for a in ARCHITECTURES
                                                        for p in ("paper", "compact")}
    for row in rows:
        assert isinstance(row["params"], int) and row["params"] > 0
        if row["preset"] == "compact":
            assert row["params"] < 3_000_000
        elif row["name"] in PAPER_PARAMS:
            assert abs(row["params"] - PAPER_PARAMS[row["name"]]) <= 0.15 * PAPER_PARAMS[row["name"]]
        assert row["input_size"] == SIZES[row["preset"]][row["name"]][0]


def test_fused_batch_normalization_matches_keras_and_round_trips(tmp_path: Path) -> None:
    import tensorflow as tf

    from ussl_core.models.layers import FusedBatchNormalization

    x = np.random.default_rng(0).normal(2, 3, (8, 12, 12, 6)).astype(np.float32)
    fused, plain = FusedBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    fused.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(fused.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        inputs = tf.constant(x)
        tape.watch(inputs)
        ours, theirs = fused(inputs, training=True), plain(inputs, training=True)
        loss_ours, loss_theirs = tf.reduce_sum(ours ** 2 * x), tf.reduce_sum(theirs ** 2 * x)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    np.testing.assert_allclose(tape.gradient(loss_ours, inputs), tape.gradient(loss_theirs, inputs),
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, atol=1e-5)
    # The moving variance is the fused kernel's unbiased one: n / (n - 1) of Keras' own.
    n = 8 * 12 * 12
    np.testing.assert_allclose(fused.moving_variance - 0.9, (plain.moving_variance - 0.9) * n / (n - 1),
                               rtol=1e-3)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), rtol=1e-3, atol=1e-3)
    model = keras.Sequential([keras.Input((12, 12, 6)), fused])
    save_model_atomic(model, tmp_path / "bn.keras")
    loaded = load_model(tmp_path / "bn.keras")
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)

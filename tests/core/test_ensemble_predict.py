"""Multi-Net, cosine targets, MultiSelect-Net, and the Segmenter on small saved models."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ussl_core.ensemble import COMMON_SIZE, cosine_similarity, multi_net, multiselect, resize_mask
from ussl_core.errors import UsslError
from ussl_core.media import resize_rgb

from tests.tiny_models import STUDENT_CONSTANT, save_model_with_card, save_tiny_models



# ----------------------------------------------------------------------------- pure ensembles
def test_multi_net_is_the_exact_product() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.uniform(0, 1, (5, 7)).astype(np.float32) for _ in range(3)]
    out = multi_net(masks)
    assert out.dtype == np.float32 and out.shape == (5, 7)
    np.testing.assert_array_equal(out, masks[0] * masks[1] * masks[2])
    np.testing.assert_array_equal(multi_net([masks[0]]), masks[0])
    # Values outside [0, 1] (linear student outputs) are clipped before the product.
    np.testing.assert_array_equal(multi_net([np.array([-0.5, 0.5, 2.0]), np.array([0.5, 0.5, 0.5])]),
                                  np.array([0.0, 0.25, 0.5], np.float32))
    with pytest.raises(ValueError):
        multi_net([])


def test_cosine_similarity_values() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0, 1.0], [0.0, 0.0]])
    assert cosine_similarity(a, b) == 0.0
    assert cosine_similarity(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cosine_similarity(a, 3 * a) == pytest.approx(1.0, abs=1e-12)
    assert cosine_similarity(a, np.zeros_like(a)) == 0.0
    assert cosine_similarity(np.zeros_like(a), np.zeros_like(a)) == 0.0
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(2 ** -0.5)
    assert cosine_similarity(np.array([1.0, 2.0, 2.0]), np.array([2.0, 1.0, 2.0])) == pytest.approx(8 / 9)


def test_multiselect_picks_the_highest_score() -> None:
    masks = {"a": np.zeros(3), "b": np.ones(3), "c": np.full(3, 0.5)}
    name, mask = multiselect(masks, {"a": 0.2, "b": 0.9, "c": 0.5})
    assert name == "b" and mask is masks["b"]
    assert multiselect(masks, {"a": 0.95, "b": 0.9, "c": 0.5})[0] == "a"


def test_resize_mask_sizes() -> None:
    mask = np.random.default_rng(1).uniform(0, 1, (10, 20)).astype(np.float32)
    assert resize_mask(mask, (40, 30)).shape == (30, 40)
    assert resize_mask(mask, 16).shape == (16, 16)
    assert np.array_equal(resize_mask(mask, (20, 10)), mask)   # already at that size


# ----------------------------------------------------------------------------- saved models
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return save_tiny_models(tmp_path_factory.mktemp("ensemble") / "models")


@pytest.fixture(scope="module")
def segmenter(models):
    from ussl_core.predict import Segmenter

    return Segmenter([models["unet"], models["lowres"]], models["evalseg"])


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8),
            rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)]


def test_student_masks_match_the_models(segmenter, models) -> None:
    from ussl_core.models.io import load_model

    pictures = images()
    masks = segmenter.student_masks(pictures)
    assert len(masks) == 2
    unet = load_model(models["unet"])
    for picture, per_student in zip(pictures, masks):
        assert set(per_student) == {"g1_basic_unet_tiny", "g1_lowres_tiny"}
        for mask in per_student.values():
            assert mask.shape == (COMMON_SIZE[1], COMMON_SIZE[0]) and mask.dtype == np.float32
            assert 0.0 <= mask.min() and mask.max() <= 1.0
        np.testing.assert_allclose(per_student["g1_lowres_tiny"], STUDENT_CONSTANT, atol=1e-6)
        direct = np.asarray(unet(resize_rgb(picture, (32, 32))[None].astype(np.float32), training=False))
        expected = resize_mask(np.clip(direct[0, ..., 0], 0, 1), COMMON_SIZE)
        np.testing.assert_allclose(per_student["g1_basic_unet_tiny"], expected, atol=1e-5)
    # The random BasicU-Net is not constant: the masks really come from the model.
    assert masks[0]["g1_basic_unet_tiny"].std() > 0


def test_flip_average_is_the_mean_of_the_image_and_its_mirror(models) -> None:
    from ussl_core.predict import Segmenter

    plain = Segmenter([models["unet"]])
    flipped = Segmenter([models["unet"]], flip_average=True)
    picture = images()[0]
    name = "g1_basic_unet_tiny"
    mirror = np.ascontiguousarray(picture[:, ::-1])
    own, of_mirror = (plain.student_masks([p])[0][name] for p in (picture, mirror))
    np.testing.assert_allclose(flipped.student_masks([picture])[0][name],
                               0.5 * (own + of_mirror[:, ::-1]), atol=1e-5)
    assert not np.allclose(own, of_mirror[:, ::-1], atol=1e-3)   # the mirror does change it


def test_segment_multi_named_and_multiselect(segmenter) -> None:
    pictures = images()
    student = segmenter.student_masks(pictures)
    multi = segmenter.segment(pictures, "multi")
    for picture, result, masks in zip(pictures, multi, student):
        assert result.mask.shape == picture.shape[:2] and result.method == "multi"
        expected = resize_mask(masks["g1_basic_unet_tiny"] * np.float32(STUDENT_CONSTANT),
                               (picture.shape[1], picture.shape[0]))
        np.testing.assert_allclose(result.mask, expected, atol=1e-5)

    for key in ("lowres", "g1_lowres_tiny"):   # by architecture or by model name
        for picture, result in zip(pictures, segmenter.segment(pictures, key)):
            assert result.mask.shape == picture.shape[:2]
            np.testing.assert_allclose(result.mask, STUDENT_CONSTANT, atol=1e-5)
    by_arch = segmenter.segment(pictures[:1], "basic_unet")[0]
    np.testing.assert_allclose(by_arch.mask, resize_mask(student[0]["g1_basic_unet_tiny"], (80, 48)),
                               atol=1e-5)

    for picture, result, masks in zip(pictures, segmenter.segment(pictures, "multiselect"), student):
        assert result.mask.shape == picture.shape[:2]
        expected_scores = {n: 1 / (1 + np.exp(-(10 * resize_mask(m, 32).mean() - 5)))
                           for n, m in masks.items()}
        assert result.evalseg_scores == pytest.approx(expected_scores, abs=1e-4)
        best = max(expected_scores, key=expected_scores.get)
        assert result.chosen == best
        assert abs(expected_scores["g1_basic_unet_tiny"] - expected_scores["g1_lowres_tiny"]) > 1e-3
        np.testing.assert_allclose(result.mask, resize_mask(masks[best], (picture.shape[1], picture.shape[0])),
                                   atol=1e-5)


def test_unknown_student_and_missing_evalseg(segmenter, models) -> None:
    from ussl_core.predict import Segmenter

    with pytest.raises(UsslError, match="no student 'dense_unet'") as info:
        segmenter.segment(images()[:1], "dense_unet")
    assert "g1_lowres_tiny" in str(info.value)
    without = Segmenter([models["unet"], models["lowres"]])
    with pytest.raises(UsslError, match="EvalSeg-Net"):
        without.segment(images()[:1], "multiselect")
    with pytest.raises(UsslError, match="no student models"):
        Segmenter([])


def test_single_image_path_any_size_without_retracing(segmenter) -> None:
    rng = np.random.default_rng(9)
    segmenter.segment([rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)], "multiselect")  # warm
    traced = [m._call.experimental_get_tracing_count() for m in [*segmenter.students, segmenter.evalseg]]
    for h, w in [(33, 33), (120, 200), (71, 45), (300, 300)]:
        picture = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for method in ("multi", "multiselect", "lowres"):
            (result,) = segmenter.segment([picture], method)
            assert result.mask.shape == (h, w)
            assert np.isfinite(result.mask).all()
    # One image at a time reaches the compiled call with one shape whatever the image size:
    # no new tracing (which would cost far more than the call itself).
    assert [m._call.experimental_get_tracing_count()
            for m in [*segmenter.students, segmenter.evalseg]] == traced


def test_from_project_loads_the_latest_generation_only(models, tmp_path: Path) -> None:
    import keras

    from ussl_core.predict import Segmenter

    folder = tmp_path / "models"
    folder.mkdir()
    for path in models.values():
        shutil.copy(path, folder / path.name)
        shutil.copy(path.with_suffix(".json"), folder / path.with_suffix(".json").name)
    # An interrupted training run leaves its checkpoint and state beside the finished models;
    # a checkpoint is not a finished student.
    shutil.copy(models["unet"], folder / "g1_dense_unet_compact.ckpt.keras")
    (folder / "g1_dense_unet_compact.ckpt.json").write_text(json.dumps({"epoch": 1, "history": []}))
    loaded = Segmenter.from_project(tmp_path)
    assert sorted(s.name for s in loaded.students) == ["g1_basic_unet_tiny", "g1_lowres_tiny"]
    assert loaded.evalseg is not None and loaded.evalseg.name == "g1_evalseg_tiny"

    # A later generation replaces the earlier one.
    inp = keras.Input((32, 32, 3), name="image")
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, name="mask")(inp))
    save_model_with_card(model, folder, "g2_tiny", "fconv", generation=2)
    latest = Segmenter.from_project(tmp_path)
    assert [s.name for s in latest.students] == ["g2_tiny"] and latest.evalseg is None
    assert sorted(s.name for s in Segmenter.from_project(tmp_path, generation=1).students) == \
        ["g1_basic_unet_tiny", "g1_lowres_tiny"]
    with pytest.raises(UsslError, match="no trained models"):
        Segmenter.from_project(tmp_path / "empty")

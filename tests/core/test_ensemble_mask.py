"""ensemble_mask: the soft mask of Multi-Net, MultiSelect-Net or one student from every
student's mask (pure NumPy; Segmenter.segment and the Predict panel share it)."""

import numpy as np
import pytest

from ussl_core.ensemble import ensemble_mask
from ussl_core.errors import UsslError


def test_each_method_from_the_students_masks() -> None:
    rng = np.random.default_rng(0)
    masks = {"a": rng.uniform(0, 1, (4, 6)).astype(np.float32),
             "b": rng.uniform(0, 1, (4, 6)).astype(np.float32)}
    scores = {"a": 0.3, "b": 0.8}
    multi, chosen = ensemble_mask(masks, scores, "multi")
    np.testing.assert_array_equal(multi, masks["a"] * masks["b"])
    assert chosen is None
    picked, chosen = ensemble_mask(masks, scores, "multiselect")
    assert chosen == "b" and picked is masks["b"]
    assert ensemble_mask(masks, {"a": 0.9, "b": 0.8}, "multiselect")[1] == "a"
    single, chosen = ensemble_mask(masks, {}, "a")
    assert single is masks["a"] and chosen is None
    mean, chosen = ensemble_mask(masks, {}, "mean")
    np.testing.assert_allclose(mean, (masks["a"] + masks["b"]) / 2, rtol=1e-6)
    assert chosen is None and mean.dtype == np.float32


def test_clear_errors() -> None:
    masks = {"a": np.zeros((2, 2), np.float32)}
    with pytest.raises(UsslError, match="needs an EvalSeg-Net"):
        ensemble_mask(masks, {}, "multiselect")
    with pytest.raises(UsslError, match="no student 'c'"):
        ensemble_mask(masks, {}, "c")

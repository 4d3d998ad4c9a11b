"""Keras models of the method: the five students and EvalSeg-Net (imports TensorFlow)."""

from ussl_core.models.builders import (ARCHITECTURES, EVALSEG, PAPER_PARAMS, PRESETS, STUDENTS,
                                       build_model, model_info)
from ussl_core.models.layers import ImageFeatures

__all__ = ["ARCHITECTURES", "EVALSEG", "ImageFeatures", "PAPER_PARAMS", "PRESETS", "STUDENTS",
           "build_model", "model_info"]

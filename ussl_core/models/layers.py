"""Custom layers of the ussl models, registered so `.keras` files load with safe_mode=True."""

from __future__ import annotations

import keras
from keras import ops

FEATURES = ("rgb", "hsv", "hue_saturation", "derivatives", "position")


@keras.saving.register_keras_serializable(package="ussl")
class ImageFeatures(keras.layers.Layer):
    """The input features of the paper, computed inside the model from a plain RGB image.

    Input: RGB in [0, 255] (any float dtype). Output: the chosen features concatenated on the
    channel axis: "rgb" (scaled to [0, 1]), "hsv" (3), "hue_saturation" (cos H * S, sin H * S,
    so that hue is continuous), "derivatives" (x and y central differences of the intensity),
    "position" (x and y from -1 to 1: where in the image a pixel is, for a learned centre prior).
    """

    def __init__(self, features: tuple[str, ...] | list[str] = ("rgb",), **kwargs) -> None:
        super().__init__(**kwargs)
        unknown = [f for f in features if f not in FEATURES]
        if unknown or not features:
            raise ValueError(f"features must be a non-empty subset of {FEATURES}, not {features}")
        self.features = tuple(features)

    def compute_output_shape(self, input_shape):
        channels = {"rgb": 3, "hsv": 3, "hue_saturation": 2, "derivatives": 2, "position": 2}
        return (*input_shape[:-1], sum(channels[f] for f in self.features))

    def call(self, images):
        rgb = ops.cast(images, self.compute_dtype) / 255.0
        parts = []
        for feature in self.features:
            if feature == "rgb":
                parts.append(rgb)
            elif feature == "hsv":
                parts.append(ops.image.rgb_to_hsv(rgb))
            elif feature == "hue_saturation":
                hsv = ops.image.rgb_to_hsv(rgb)
                angle = hsv[..., 0:1] * (2.0 * 3.141592653589793)
                parts.append(ops.concatenate([ops.cos(angle) * hsv[..., 1:2],
                                              ops.sin(angle) * hsv[..., 1:2]], axis=-1))
            elif feature == "position":
                parts.append(_position(rgb))
            else:
                parts.append(_intensity_derivatives(rgb))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "features": list(self.features)}


def _position(rgb):
    """x and y coordinates from -1 (left, top) to 1 (right, bottom), one map each per image."""
    shape = ops.shape(rgb)
    height, width = shape[1], shape[2]
    ys = ops.linspace(-1.0, 1.0, height)
    xs = ops.linspace(-1.0, 1.0, width)
    grid = ops.stack([ops.tile(xs[None, :], (height, 1)), ops.tile(ys[:, None], (1, width))], axis=-1)
    return ops.tile(ops.cast(grid, rgb.dtype)[None], (shape[0], 1, 1, 1))


def _intensity_derivatives(rgb):
    """Central differences of the mean intensity along x and y, zero-padded to the same size."""
    grey = ops.mean(rgb, axis=-1, keepdims=True)
    padded = ops.pad(grey, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="symmetric")
    dx = (padded[:, 1:-1, 2:, :] - padded[:, 1:-1, :-2, :]) * 0.5
    dy = (padded[:, 2:, 1:-1, :] - padded[:, :-2, 1:-1, :]) * 0.5
    return ops.concatenate([dx, dy], axis=-1)


@keras.saving.register_keras_serializable(package="ussl")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation over the last axis that trains through TensorFlow's fused kernel.

    Keras 3 normalises with separate moment, normalisation and update ops; on a CPU the fused
    kernel (one op forward, one backward) trains the compact students 10-18 % faster. Other
    backends, inference, masks and renormalisation take Keras' own path, with the same weights.
    """

    def call(self, inputs, training=None, mask=None):
        if (keras.backend.backend() != "tensorflow" or not (training and self.trainable)
                or mask is not None or self.renorm or self.axis not in (-1, len(inputs.shape) - 1)
                or not (self.scale and self.center)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            ops.cast(inputs, "float32"), self.gamma, self.beta, epsilon=self.epsilon,
            is_training=True)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="ussl")
class Calibration(keras.layers.Layer):
    """sigmoid(slope * x + offset): a student's raw mask mapped to the probability that the
    teacher calls a pixel foreground (fitted after training, without ground truth), so that
    the product's threshold of 0.5, its boxes and cut-outs mean the same for every student."""

    def __init__(self, slope: float = 1.0, offset: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.slope = float(slope)
        self.offset = float(offset)

    def call(self, x):
        return ops.sigmoid(ops.cast(x, self.compute_dtype) * self.slope + self.offset)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "slope": self.slope, "offset": self.offset}

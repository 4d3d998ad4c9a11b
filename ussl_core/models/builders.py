"""The five students and EvalSeg-Net as Keras functional builders, in two presets.

Every model takes a plain RGB image (H x W x 3, values 0..255) and computes its input features
inside (see layers.ImageFeatures). Students end in a linear 1-channel layer named "mask" and are
trained by L2 regression on the teacher's soft masks; predictions are clipped to [0, 1] at use
(`predict.clip_unit`). A linear output with batch normalisation is what kept sparse targets from
collapsing to zero in our measurements (DESIGN.md: a sigmoid U-Net without BN collapsed).

Presets: "paper" follows the seed paper's sizes; "compact" scales widths (and input sizes) so
every net has under 3M parameters and trains on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from ussl_core.errors import SettingsError
from ussl_core.models.layers import FusedBatchNormalization, ImageFeatures
from ussl_core.names import ARCHITECTURES, EVALSEG, STUDENTS  # noqa: F401 (re-exported)

U_NET_FEATURES = ("rgb", "hsv", "derivatives")

PRESETS: dict[str, dict[str, dict]] = {
    "paper": {
        "lowres": dict(input_size=128, output_size=32, maps=256, tail_maps=64),
        "fconv": dict(input_size=256, maps=256, tail_maps=64),
        "basic_unet": dict(input_size=256, widths=(32, 64, 128, 256, 512), centre=1024),
        "dilate_unet": dict(input_size=256, widths=(32, 64, 128, 256), centre=512),
        "dense_unet": dict(input_size=256, growth=(12, 24, 48, 64), stem=48),
        "evalseg": dict(input_size=128, maps=256, tail_maps=64, dense=512),
    },
    "compact": {
        "lowres": dict(input_size=64, output_size=16, maps=48, tail_maps=16),
        "fconv": dict(input_size=128, maps=32, tail_maps=16, pool_first=True),
        "basic_unet": dict(input_size=128, widths=(8, 16, 32, 64, 128), centre=256),
        "dilate_unet": dict(input_size=128, widths=(8, 16, 32, 64), centre=128),
        "dense_unet": dict(input_size=128, growth=(6, 12, 24, 32), stem=24, stem_stride=2),
        "evalseg": dict(input_size=64, maps=16, tail_maps=16, dense=128),
    },
}

# Parameter counts the seed paper gives, for the tests' +-15 % check.
PAPER_PARAMS = {"lowres": 78e6, "fconv": 13e6, "basic_unet": 34e6, "dilate_unet": 18e6,
                "dense_unet": 3e6}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    preset: str
    input_size: int
    output_size: int
    params: int


def conv_block(x, maps: int, kernel: int, name: str, dilation: int = 1):
    """Conv (no bias) -> batch norm -> ReLU, with the layer names name, name_bn, name_relu."""
    x = layers.Conv2D(maps, kernel, padding="same", dilation_rate=dilation, use_bias=False,
                      name=name)(x)
    # Momentum 0.9 (not 0.99): the small selections of a CPU run give few steps per epoch,
    # and the moving statistics must settle within a few epochs.
    x = FusedBatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _image_input(size: int) -> keras.KerasTensor:
    return keras.Input((size, size, 3), name="image")


def _lowres_trunk(branch_inputs: dict, maps: int, tail_maps: int, second_pool: bool, extra_tail: int = 0,
                  pool_first: bool = False):
    """The LowRes-Net body: parallel branches (conv 3x3, conv 5x5, pool), then the shared convs.

    pool_first: each branch pools before its 5x5 conv (same layers and outputs, a quarter of the
    branch's largest cost).
    """
    branches = []
    for name, tensor in branch_inputs.items():
        x = conv_block(tensor, maps, 3, f"{name}_conv3")
        if pool_first:
            x = layers.MaxPooling2D(name=f"{name}_pool")(x)
            branches.append(conv_block(x, maps, 5, f"{name}_conv5"))
            continue
        x = conv_block(x, maps, 5, f"{name}_conv5")
        branches.append(layers.MaxPooling2D(name=f"{name}_pool")(x))
    x = layers.Concatenate(name="branches")(branches) if len(branches) > 1 else branches[0]
    x = conv_block(x, maps, 3, "mid_conv3")
    x = conv_block(x, maps, 5, "mid_conv5")
    if second_pool:
        x = layers.MaxPooling2D(name="mid_pool")(x)
    x = conv_block(x, maps, 3, "top_conv3")
    x = conv_block(x, maps, 5, "top_conv5")
    for i in range(extra_tail):
        x = conv_block(x, maps, 5, f"top_conv5_{i + 2}")
    return conv_block(x, tail_maps, 5, "tail_conv5")


def lowres_net(input_size: int = 128, output_size: int = 32, maps: int = 256,
               tail_maps: int = 64) -> keras.Model:
    """LowRes-Net: three branches (image, derivatives, hue/saturation), a dense top to the mask."""
    if input_size != 4 * output_size:
        raise SettingsError("LowRes-Net's output is a quarter of its input size")
    image = _image_input(input_size)
    branch_inputs = {f: ImageFeatures([f], name=f"{f}_features")(image)
                     for f in ("rgb", "derivatives", "hue_saturation")}
    x = _lowres_trunk(branch_inputs, maps, tail_maps, second_pool=True)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(output_size * output_size, name="fc_mask")(x)
    mask = layers.Reshape((output_size, output_size, 1), name="mask")(x)
    return keras.Model(image, mask, name="lowres")


def fconv_net(input_size: int = 256, maps: int = 256, tail_maps: int = 64,
              pool_first: bool = False) -> keras.Model:
    """FConv-Net: LowRes-like and fully convolutional, output at half the input size.

    pool_first (the compact preset): the branches pool before their 5x5 convs, which halves the
    training time on a CPU with the same parameters and output size.
    """
    image = _image_input(input_size)
    branch_inputs = {f: ImageFeatures([f], name=f"{f}_features")(image)
                     for f in ("rgb", "derivatives", "hue_saturation")}
    x = _lowres_trunk(branch_inputs, maps, tail_maps, second_pool=False, extra_tail=1,
                      pool_first=pool_first)
    mask = layers.Conv2D(1, 1, name="mask")(x)
    return keras.Model(image, mask, name="fconv")


def _u_net(name: str, input_size: int, widths: tuple[int, ...], centre, up_convs: int = 3) -> keras.Model:
    image = _image_input(input_size)
    x = ImageFeatures(U_NET_FEATURES, name="features")(image)
    skips = []
    for level, maps in enumerate(widths, start=1):
        x = conv_block(x, maps, 3, f"down{level}_conv1")
        x = conv_block(x, maps, 3, f"down{level}_conv2")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"down{level}_pool")(x)
    x = centre(x)
    for level in range(len(widths), 0, -1):
        x = layers.UpSampling2D(name=f"up{level}_upsample")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level - 1]])
        for i in range(1, up_convs + 1):
            x = conv_block(x, widths[level - 1], 3, f"up{level}_conv{i}")
    mask = layers.Conv2D(1, 1, name="mask")(x)
    return keras.Model(image, mask, name=name)


def basic_u_net(input_size: int = 256, widths: tuple[int, ...] = (32, 64, 128, 256, 512),
                centre: int = 1024) -> keras.Model:
    """BasicU-Net: down modules of 2 convs, a centre of 2 convs, up modules of 3 convs."""
    def block(x):
        x = conv_block(x, centre, 3, "centre_conv1")
        return conv_block(x, centre, 3, "centre_conv2")
    return _u_net("basic_unet", input_size, tuple(widths), block)


DILATION_RATES = (1, 2, 4, 8, 4, 2)


def dilate_u_net(input_size: int = 256, widths: tuple[int, ...] = (32, 64, 128, 256),
                 centre: int = 512) -> keras.Model:
    """DilateU-Net: BasicU-Net whose deepest module and centre are 6 atrous convs.

    The dilation rates rise and fall (1, 2, 4, 8, 4, 2) so the centre sees the whole low-resolution
    map without rates larger than the map itself.
    """
    def block(x):
        for i, rate in enumerate(DILATION_RATES, start=1):
            x = conv_block(x, centre, 3, f"centre_atrous{i}", dilation=rate)
        return x
    return _u_net("dilate_unet", input_size, tuple(widths), block)


def _dense_block(x, growth: int, name: str, n_convs: int = 4):
    """Each conv sees the concatenation of the block input and all earlier outputs."""
    new = []
    for i in range(1, n_convs + 1):
        y = conv_block(x, growth, 3, f"{name}_conv{i}")
        new.append(y)
        x = layers.Concatenate(name=f"{name}_concat{i}")([x, y])
    return x, layers.Concatenate(name=f"{name}_new")(new)


def dense_u_net(input_size: int = 256, growth: tuple[int, ...] = (12, 24, 48, 64),
                stem: int = 48, stem_stride: int = 1) -> keras.Model:
    """DenseU-Net: 4 down and 4 up dense blocks of 4 convs, 1x1 transitions between them.

    stem_stride 2 (the compact preset), as DenseNet's own stem: the blocks start at half the
    input resolution, and the mask comes back to full size through an upsampling and one conv
    that also sees a full-resolution conv of the input. Dense blocks at full resolution are
    memory-bound on a CPU: this trains about three times faster.
    """
    image = _image_input(input_size)
    features = ImageFeatures(U_NET_FEATURES, name="features")(image)
    x = conv_block(features, stem, 3, "stem")
    if stem_stride > 1:
        full_resolution = x
        x = layers.MaxPooling2D(stem_stride, name="stem_pool")(x)
    skips = []
    for level, g in enumerate(growth, start=1):
        x, _ = _dense_block(x, g, f"down{level}")
        skips.append(x)
        x = conv_block(x, int(x.shape[-1]) // 2, 1, f"down{level}_transition")
        x = layers.MaxPooling2D(name=f"down{level}_pool")(x)
    for level in range(len(growth), 0, -1):
        x = layers.UpSampling2D(name=f"up{level}_upsample")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level - 1]])
        x = conv_block(x, 4 * growth[level - 1], 1, f"up{level}_transition")
        _, x = _dense_block(x, growth[level - 1], f"up{level}")
    if stem_stride > 1:
        x = layers.UpSampling2D(stem_stride, interpolation="bilinear", name="out_upsample")(x)
        x = layers.Concatenate(name="out_concat")([x, full_resolution])
        x = conv_block(x, 2 * growth[0], 3, "out_conv")
    mask = layers.Conv2D(1, 1, name="mask")(x)
    return keras.Model(image, mask, name="dense_unet")


def evalseg_net(input_size: int = 128, maps: int = 256, tail_maps: int = 64,
                dense: int = 512) -> keras.Model:
    """EvalSeg-Net: image + candidate soft mask in, predicted mask quality in [0, 1] out."""
    image = _image_input(input_size)
    candidate = keras.Input((input_size, input_size, 1), name="candidate")
    branch_inputs = {"rgb": ImageFeatures(["rgb"], name="rgb_features")(image),
                     "hue_saturation": ImageFeatures(["hue_saturation"], name="hue_saturation_features")(image),
                     "candidate": candidate}
    x = _lowres_trunk(branch_inputs, maps, tail_maps, second_pool=True)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, activation="relu", name="fc")(x)
    quality = layers.Dense(1, activation="sigmoid", name="quality")(x)
    return keras.Model([image, candidate], quality, name="evalseg")


BUILDERS = {"lowres": lowres_net, "fconv": fconv_net, "basic_unet": basic_u_net,
            "dilate_unet": dilate_u_net, "dense_unet": dense_u_net, "evalseg": evalseg_net}


def build_model(arch: str, preset: str = "compact", **overrides) -> keras.Model:
    """Build an architecture in a preset; keyword overrides change single sizes."""
    if preset not in PRESETS:
        raise SettingsError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if arch not in BUILDERS:
        raise SettingsError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return BUILDERS[arch](**{**PRESETS[preset][arch], **overrides})


def model_info(arch: str, preset: str) -> ModelInfo:
    model = build_model(arch, preset)
    size = PRESETS[preset][arch]["input_size"]
    output = model.output_shape[1] if arch != EVALSEG else 1
    return ModelInfo(arch, preset, size, output, int(model.count_params()))

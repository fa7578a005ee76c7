"""InsightFace's MobileFaceNet (``w600k_mbf``: ArcFace loss, WebFace600K) as a Keras 3 model.

Rebuilt layer by layer from the published weights, as dlib's ResNet is in
:mod:`celebmodel.faces.network`. The weights ship in the package
(``weights/mobilefacenet_w600k.npz``, float16, BatchNorm folded into the convolutions;
``weights/PROVENANCE.json`` says where they come from, their sha256 and licence). Input: RGB
0..255 face chips aligned to ArcFace's 112×112 template (:mod:`celebmodel.faces.alignment`);
the model normalises them itself. Output: a 512-d embedding, compared by cosine similarity.

Layout, from the exported graph: a 3×3 stride-2 stem convolution and a 3×3 grouped one
(64 groups), then InsightFace's "DepthWise" blocks (1×1 expand, 3×3 depthwise, 1×1 linear
projection; residual inside a stage): one down-sampling block and 4 residual blocks at 128
channels, one and 6 at 256, one and 2 at 256; then 1×1 convolutions to 512 and to 64 channels
and a dense layer from the flattened 7×7×64 map to the embedding. PReLU after every layer but
the projections and the embedding.

Two details decide parity with the source: its 3×3 convolutions pad one pixel on every side
(Keras ``"same"`` pads only bottom and right at stride 2, which shifts the grid), so padding
is explicit; and the grouped convolution is computed as a depthwise convolution with two
outputs per channel whose pairs are summed, which gives the same numbers as ``Conv2D(groups)``
six times faster on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaceError
from ..storage import file_sha256

WEIGHTS_FILE = Path(__file__).parent / "weights" / "mobilefacenet_w600k.npz"
INPUT_SIZE = 112
EMBEDDING_SIZE = 512
STAGES = (  # (name, channels expanded, out, residual blocks after the down-sampling one)
    ("1", 128, 128, 4),
    ("2", 256, 256, 6),
    ("3", 512, 256, 2),
)


@dataclass(frozen=True)
class Spec:
    """One layer with weights: a convolution (``conv``, grouped ``gconv``, depthwise ``dw``)
    or the final dense layer (``fc``), with a PReLU after it unless ``prelu`` is off."""

    name: str
    kind: str
    filters: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    prelu: bool = True


def _block(name: str, expanded: int, out: int, stride: int) -> list[Spec]:
    return [
        Spec(f"{name}_expand", "conv", expanded),
        Spec(f"{name}_dw", "dw", expanded, kernel=3, stride=stride),
        Spec(f"{name}_project", "conv", out, prelu=False),
    ]


def layer_specs() -> list[Spec]:
    """Every layer with weights, in the order the network runs them."""
    specs = [
        Spec("stem_conv", "conv", 128, kernel=3, stride=2),
        Spec("stem_gconv", "gconv", 128, kernel=3, groups=64),
    ]
    for stage, expanded, out, repeats in STAGES:
        specs += _block(f"down{stage}", expanded, out, 2)
        for i in range(repeats):
            specs += _block(f"stage{stage}_b{i}", out, out, 1)
    return specs + [
        Spec("sep_conv", "conv", 512),
        Spec("reduce_conv", "conv", 64),
        Spec("embedding", "fc", EMBEDDING_SIZE, prelu=False),
    ]


def _apply(x: Any, spec: Spec) -> Any:
    from keras import layers, ops

    if spec.kernel > 1:
        x = layers.ZeroPadding2D(1, name=f"{spec.name}_pad")(x)
    if spec.kind == "gconv":
        per_group = spec.filters // spec.groups
        y = layers.DepthwiseConv2D(
            spec.kernel, strides=spec.stride, depth_multiplier=per_group, name=spec.name
        )(x)
        height, width, channels = y.shape[1], y.shape[2], x.shape[-1]
        y = layers.Reshape(
            (height, width, spec.groups, channels // spec.groups, per_group),
            name=f"{spec.name}_split",
        )(y)
        x = layers.Reshape((height, width, spec.filters), name=f"{spec.name}_merge")(
            ops.sum(y, axis=-2)
        )
    elif spec.kind == "conv":
        x = layers.Conv2D(spec.filters, spec.kernel, strides=spec.stride, name=spec.name)(x)
    elif spec.kind == "dw":
        x = layers.DepthwiseConv2D(spec.kernel, strides=spec.stride, name=spec.name)(x)
    else:
        x = layers.Dense(spec.filters, name=spec.name)(layers.Flatten(name="flatten")(x))
    if spec.prelu:
        x = layers.PReLU(shared_axes=[1, 2], name=f"{spec.name}_prelu")(x)
    return x


def build() -> Any:
    """The network, weights not loaded: RGB 0..255 112×112 chips in, 512-d embeddings out."""
    import keras
    from keras import layers

    chips = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="rgb_0_255")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(chips)
    specs = layer_specs()
    i = 0
    while i < len(specs):
        if specs[i].name.endswith("_expand"):  # a block: residual inside a stage
            y = x
            for spec in specs[i : i + 3]:
                y = _apply(y, spec)
            residual = specs[i].name.startswith("stage")
            x = layers.Add(name=specs[i].name.replace("_expand", "_add"))([x, y]) if residual else y
            i += 3
        else:
            x = _apply(x, specs[i])
            i += 1
    return keras.Model(chips, x, name="mobilefacenet_w600k")


_KEYS = {
    "Conv2D": ("kernel", "bias"),
    "DepthwiseConv2D": ("kernel", "bias"),
    "Dense": ("kernel", "bias"),
    "PReLU": ("alpha",),
}


def set_weights(model: Any, weights: dict[str, np.ndarray]) -> None:
    """Load ``<layer>.kernel``, ``<layer>.bias`` and ``<layer>_prelu.alpha`` arrays (float16 on
    disk, float32 in the model); every layer must find its arrays and every array its layer."""
    used: set[str] = set()
    for layer in model.layers:
        keys = _KEYS.get(type(layer).__name__)
        if keys is None:
            continue
        names = [f"{layer.name}.{key}" for key in keys]
        missing = [name for name in names if name not in weights]
        if missing:
            raise FaceError(f"{WEIGHTS_FILE.name}: no {', '.join(missing)}")
        values = [np.asarray(weights[name], np.float32) for name in names]
        if type(layer).__name__ == "DepthwiseConv2D" and layer.depth_multiplier > 1:
            values = _grouped_as_depthwise(*values, layer.depth_multiplier)
        try:
            layer.set_weights(values)
        except ValueError as exc:
            raise FaceError(f"{WEIGHTS_FILE.name}: {layer.name} does not fit ({exc})") from exc
        used.update(names)
    unused = sorted(set(weights) - used)
    if unused:
        raise FaceError(f"{WEIGHTS_FILE.name}: arrays no layer takes: {', '.join(unused[:5])}")


def _grouped_as_depthwise(
    kernel: np.ndarray, bias: np.ndarray, per_group: int
) -> list[np.ndarray]:
    """A grouped convolution's kernel (kh, kw, in per group, groups × per_group) as the
    depthwise kernel that computes the same sums: (kh, kw, groups × in per group, per_group),
    its bias on the first input of each group so that the group's sum adds it once."""
    kh, kw, inputs, outputs = kernel.shape
    groups = outputs // per_group
    depthwise = kernel.reshape(kh, kw, inputs, groups, per_group).transpose(0, 1, 3, 2, 4)
    shared = np.zeros((groups, inputs, per_group), np.float32)
    shared[:, 0, :] = bias.reshape(groups, per_group)
    return [depthwise.reshape(kh, kw, groups * inputs, per_group), shared.reshape(-1)]


@cache
def _weights() -> dict[str, np.ndarray]:
    try:
        with np.load(WEIGHTS_FILE, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise FaceError(
            f"{WEIGHTS_FILE}: cannot read MobileFaceNet's weights ({exc}); reinstall celebmodel"
        ) from exc


def load_network() -> Any:
    """A new copy of the pretrained network (fine-tuning one never changes another)."""
    model = build()
    set_weights(model, _weights())
    return model


@cache
def source_sha256() -> str:
    """The shipped weights' digest, as ``weights/PROVENANCE.json`` records it (read once: it
    is part of every embedding's cache key)."""
    return file_sha256(WEIGHTS_FILE)

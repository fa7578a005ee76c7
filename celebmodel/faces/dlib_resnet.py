"""dlib's face ResNet as a Keras 3 model: same descriptors, compiled graphs, fine-tunable.

The network is rebuilt from the layer list :mod:`celebmodel.faces.dlib_format` reads out of
``dlib_face_recognition_resnet_model_v1.dat`` (installed by ``face-recognition-models``; public
domain). The built weights are kept in the app's data cache under the source file's sha256, so
the file is parsed once per machine. Details that decide parity with dlib: inputs scaled as
``(pixel - mean) / 256`` with the file's per-channel means (RGB); convolutions and pooling pad 0
when the stride is not 1, ``k // 2`` otherwise; ``add_prev`` zero-pads the smaller input at the
bottom/right and in channels; ``affine`` layers are a fixed scale and shift, never trained and
never batch statistics.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from ..errors import FaceError
from ..storage import atomic_file, file_sha256
from .detection import models_dir
from .dlib_format import FACE_RESNET, DlibNetwork, Spec, read_network
from .graph import networks_cache

SOURCE_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
EMBEDDING_SIZE = 128
NETWORK_NAME = "dlib_face_resnet"


@keras.saving.register_keras_serializable(package="celebmodel")
class Affine(keras.layers.Layer):
    """dlib's ``affine_``: a per-channel scale and shift folded from batch norm. Never trained."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = (input_shape[-1],)
        self.gamma = self.add_weight(
            shape=channels, initializer="ones", trainable=False, name="gamma"
        )
        self.beta = self.add_weight(
            shape=channels, initializer="zeros", trainable=False, name="beta"
        )

    def call(self, inputs: Any) -> Any:
        return inputs * self.gamma + self.beta


@keras.saving.register_keras_serializable(package="celebmodel")
class PadAdd(keras.layers.Layer):
    """dlib's ``add_prev``: the sum of two maps, the smaller zero-padded at the bottom/right and
    in channels (dlib's last stage adds a 1x1 map to a 2x2 one)."""

    def compute_output_shape(self, input_shape: Sequence[tuple[int | None, ...]]) -> tuple:
        first, second = input_shape
        return (first[0], *(max(a, b) for a, b in zip(first[1:], second[1:], strict=True)))

    def call(self, inputs: Sequence[Any]) -> Any:
        first, second = inputs
        target = [max(a, b) for a, b in zip(first.shape[1:], second.shape[1:], strict=True)]

        def padded(tensor: Any) -> Any:
            widths = [(0, want - have) for want, have in zip(target, tensor.shape[1:], strict=True)]
            return ops.pad(tensor, [(0, 0), *widths]) if any(w for _, w in widths) else tensor

        return padded(first) + padded(second)


def source_path() -> Path:
    """The installed dlib face network file (``face-recognition-models``)."""
    return models_dir() / SOURCE_FILE


PART_NAMES = {"con": "conv", "add_prev": "add", "max_pool": "maxpool", "avg_pool": "avgpool"}


def _layer_names(specs: Sequence[Spec]) -> list[str]:
    """Readable names: ``stem_*``, then ``s<stage>u<unit>_<part>``, ``pool`` and ``projection``.

    A unit starts at each ``tag1``; a stage starts with a unit whose first convolution has
    stride 2 (and with the first unit after the stem).
    """
    names: list[str] = []
    stage, unit, parts = 0, 0, {}
    for index, spec in enumerate(specs):
        if spec.kind == "tag" and spec.tag == 1:
            if stage == 0 or specs[index + 1].stride == 2:
                stage, unit = stage + 1, 0
            unit, parts = unit + 1, {}
        part = PART_NAMES.get(spec.kind, spec.kind)
        parts[part] = parts.get(part, 0) + 1
        if spec.kind == "fc":
            names.append("projection")
        elif spec.kind == "avg_pool" and spec.size == 0:
            names.append("pool")
        else:
            prefix = f"s{stage}u{unit}" if stage else "stem"
            names.append(f"{prefix}_{part}{parts[part]}")
    return names


def _keras_layer(spec: Spec, name: str) -> keras.layers.Layer:
    if spec.kind == "con":
        padding = "same" if spec.stride == 1 else "valid"
        return keras.layers.Conv2D(spec.filters, spec.size, spec.stride, padding=padding, name=name)
    if spec.kind == "affine":
        return Affine(name=name)
    if spec.kind == "relu":
        return keras.layers.ReLU(name=name)
    if spec.kind == "max_pool":
        return keras.layers.MaxPooling2D(spec.size, spec.stride, name=name)
    if spec.kind == "avg_pool" and spec.size == 0:
        return keras.layers.GlobalAveragePooling2D(name=name)
    if spec.kind == "avg_pool":
        return keras.layers.AveragePooling2D(spec.size, spec.stride, name=name)
    if spec.kind == "fc":
        return keras.layers.Dense(spec.filters, use_bias=False, name=name)
    raise AssertionError(spec.kind)


def build_network(specs: Sequence[Spec] = FACE_RESNET) -> keras.Model:
    """The architecture of dlib's network as a Keras model (chip in, 128-d out), untrained.

    The input scaling ``(pixel - mean) / 256`` is the first layer (``scale``), an
    :class:`Affine` whose weights come with the others, so the cached weights hold everything.
    """
    chip = keras.Input((CHIP_SIZE, CHIP_SIZE, 3), name="chip")
    x = Affine(name="scale")(chip)
    tags: dict[int, Any] = {}
    for spec, name in zip(specs, _layer_names(specs), strict=True):
        if spec.kind == "tag":
            tags[spec.tag] = x
        elif spec.kind == "skip":
            x = tags[spec.tag]
        elif spec.kind == "add_prev":
            x = PadAdd(name=name)([x, tags[spec.tag]])
        else:
            x = _keras_layer(spec, name)(x)
    return keras.Model(chip, x, name=NETWORK_NAME)


def set_dlib_weights(model: keras.Model, network: DlibNetwork) -> None:
    """Copy the parameters read from dlib's file into a model from :func:`build_network`."""
    means = np.asarray(network.means, dtype=np.float32)
    model.get_layer("scale").set_weights([np.full(3, 1 / 256, np.float32), -means / 256])
    names = _layer_names([layer.spec for layer in network.layers])
    for layer, name in zip(network.layers, names, strict=True):
        arrays = layer.arrays
        if layer.spec.kind == "con":
            weights = [arrays["kernel"].transpose(2, 3, 1, 0), arrays["bias"]]
        elif layer.spec.kind == "affine":
            weights = [arrays["gamma"], arrays["beta"]]
        elif layer.spec.kind == "fc":
            weights = [arrays["kernel"]]
        else:
            continue
        model.get_layer(name).set_weights(weights)


@cache
def source_sha256() -> str:
    path = source_path()
    try:
        return file_sha256(path)
    except OSError as exc:
        raise FaceError(
            f"{path}: cannot read dlib's face network ({exc.strerror or exc}); reinstall it "
            "with pip install --force-reinstall face-recognition-models"
        ) from exc


def weights_path() -> Path:
    """Where the built weights are kept: the data cache, named after the source's sha256."""
    return networks_cache() / f"dlib128-{source_sha256()}.weights.h5"


_BUILD_LOCK = threading.Lock()


def load_network() -> keras.Model:
    """A new Keras copy of dlib's face network with its pretrained weights.

    The first call on a machine reads dlib's file and caches the converted weights; later
    calls build the architecture and load them. Each call returns an independent model, so
    fine-tuning one never changes another.
    """
    model = build_network()
    with _BUILD_LOCK:
        target = weights_path()
        if target.is_file():
            try:
                model.load_weights(target)
                return model
            except (OSError, ValueError):
                target.unlink(missing_ok=True)  # a damaged cache entry is rebuilt
        set_dlib_weights(model, read_network(source_path()))
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as temp:
            model.save_weights(temp)
    return model

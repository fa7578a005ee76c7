"""The networks a celebrity classifier can stand on, as one table.

A backbone is a row of :data:`BACKBONES`: how to build it, its input size, its preprocessing,
where phase 2 of the improved recipe starts unfreezing, and the weights file Keras caches. Adding
a backbone means adding a row. ``kind="embedding"`` rows (``dlib128``) are face networks whose
output is a face descriptor (the networks of :mod:`celebmodel.faces.network`): phase 1 trains the
head on their cached embeddings, phase 2 (when on) fine-tunes their last stage on face chips.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import WeightsError


@dataclass(frozen=True)
class Backbone:
    name: str
    title: str
    kind: str  # "cnn" (Keras application) or "embedding" (a face network giving descriptors)
    input_size: int
    application: str | None = None  # keras.applications attribute, e.g. "VGG16"
    module: str | None = None  # keras.applications sub-module holding preprocess_input
    fine_tune_from: str | None = None  # first layer unfrozen in phase 2
    weights_file: str | None = None  # file name Keras caches under ~/.keras/models
    alignment: str = "eyes"  # "eyes" (level eyes, margin), "chip" (dlib's), "arcface" (ArcFace's)
    detector: str = "hog"  # the face detector its runs use unless told otherwise
    embedding_size: int | None = None
    head_learning_rate: float | None = None  # overrides the recipe's: unit-length inputs need more
    fine_tune_learning_rate: float | None = None  # overrides the improved recipe's phase 2 rate
    fine_tune: bool = True  # run phase 2 of the improved recipe by default

    def preprocess(self, images: Any) -> Any:
        """Pixels 0..255 RGB -> what the network was trained on (runs outside the saved model)."""
        if self.kind == "embedding":
            return images
        import keras

        return getattr(keras.applications, self.module).preprocess_input(images)

    def build(self, weights: str, image_size: int) -> Any:
        """The Keras base without its top; ``weights`` is ``imagenet``, ``none`` or a file path."""
        import keras

        constructor: Callable[..., Any] = getattr(keras.applications, self.application)
        source = None if weights == "none" else weights
        if weights not in ("imagenet", "none") and not Path(weights).is_file():
            raise WeightsError(f"--weights {weights}: no such file")
        try:
            return constructor(
                include_top=False, weights=source, input_shape=(image_size, image_size, 3)
            )
        except Exception as exc:  # Keras raises plain Exception on a failed download
            if weights == "imagenet":
                raise WeightsError(self.offline_message(exc)) from exc
            raise WeightsError(
                f"--weights {weights}: cannot load into {self.name} ({exc})"
            ) from exc

    def imagenet_cached(self) -> bool:
        """True when Keras can build this backbone with ImageNet weights without a download."""
        return self.weights_file is not None and (keras_cache() / self.weights_file).is_file()

    def offline_message(self, exc: BaseException | None = None) -> str:
        reason = f" ({type(exc).__name__}: {exc})" if exc else ""
        return (
            f"ImageNet weights for {self.name} could not be downloaded{reason}. "
            f"Without internet, copy {self.weights_file} into {keras_cache()} "
            f"(Keras's cache, where it looks first), or pass --weights PATH to that file, "
            f"or --weights none to train from random initialisation, "
            f"or use the offline face backbone --backbone dlib128."
        )


def keras_cache() -> Path:
    """Where Keras caches weights: ``$KERAS_HOME/models``, default ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME", str(Path.home() / ".keras"))
    return Path(home) / "models"


BACKBONES: dict[str, Backbone] = {
    backbone.name: backbone
    for backbone in (
        Backbone(
            name="vgg16",
            title="VGG16 (ImageNet)",
            kind="cnn",
            input_size=224,
            application="VGG16",
            module="vgg16",
            fine_tune_from="block5_conv1",
            weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            name="resnet50",
            title="ResNet50 (ImageNet)",
            kind="cnn",
            input_size=224,
            application="ResNet50",
            module="resnet50",
            fine_tune_from="conv5_block1_1_conv",
            weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            name="mobilenet_v2",
            title="MobileNetV2 (ImageNet)",
            kind="cnn",
            input_size=224,
            application="MobileNetV2",
            module="mobilenet_v2",
            fine_tune_from="block_13_expand",
            weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
        Backbone(
            name="efficientnet_b0",
            title="EfficientNetB0 (ImageNet)",
            kind="cnn",
            input_size=224,
            application="EfficientNetB0",
            module="efficientnet",
            fine_tune_from="block6a_expand_conv",
            weights_file="efficientnetb0_notop.h5",
        ),
        Backbone(
            name="dlib128",
            title="dlib face ResNet (128-d, offline)",
            kind="embedding",
            input_size=150,
            alignment="chip",
            fine_tune_from="s5u1_conv1",  # the last residual stage (face_network names)
            embedding_size=128,
            head_learning_rate=1e-2,
            fine_tune_learning_rate=3e-6,  # chosen on validation loss (bench/fine_tune.py)
            # Opt-in: on LFW it lowered validation loss but not test error, and slightly worsened
            # stranger rejection (bench/fine_tune.py), at 3-7 times the training time.
            fine_tune=False,
        ),
        Backbone(
            name="mbf512",
            title="MobileFaceNet, ArcFace (512-d, offline)",
            kind="embedding",
            input_size=112,
            alignment="arcface",
            detector="scrfd",
            fine_tune_from="stage3_b0_expand",  # the last stage (mobilefacenet names)
            embedding_size=512,
            head_learning_rate=1e-2,
            fine_tune_learning_rate=3e-6,
            fine_tune=False,
        ),
    )
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None

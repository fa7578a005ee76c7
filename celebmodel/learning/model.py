"""The classifier's architecture: a backbone, a layer named ``embedding``, a softmax head.

Every model this package saves has a layer named ``embedding`` (unit-length face descriptors
for face networks, pooled features for CNNs) and a softmax layer named ``classifier``, so one
view (:func:`embedding_model`) serves identification, galleries and open-set scores. Runs of
the dlib128 backbone trained before the face network moved into Keras saved only the head
(input: a 128-d embedding); :func:`takes_embeddings` tells them apart.
"""

from __future__ import annotations

from typing import Any

import keras

from ..backbones import get_backbone
from ..config import RECIPES, TrainConfig


def build_model(config: TrainConfig, n_classes: int) -> tuple[keras.Model, keras.Model]:
    """The classifier and its base: base → embedding → dropout → softmax ``classifier``.

    For a face network the input is an aligned chip and ``embedding`` is the unit-length
    descriptor; for a CNN the input is an image and ``embedding`` is the pooled feature map.
    """
    backbone = get_backbone(config.backbone)
    recipe = RECIPES[config.recipe]
    if backbone.kind == "embedding":
        from ..faces.network import get_network

        base = get_network(backbone.name).load()
        inputs = keras.Input((backbone.input_size, backbone.input_size, 3), name="chip")
        x = keras.layers.UnitNormalization(name="embedding")(base(inputs))
    else:
        base = backbone.build(config.weights, config.image_size)
        base.trainable = recipe.base_trainable
        inputs = keras.Input((config.image_size, config.image_size, 3), name="image")
        x = base(inputs, training=recipe.base_trainable)
        pool = (
            keras.layers.Flatten
            if recipe.pooling == "flatten"
            else keras.layers.GlobalAveragePooling2D
        )
        x = pool(name="embedding")(x)
    outputs = _head(x, config, n_classes)
    return keras.Model(inputs, outputs, name=f"celebmodel_{config.backbone}"), base


def _head(x: Any, config: TrainConfig, n_classes: int) -> Any:
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, seed=config.seed, name="dropout")(x)
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="classifier")(
        x
    )


def with_new_head(
    model: keras.Model, config: TrainConfig, n_classes: int, keep: list[int] | None = None
) -> keras.Model:
    """The same network up to ``embedding`` with a new softmax for ``n_classes``.

    ``keep`` lists the old classes that stay, in their new order (default: all, first); they
    keep their weights, so adding or removing a person never touches the network.
    """
    outputs = _head(model.get_layer("embedding").output, config, n_classes)
    new = keras.Model(model.inputs, outputs, name=model.name)
    kernel, bias = new.get_layer("classifier").get_weights()
    old_kernel, old_bias = model.get_layer("classifier").get_weights()
    keep = list(range(old_kernel.shape[1])) if keep is None else keep
    kernel[:, : len(keep)], bias[: len(keep)] = old_kernel[:, keep], old_bias[keep]
    new.get_layer("classifier").set_weights([kernel, bias])
    return new


def head_model(model: keras.Model) -> keras.Model:
    """Embedding in, probabilities out, sharing ``model``'s head layers: training it on
    cached embeddings trains ``model``'s classifier (phase 1, enrolment)."""
    size = model.get_layer("embedding").output.shape[-1]
    inputs = keras.Input((size,), name="embedding")
    x = inputs
    if any(layer.name == "dropout" for layer in model.layers):
        x = model.get_layer("dropout")(x)
    return keras.Model(inputs, model.get_layer("classifier")(x), name="head")


def embedding_model(model: keras.Model) -> keras.Model:
    """A model giving both the ``embedding`` layer's output and the class probabilities."""
    return keras.Model(model.inputs, [model.get_layer("embedding").output, model.output])


def takes_embeddings(model: keras.Model) -> bool:
    """True for a head-only model (dlib128 runs saved before the face network was in Keras)."""
    return len(model.inputs[0].shape) == 2


AUGMENTATIONS = {  # backbone kind -> random layers applied to training batches
    # Aligned face chips: the alignment already fixed scale and position.
    "embedding": (
        ("RandomFlip", {"mode": "horizontal"}),
        ("RandomRotation", {"factor": 0.02}),
        ("RandomBrightness", {"factor": 0.1, "value_range": (0, 255)}),
    ),
    "cnn": (
        ("RandomFlip", {"mode": "horizontal"}),
        ("RandomRotation", {"factor": 0.05}),
        ("RandomZoom", {"height_factor": 0.1}),
        ("RandomBrightness", {"factor": 0.15, "value_range": (0, 255)}),
        ("RandomContrast", {"factor": 0.15}),
    ),
}


def augmentation(config: TrainConfig) -> keras.Sequential:
    """The training subset's augmentation for the run's kind of backbone, seeded."""
    kind = get_backbone(config.backbone).kind
    return keras.Sequential(
        [
            getattr(keras.layers, name)(**settings, seed=config.seed)
            for name, settings in AUGMENTATIONS[kind]
        ],
        name="augmentation",
    )

"""From photos to network inputs: the face stage, its cache, and ``tf.data`` pipelines.

Training, evaluation and enrolment all go through :func:`prepare_inputs`, so the network sees a
test photo exactly as it saw a training photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..backbones import Backbone, get_backbone
from ..config import TrainConfig
from ..faces.cache import cache_dir, embed_files, prepare
from ..faces.detection import face_stage
from ..progress import BarFactory, quiet_bar

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow at module load


@dataclass
class Inputs:
    """Prepared photos of one subset: what the model reads, and what was skipped and why."""

    records: pd.DataFrame  # path, label, route, n_faces, box, crop, error (+ subset if given)
    features: np.ndarray | None  # embeddings (embedding backbones) or None (CNNs read crops)

    @property
    def usable(self) -> pd.DataFrame:
        return self.records[self.records["crop"].notna()]

    def subset(self, name: str) -> Inputs:
        """The photos of one subset (``records`` must have a ``subset`` column)."""
        chosen = (self.records["subset"] == name).to_numpy()
        features = None
        if self.features is not None:
            features = self.features[chosen[self.records["crop"].notna().to_numpy()]]
        return Inputs(self.records[chosen].reset_index(drop=True), features)


def prepare_inputs(
    config: TrainConfig,
    rows: pd.DataFrame,
    bar: BarFactory = quiet_bar,
    root: str | Path | None = None,
    embed: bool = True,
    flip: bool = False,
) -> Inputs:
    """Crops (and, for face networks when ``embed``, pretrained embeddings) of ``rows``.

    ``rows`` holds ``path`` relative to ``root`` (default: the run's dataset) and ``label``.
    ``flip`` averages each embedding with its mirror image's (runs made before the face
    network moved into Keras were trained that way). ``bar`` makes the progress bars.
    Without ``embed`` nothing here needs TensorFlow (:func:`with_embeddings` adds them).
    """
    stage = face_stage(config)
    folder = root if root is not None else config.data_dir
    records = pd.DataFrame(
        prepare(folder, list(rows["path"]), stage, cache_dir(), bar=bar),
        columns=["path", "sha256", "route", "n_faces", "box", "crop", "error"],
    )
    records = pd.concat([rows.reset_index(drop=True), records.drop(columns="path")], axis=1)
    if "sha256" not in records:
        records["sha256"] = None
    inputs = Inputs(records=records, features=None)
    return with_embeddings(config, inputs, bar, flip) if embed else inputs


def with_embeddings(
    config: TrainConfig, inputs: Inputs, bar: BarFactory = quiet_bar, flip: bool = False
) -> Inputs:
    """``inputs`` with the pretrained embeddings of their crops, for a face network (other
    backbones read the crops themselves: ``inputs`` as given)."""
    if get_backbone(config.backbone).kind != "embedding":
        return inputs
    from ..faces.network import FaceEmbedder

    usable = inputs.records[inputs.records["crop"].notna()]
    features = embed_files(list(usable["crop"]), FaceEmbedder(config.backbone, flip), bar=bar)
    return Inputs(records=inputs.records, features=features)


def image_dataset(
    crops: Sequence[str],
    labels: Sequence[int] | None,
    backbone: Backbone,
    image_size: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: Any = None,
    seed: int = 0,
) -> Any:
    """Decode, resize, (augment), preprocess, batch and prefetch cached crops."""
    import tensorflow as tf

    paths = tf.data.Dataset.from_tensor_slices(list(crops))
    if labels is not None:
        data = tf.data.Dataset.zip(paths, tf.data.Dataset.from_tensor_slices(np.asarray(labels)))
    else:
        data = paths.map(lambda path: (path, 0))
    if shuffle:
        data = data.shuffle(len(crops), seed=seed, reshuffle_each_iteration=True)

    def load(path: Any, label: Any) -> tuple[Any, Any]:
        image = tf.io.decode_png(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, (image_size, image_size))
        return image, label

    data = data.map(load, num_parallel_calls=AUTOTUNE, deterministic=True).batch(batch_size)
    if augment is not None:
        data = data.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=AUTOTUNE)
    data = data.map(lambda x, y: (backbone.preprocess(x), y), num_parallel_calls=AUTOTUNE)
    return data.prefetch(AUTOTUNE)


def feature_dataset(
    features: np.ndarray,
    labels: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
) -> Any:
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((features, np.asarray(labels)))
    if shuffle:
        data = data.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(AUTOTUNE)


def model_dataset(
    config: TrainConfig,
    inputs: Inputs,
    label_index: dict[str, int],
    *,
    training: bool = False,
    augment: Any = None,
    features: bool = False,
) -> Any:
    """The ``tf.data`` pipeline of a subset's usable photos, for ``fit`` or ``predict``:
    their cached embeddings when ``features``, else their crops."""
    backbone = get_backbone(config.backbone)
    usable = inputs.usable
    labels = [label_index.get(label, -1) for label in usable["label"]]
    if features:
        return feature_dataset(
            inputs.features, labels, config.batch_size, shuffle=training, seed=config.seed
        )
    return image_dataset(
        list(usable["crop"]),
        labels,
        backbone,
        config.image_size,
        config.batch_size,
        shuffle=training,
        augment=augment if training else None,
        seed=config.seed,
    )

"""A run's model applied to prepared photos: embeddings and probabilities of a whole subset.

Training (gallery, calibration, metrics) and evaluation read a subset through the same
``tf.data`` pipeline the model was fitted on, so a photo is seen the same way by both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import TrainConfig
from ..vectors import l2_normalize
from .model import embedding_model, takes_embeddings
from .pipeline import Inputs, model_dataset


def predict_inputs(
    model: Any,
    config: TrainConfig,
    inputs: Inputs,
    callbacks: list[Any] | None = None,
    mirror: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length embeddings and class probabilities of a subset's usable photos, or of
    their mirror images (``mirror``; a model that takes photos) (``callbacks``: Keras
    callbacks of the prediction, such as a progress counter)."""
    if len(inputs.usable) == 0:
        return np.zeros((0, 1), np.float32), np.zeros((0, model.output.shape[-1]), np.float32)
    data = model_dataset(config, inputs, {}, features=takes_embeddings(model))
    if mirror:  # batches of (photos, labels); a photo's columns reversed
        data = data.map(lambda photos, labels: (photos[:, :, ::-1], labels))
    embeddings, probabilities = embedding_model(model).predict(data, verbose=0, callbacks=callbacks)
    embeddings = embeddings.reshape(len(embeddings), -1)
    return l2_normalize(embeddings), np.asarray(probabilities, dtype=np.float64)

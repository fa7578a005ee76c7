"""Keras models as traced graphs: one trace for any batch size, reused on every call.

Calling a Keras model eagerly re-runs Python for every layer on every call; a traced graph
does not, which is most of the time of a one-face batch. The signature leaves the batch size
open, so a new batch size never retraces.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np


def compiled(model: keras.Model) -> Callable[[np.ndarray], list[np.ndarray]]:
    """``model`` as a function of a float32 batch returning its outputs as numpy arrays."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)]
    function = tf.function(lambda batch: model(batch, training=False), input_signature=signature)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        outputs = function(np.asarray(batch, dtype=np.float32))
        if isinstance(outputs, (list, tuple)):
            return [np.asarray(output) for output in outputs]
        return [np.asarray(outputs)]

    return run

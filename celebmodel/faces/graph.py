"""Keras models as fast functions of a batch: a traced TensorFlow graph for the many faces of a
folder, and a LiteRT (XNNPACK) interpreter for the one or two of a photo.

Calling a Keras model eagerly re-runs Python for every layer on every call; a traced graph
does not, and its signature leaves the batch size open, so a new batch size never retraces.
On a batch of one or two faces TensorFlow's own kernels spend most of their time starting up
(MobileFaceNet: 26 ms a face against LiteRT's 12 on two cores, ``bench/networks.py``), so a
photo's faces go through LiteRT, converted from the same model once per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import keras
import numpy as np

PAIR = 2  # LiteRT's batch: a face and its mirror image


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


def interpreted(model: keras.Model, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """``model``'s first output through LiteRT, :data:`PAIR` faces at a time (an odd one padded),
    on ``threads`` cores; safe to call from several threads (one runs at a time)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(
        model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert(),
        num_threads=threads,
    )
    (source,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(source["index"], [PAIR, *source["shape"][1:]])
    interpreter.allocate_tensors()
    target = interpreter.get_output_details()[0]["index"]
    lock = threading.Lock()

    def run(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        outputs = []
        with lock:
            for start in range(0, len(batch), PAIR):
                part = batch[start : start + PAIR]
                padded = np.concatenate([part, np.zeros_like(batch[: PAIR - len(part)])])
                interpreter.set_tensor(source["index"], padded)
                interpreter.invoke()
                outputs.append(interpreter.get_tensor(target)[: len(part)].copy())
        return np.concatenate(outputs)

    return run

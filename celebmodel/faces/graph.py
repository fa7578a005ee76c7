"""Keras models as fast functions of a batch: a traced TensorFlow graph for the many faces of a
folder, and a LiteRT (XNNPACK) interpreter for the one or two of a photo.

Calling a Keras model eagerly re-runs Python for every layer on every call; a traced graph
does not, and its signature leaves the batch size open, so a new batch size never retraces.
On a batch of one or two faces TensorFlow's own kernels spend most of their time starting up
(MobileFaceNet, a face and its mirror image: 26 ms against LiteRT's 18 on two cores), so a
photo's faces go through LiteRT. MobileFaceNet's flatbuffer ships in the package, converted
with the float16 weights the network is stored in (its folders' faces go through it too, with
no TensorFlow to import); other networks' flatbuffers are converted once per machine, in a
child process (the converter keeps about 300 MB and prints to standard output), and kept in
the data cache beside dlib's converted weights.

    python -m celebmodel.faces.network NETWORK TARGET   # what the child runs; for mbf512,
                                                        # how the shipped flatbuffer was made
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FaceError
from ..storage import data_root

if TYPE_CHECKING:
    import keras

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


def networks_cache() -> Path:
    """Where networks converted on this machine are kept: the data cache's ``networks``."""
    return data_root() / "cache" / "networks"


def converted(network: str, target: Path) -> Path:
    """``target``, the LiteRT flatbuffer of a face ``network`` (a name of the networks
    table), converted by a child process if it is not there yet."""
    if not target.is_file():
        done = subprocess.run(
            [sys.executable, "-m", "celebmodel.faces.network", network, str(target)],
            capture_output=True, text=True,
        )
        if done.returncode != 0 or not target.is_file():
            said = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise FaceError(f"{target}: the {network} network could not be converted for "
                            f"LiteRT: {said}")
    return target


def interpreted(flatbuffer: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The network in ``flatbuffer`` through LiteRT, :data:`PAIR` faces at a time (an odd one
    padded), on ``threads`` cores; safe to call from several threads (one runs at a time)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=flatbuffer.read_bytes(), num_threads=threads)
    except ValueError as exc:  # a damaged cache entry: converted again next time
        flatbuffer.unlink(missing_ok=True)
        raise FaceError(f"{flatbuffer}: not a LiteRT model ({exc}); removed, try again") from exc
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


def convert(model: keras.Model, target: Path, float16: bool = False) -> None:
    """Write ``model``'s LiteRT flatbuffer to ``target`` (atomically), its weights stored as
    float16 when ``float16`` (exact for weights that are float16 already)."""
    import tensorflow as tf

    from ..storage import atomic_file

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    flatbuffer = converter.convert()
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as temp:
        temp.write_bytes(flatbuffer)

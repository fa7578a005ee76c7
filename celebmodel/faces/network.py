"""The face networks, as one table: what each reads (input size, alignment), what it gives
(embedding size), where its weights come from and under which licence, and how to load it;
and :class:`FaceEmbedder`, the unit-length embeddings of aligned faces by any of them.

Embeddings of two networks never meet: the cache keys each by its network and weights
(:meth:`FaceEmbedder.key`), a run records its network as its backbone, and a gallery whose
size is not its network's is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaceError
from ..vectors import l2_normalize

BATCH = 32  # faces per call of a compiled graph
MOBILEFACENET_FLATBUFFER = Path(__file__).parent / "weights" / "mobilefacenet_w600k.tflite"


def _dlib() -> Any:
    from .dlib_resnet import load_network

    return load_network()


def _dlib_digest() -> str:
    from .dlib_resnet import source_sha256

    return source_sha256()


def _mobilefacenet() -> Any:
    from .mobilefacenet import load_network

    return load_network()


def _mobilefacenet_digest() -> str:
    from .mobilefacenet import source_sha256

    return source_sha256()


@dataclass(frozen=True)
class FaceNetwork:
    name: str
    title: str
    input_size: int
    alignment: str  # :data:`celebmodel.faces.detection.ALIGNMENTS` key
    embedding_size: int
    detector: str  # the detector a run of this network uses unless told otherwise
    licence: str
    load: Callable[[], Any]  # a new Keras copy with its pretrained weights
    digest: Callable[[], str]  # sha256 of the weights' source: part of every cache key
    key_prefix: str  # cache keys of its embeddings start with this
    # Its LiteRT flatbuffer as the package ships it (float16 weights, as the network's own
    # weights are stored), which embeds without TensorFlow; None: converted once per machine.
    flatbuffer: Path | None = None
    # Album grouping's cuts (chord distances between mirror-averaged faces: two faces, a
    # group, the loose pass; see celebmodel.scoring.cuts) where its embeddings put everyone on
    # one scale; None: learnt from each model's own gallery.
    grouping: tuple[float, float, float] | None = None


NETWORKS: dict[str, FaceNetwork] = {
    network.name: network
    for network in (
        FaceNetwork(
            name="dlib128",
            title="dlib face ResNet (2017, 128-d)",
            input_size=150,
            alignment="chip",
            embedding_size=128,
            detector="hog",
            licence="public domain (dlib's face recognition model, via face-recognition-models)",
            load=_dlib,
            digest=_dlib_digest,
            key_prefix="dlib128k",
        ),
        FaceNetwork(
            name="mbf512",
            title="MobileFaceNet, ArcFace loss, WebFace600K (InsightFace w600k_mbf, 512-d)",
            input_size=112,
            alignment="arcface",
            embedding_size=512,
            detector="scrfd",
            licence="non-commercial research only (InsightFace's pretrained models)",
            load=_mobilefacenet,
            digest=_mobilefacenet_digest,
            key_prefix="mbf512",
            flatbuffer=MOBILEFACENET_FLATBUFFER,
            # Chosen on 1,944 photos of 67 people from other sources than LFW, checked on all
            # of LFW (BCubed F 0.992, its people with 10-19 photos 0.994; bench/networks.py):
            # its LFW-8 gallery's 60th/88th/99th percentiles (0.88/0.96/1.06) split people.
            grouping=(1.10, 1.20, 1.25),
        ),
    )
}


def get_network(name: str) -> FaceNetwork:
    try:
        return NETWORKS[name]
    except KeyError:
        raise FaceError(
            f"{name}: not a face network; choose one of {', '.join(NETWORKS)}"
        ) from None


def set_trainable(network: Any, first: str | None) -> None:
    """Train the layers from ``first`` on (``None``: all). Weights made untrainable (dlib's
    affine layers) stay frozen whatever the layer says."""
    if first is not None and first not in {layer.name for layer in network.layers}:
        raise ValueError(f"{network.name} has no layer {first!r} to fine-tune from")
    network.trainable = True
    unfrozen = first is None
    for layer in network.layers:
        unfrozen = unfrozen or layer.name == first
        layer.trainable = unfrozen


class FaceEmbedder:
    """Unit-length embeddings of aligned RGB chips from a pretrained face network (one copy
    per process and network), in compiled batches.

    Parameters
    ----------
    network : str
        A name of :data:`NETWORKS`.
    flip : bool
        Average the embedding of each chip and of its mirror image.
    """

    def __init__(self, network: str = "dlib128", flip: bool = False) -> None:
        self.network = get_network(network)
        self.flip = flip

    def key(self) -> str:
        """Cache key of the embeddings: the network, its weights' source and the flip."""
        return f"{self.network.key_prefix}-{self.network.digest()[:12]}-flip{int(self.flip)}"

    def embed(self, chips: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Embeddings of ``chips`` (uint8 RGB, the network's input size), unit length: a
        folder's faces, through the shipped flatbuffer when the network has one (no
        TensorFlow: a training embeds its faces while TensorFlow is still being imported),
        else through the traced graph in batches of :data:`BATCH`."""
        if self.network.flatbuffer is not None:
            return self.embed_photo(chips)
        graph = _shared_graph(self.network.name)
        return self._embedded(
            chips,
            lambda batch: np.concatenate(
                [graph(batch[start : start + BATCH])[0] for start in range(0, len(batch), BATCH)]
            ),
        )

    def embed_photo(self, chips: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """:meth:`embed` for the few faces of one photo, through LiteRT: about two thirds of the
        time on a face (the shipped flatbuffer, or one converted from the same network once per
        machine: :mod:`celebmodel.faces.graph`)."""
        return self._embedded(chips, _shared_interpreter(self.network.name))

    def _embedded(
        self, chips: Sequence[np.ndarray] | np.ndarray, run: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        size = self.network.input_size
        batch = np.asarray(chips, dtype=np.float32).reshape(-1, size, size, 3)
        if len(batch) == 0:
            return np.zeros((0, self.network.embedding_size), dtype=np.float32)
        if self.flip:
            batch = np.concatenate([batch, batch[:, :, ::-1]])
        vectors = run(batch)
        if self.flip:
            vectors = vectors[: len(vectors) // 2] + vectors[len(vectors) // 2 :]
        return l2_normalize(vectors)


def warm_up(name: str) -> None:
    """Load the network as :meth:`FaceEmbedder.embed` runs it now (for a traced graph, seconds
    of a training's embedding stage, which a training spends while its photos' faces are still
    being found)."""
    size = get_network(name).input_size
    FaceEmbedder(name).embed(np.zeros((1, size, size, 3), np.uint8))


def needs_tensorflow(name: str) -> bool:
    """Whether embedding with the network needs TensorFlow (no flatbuffer ships with it)."""
    return get_network(name).flatbuffer is None


@cache
def _shared_graph(name: str) -> Callable[[np.ndarray], list[np.ndarray]]:
    from .graph import compiled

    return compiled(NETWORKS[name].load())


@cache
def _shared_interpreter(name: str) -> Callable[[np.ndarray], np.ndarray]:
    from ..cores import workers_available
    from .graph import converted, interpreted, networks_cache

    network = NETWORKS[name]
    if network.flatbuffer is not None:
        return interpreted(network.flatbuffer, workers_available())
    target = networks_cache() / f"{network.key_prefix}-{network.digest()[:16]}.tflite"
    return interpreted(converted(name, target), workers_available())


if __name__ == "__main__":  # the child of graph.converted: NAME TARGET
    import sys

    from .graph import convert

    network = get_network(sys.argv[1])
    convert(network.load(), Path(sys.argv[2]), float16=network.flatbuffer is not None)

"""The face stage's disk cache: one aligned crop per photo and one embedding per crop.

Crops are keyed by the photo's content hash and the stage settings, embeddings by the crop and
the embedder (network file and flip), so a second training on the same photos detects and
embeds nothing, and a change of either setting is a new entry, never a mix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..cores import workers_available
from ..data.images import load_image
from ..errors import ImageError
from ..progress import BarFactory, quiet_bar
from ..storage import atomic_file, atomic_write_json, data_root, file_sha256
from .detection import FaceStage

if TYPE_CHECKING:  # the face network needs TensorFlow; finding faces does not
    from .network import FaceEmbedder


def cache_dir() -> Path:
    """Where crops and embeddings are cached: ``<data>/cache``."""
    return data_root() / "cache"


def _crop_dir(cache_dir: Path, stage: FaceStage, sha: str) -> Path:
    return cache_dir / "crops" / stage.key() / sha[:2]


def prepare(
    root: str | Path,
    paths: Sequence[str],
    stage: FaceStage,
    cache_dir: str | Path,
    bar: BarFactory = quiet_bar,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """The network input of each photo, as a cached PNG crop, with how it was obtained.

    Returns one record per photo, in the order of ``paths``: ``path``, ``sha256``, ``route``
    (a key of :data:`ROUTES`, or ``"error"``), ``n_faces``, ``crop`` (the cached file,
    ``None`` when skipped), ``error``, and ``box`` (the face taken) when one was.
    A photo seen before with the same stage settings is not read or detected again.
    ``bar`` makes the progress bar (stage ``faces``, one step per photo).

    Photos are prepared by ``workers`` threads (default: one per available core): dlib's HOG
    detector, most of a photo's time, runs without the GIL (dlib 19.22 and later release it
    for the whole detection), as do decoding and hashing, so a folder's face stage uses every
    core (``bench/train_start.py`` shows the cores kept busy) without the seconds a process
    pool would spend starting and importing. Each photo's result does not depend on which
    thread made it, and each cache file is written under a temporary name of its own.
    """
    root, cache_dir = Path(root), Path(cache_dir)
    workers = max(1, min(workers or workers_available(), len(paths) or 1))
    with bar(desc="faces", total=len(paths), unit="photo") as progress:
        if workers == 1:
            return [_counted(_record(root, rel, stage, cache_dir), progress) for rel in paths]
        pool = ThreadPoolExecutor(workers, thread_name_prefix="faces")
        try:
            futures = [pool.submit(_record, root, rel, stage, cache_dir) for rel in paths]
            for future in as_completed(futures):  # the bar moves as photos finish
                _counted(future.exception(), progress)
            return [future.result() for future in futures]
        finally:  # a stop (SIGTERM) ends the stage after the photos under way, not all
            pool.shutdown(cancel_futures=True)


def _counted(result: Any, progress: Any) -> Any:
    """``result``, after one step of the bar."""
    progress.update(1)
    return result


def _record(root: Path, rel: str, stage: FaceStage, cache_dir: Path) -> dict[str, Any]:
    source = root / rel
    record: dict[str, Any] = {"path": rel, "crop": None, "error": None, "n_faces": 0}
    try:
        sha = file_sha256(source)
    except OSError as exc:
        return {**record, "route": "error", "error": f"{rel}: unreadable ({exc})"}
    folder = _crop_dir(cache_dir, stage, sha)
    meta_file, crop_file = folder / f"{sha}.json", folder / f"{sha}.png"
    record["sha256"] = sha
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta["route"] == "none" or crop_file.is_file():
            crop = str(crop_file) if meta["route"] != "none" else None
            return {**record, **meta, "crop": crop}
    try:
        image = load_image(source, name=rel)
    except ImageError as exc:
        return {**record, "route": "error", "error": str(exc)}
    crop, meta = stage.extract(image)
    folder.mkdir(parents=True, exist_ok=True)
    if crop is not None:  # identical photos (and Ray actors) may race here: unique temp names
        with atomic_file(crop_file) as temp:
            # level 1: a quarter of level 6's time for a tenth more bytes (the same pixels)
            Image.fromarray(crop).save(temp, format="PNG", compress_level=1)
    atomic_write_json(meta_file, meta)
    return {**record, **meta, "crop": str(crop_file) if crop is not None else None}


def embed_files(
    crops: Sequence[str | Path],
    embedder: FaceEmbedder,
    bar: BarFactory = quiet_bar,
    batch: int = 32,
) -> np.ndarray:
    """Embeddings of cached chip files, themselves cached beside each chip (stage
    ``embeddings`` of ``bar``: one step per face not cached yet)."""
    vectors: list[np.ndarray | None] = []
    missing: list[int] = []
    for i, crop in enumerate(crops):
        cached = Path(crop).with_suffix(f".{embedder.key()}.npy")
        if cached.is_file():
            vectors.append(np.load(cached, allow_pickle=False))
        else:
            vectors.append(None)
            missing.append(i)
    with bar(desc="embeddings", total=len(missing), unit="face") as progress:
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            chips = [np.asarray(Image.open(crops[i]).convert("RGB")) for i in chunk]
            for i, vector in zip(chunk, embedder.embed(chips), strict=True):
                with atomic_file(Path(crops[i]).with_suffix(f".{embedder.key()}.npy")) as temp:
                    np.save(temp, vector)
                vectors[i] = vector
            progress.update(len(chunk))
    if not vectors:
        return np.zeros((0, embedder.network.embedding_size), dtype=np.float32)
    return np.stack(vectors).astype(np.float32)

"""Add a celebrity to a finished face-network run from a few photos, in seconds.

The new faces are embedded by the run's own network (a fine-tuned one included), join the
gallery, and the softmax head is refit on the whole gallery; the network is not retrained.
Model, labels and gallery are replaced together or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .backbones import get_backbone
from .config import TrainConfig
from .errors import ImageError, RunError, UploadError
from .face_network import FaceEmbedder
from .images import load_image, photos_under
from .model import embedding_model, head_model, takes_embeddings, with_new_head
from .open_set import l2_normalize
from .pipeline import face_stage
from .runs import Run
from .sources import safe_name
from .storage import atomic_write_json, data_root, now_iso, replace_together

log = logging.getLogger("celebmodel")


def _photo_files(photos: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for photo in map(Path, photos):
        if photo.is_dir():
            files += photos_under(photo)
        else:
            files.append(photo)
    return files


def enroll(run: Run, name: str, photos: list[str | Path]) -> dict[str, Any]:
    """Add a celebrity to a finished embedding run from a few photos, without retraining a CNN.

    The new faces join the gallery (so the class gets a centroid) and the softmax head is refit
    on the whole gallery, which takes seconds. Recorded in ``enrolled.json``.
    """

    started = time.perf_counter()
    config = run.config()
    if get_backbone(config.backbone).kind != "embedding":
        raise RunError(f"{run.name}: enrolment needs a face-embedding run (--backbone dlib128)")
    labels = run.labels()
    name = name.strip().replace(" ", "_")
    if not name or "/" in name or name.startswith("."):
        raise RunError(f"{name!r}: not a usable celebrity name")
    if name in labels:
        raise RunError(f"{name}: already a celebrity of {run.name}")
    stage = face_stage(config)
    chips, used, skipped = [], [], []
    for photo in _photo_files(photos):
        try:
            chip, info = stage.extract(load_image(photo))
        except (ImageError, OSError) as exc:
            skipped.append({"path": str(photo), "reason": str(exc)})
            continue
        if chip is None:
            skipped.append({"path": str(photo), "reason": "no face found"})
            continue
        chips.append(chip)
        used.append(str(photo))
    if not chips:
        raise RunError(f"{name}: none of the photos holds a usable face")

    model = run.load_model()
    if takes_embeddings(model):  # a run from before the face network was in Keras
        vectors = FaceEmbedder(flip=True).embed(chips)
    else:
        vectors = embedding_model(model).predict(np.asarray(chips, np.float32), verbose=0)[0]
    gallery, gallery_labels = run.gallery()
    gallery = np.vstack([gallery, l2_normalize(vectors)])
    gallery_labels = np.r_[gallery_labels, np.full(len(chips), len(labels))]
    labels = [*labels, name]
    head = refit_head(config, model, gallery, gallery_labels, len(labels))

    # Everything is written beside the run first, then renamed together: a failure leaves the
    # old model, labels and gallery, never a model that disagrees with its labels.
    partial = run.file(".model.tmp.keras")
    partial_labels = run.file(".labels.tmp.json")
    try:
        head.save(partial)
        partial_labels.write_text(json.dumps(labels), encoding="utf-8")
        os.chmod(partial_labels, 0o644)
        replace_together(
            [
                (run.write_gallery(gallery, gallery_labels), run.file("gallery.npz")),
                (partial_labels, run.file("labels.json")),
                (partial, run.file("model.keras")),
            ]
        )
    finally:
        for leftover in (partial, partial_labels, run.file(".gallery.tmp.npz")):
            leftover.unlink(missing_ok=True)
    record = {"name": name, "photos": used, "skipped": skipped, "when": now_iso()}
    history = run.read_json("enrolled.json", default=[]) or []
    atomic_write_json(run.file("enrolled.json"), [*history, record])
    seconds = time.perf_counter() - started
    log.info("enrolled %s from %d photo(s) in %.1f s", name, len(used), seconds)
    return {**record, "n_photos": len(used), "seconds": seconds}


def refit_head(
    config: TrainConfig, model: Any, embeddings: np.ndarray, labels: np.ndarray, n_classes: int
) -> Any:
    """``model`` with a softmax head for ``n_classes`` refit on the whole gallery (the network
    is not touched), classes weighted so a few photos still count."""
    from sklearn.utils.class_weight import compute_class_weight

    keras.utils.set_random_seed(config.seed)
    model = with_new_head(model, config, n_classes)
    head = head_model(model)
    weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=labels)
    head.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    head.fit(
        embeddings,
        labels,
        batch_size=32,
        epochs=200,
        class_weight=dict(enumerate(weights)),
        callbacks=[keras.callbacks.EarlyStopping(monitor="loss", patience=config.patience)],
        verbose=0,
    )
    return model


def save_photos(files: Iterable[tuple[str, bytes]], folder: Path) -> list[Path]:
    """Write uploaded photos (name, bytes) under ``folder`` with safe, distinct names."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, content) in enumerate(files):
        suffix = Path(name).suffix.lower()
        path = folder / f"{i:03d}-{safe_name(Path(name).stem, 'photo')}{suffix}"
        path.write_bytes(content)
        written.append(path)
    return written


def enroll_uploaded(run: Run, name: str, files: Iterable[tuple[str, bytes]]) -> dict[str, Any]:
    """Add a celebrity to a dlib128 run from uploaded photos (kept on disk only meanwhile)."""
    data_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_root(), prefix=".enrol-") as tmp:
        photos = save_photos(files, Path(tmp))
        if not photos:
            raise UploadError("add at least one photo of the new celebrity")
        return enroll(run, name, [str(p) for p in photos])

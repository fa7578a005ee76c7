"""Who a face-network run knows, and changing it in seconds: list, add a person, add photos to
one, rename, remove.

Adding faces embeds them with the run's own network (a fine-tuned one included), adds them to
the gallery and, for a trained run, refits the softmax head on the whole gallery; the network
is never retrained. A gallery model (the built-in public-figures model's copies) has no head:
its gallery and each face's normalisation statistics are all that change. The built-in model
itself is read-only.
Model, labels and gallery are replaced together or not at all. Names shown to users and people
removed from a trained model are kept in ``people.json`` (a removed trained person is masked
out when faces are identified; a person added later is deleted from the gallery and the head).
Photos given to add faces are not kept: only their embeddings, and their aligned face when the
caller asks (``keep_faces``), in the run's ``faces/`` folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..backbones import get_backbone
from ..config import TrainConfig
from ..data.dataset import display_name
from ..data.images import load_image, photo_files
from ..data.sources import safe_name
from ..errors import ImageError, RunError, UploadError
from ..runs.run import Run, choose_run, copy_run, own_copy
from ..storage import atomic_files, atomic_write_json, data_root, now_iso
from ..vectors import l2_normalize

# TensorFlow (the network, the head) is imported inside the functions that add faces, so
# listing, renaming, removing and restoring people take a fraction of a second.

log = logging.getLogger("celebmodel")
ADDED = "added:"  # gallery path prefix of a face given after training


# Who the run knows ---------------------------------------------------------------------------


def people_file(run: Run) -> dict[str, Any]:
    """``people.json``: shown names, people removed, and the history of changes."""
    try:
        data = run.read_json("people.json", default={}) or {}
    except RunError:
        data = {}
    return data if isinstance(data, dict) else {}


def names(run: Run) -> dict[str, str]:
    """The name shown for each label: the user's, else the folder name with spaces."""
    chosen = people_file(run).get("names") or {}
    return {label: chosen.get(label) or display_name(label) for label in run.labels()}


def removed(run: Run) -> set[str]:
    """Labels of trained people removed from the model (masked out when identifying)."""
    return set(people_file(run).get("removed") or [])


def roster(run: Run) -> pd.DataFrame:
    """Every person of the run: label, name, photos in the gallery, ``kind`` (``trained``;
    ``LFW`` in the built-in model and copies of it, whose people come from LFW, not from a
    training; ``added`` later), removed or not, and one gallery photo to show as their face."""
    labels = run.labels()
    gallery_labels, paths = run.gallery_index()
    shown, gone = names(run), removed(run)
    added = np.char.startswith(paths.astype(str), ADDED) if len(paths) else np.zeros(0, bool)
    counts = np.bincount(gallery_labels, minlength=len(labels))[: len(labels)]
    trained = np.bincount(gallery_labels[~added], minlength=len(labels))[: len(labels)]
    usable = (paths != "") & (paths != ADDED)
    first = {}  # one gallery photo per person, for a thumbnail (one pass over the gallery)
    for label_index, path in zip(gallery_labels[usable][::-1], paths[usable][::-1], strict=True):
        first[int(label_index)] = str(path)
    return pd.DataFrame(
        {
            "label": labels,
            "name": [shown[label] for label in labels],
            "photos": counts,
            "kind": np.where(
                (counts > 0) & (trained == 0), "added", "LFW" if run.lfw_gallery else "trained"
            ),
            "removed": [label in gone for label in labels],
            "face": [first.get(i, "") for i in range(len(labels))],
        },
        columns=["label", "name", "photos", "kind", "removed", "face"],
    )


def face_thumbnail(run: Run, path: str) -> Image.Image | None:
    """The face of a gallery entry: a kept face of a person added later, else ``None`` (the
    page shows trained people's faces from their dataset photo)."""
    if path.startswith(ADDED):
        kept = run.path / path.removeprefix(ADDED)
        if kept.is_file() and kept.resolve().is_relative_to(run.path.resolve()):
            return Image.open(kept).convert("RGB")
    return None


def _record(run: Run, **change: Any) -> dict[str, Any]:
    data = people_file(run)
    history = [*data.get("history", []), {**change, "when": now_iso()}]
    return {**data, "history": history}


def rename(run: Run, label: str, name: str) -> None:
    """Show ``label`` as ``name`` everywhere (the label, the model's class, is unchanged)."""
    run.check_writable()
    if label not in run.labels():
        raise RunError(f"{label}: not a person of {run.title}")
    name = " ".join(name.split())
    if not name:
        raise RunError(f"{label}: a name cannot be empty")
    data = _record(run, action="rename", label=label, name=name)
    data["names"] = {**(data.get("names") or {}), label: name}
    atomic_write_json(run.file("people.json"), data)


def remove(run: Run, label: str) -> None:
    """Take a person out of the model: a trained one is masked out when faces are identified
    (and can be restored), a person added later is deleted from the gallery and the head."""
    run.check_writable()
    people = roster(run).set_index("label")
    if label not in people.index:
        raise RunError(f"{label}: not a person of {run.title}")
    if len(people) - int(people["removed"].sum()) <= 2:
        raise RunError(f"{run.title}: a model needs at least two people; add one first")
    if people.loc[label, "kind"] == "added":
        _drop_class(run, label)
        shutil.rmtree(run.path / "faces" / label, ignore_errors=True)  # its kept faces
        data = _record(run, action="remove", label=label, deleted=True)
        data["names"] = {k: v for k, v in (data.get("names") or {}).items() if k != label}
    else:
        data = _record(run, action="remove", label=label)
        data["removed"] = sorted({*(data.get("removed") or []), label})
    atomic_write_json(run.file("people.json"), data)


def restore(run: Run, label: str) -> None:
    """Put a removed trained person back."""
    run.check_writable()
    if label not in removed(run):
        raise RunError(f"{label}: not a removed person of {run.title}")
    data = _record(run, action="restore", label=label)
    data["removed"] = sorted(set(data.get("removed") or []) - {label})
    atomic_write_json(run.file("people.json"), data)


# Adding faces ---------------------------------------------------------------------------------


def _checked(run: Run) -> TrainConfig:
    run.check_writable()
    config = run.config()
    if get_backbone(config.backbone).kind != "embedding":
        raise RunError(f"{run.name}: enrolment needs a face-embedding run (--backbone dlib128)")
    return config


def _faces(
    config: TrainConfig, photos: list[str | Path], shown: dict[str, str] | None = None
) -> tuple[list, list, list]:
    """The aligned face of each photo (the central one), the photos used, and those skipped,
    each ``{path, reason}`` (``shown`` maps a file to the name the user knows it by)."""
    from ..faces.detection import face_stage

    stage = face_stage(config)
    shown = shown or {}
    chips, used, skipped = [], [], []
    for photo in photo_files(photos):
        name = shown.get(str(photo), str(photo))
        try:
            chip, _ = stage.extract(load_image(photo, name=name))
        except ImageError as exc:
            skipped.append({"path": name, "reason": exc.problem})
            continue
        except OSError as exc:
            skipped.append({"path": name, "reason": exc.strerror or str(exc)})
            continue
        if chip is None:
            skipped.append({"path": name, "reason": "no face found"})
            continue
        chips.append(chip)
        used.append(name)
    return chips, used, skipped


def embed_faces(run: Run, model: Any, chips: list[np.ndarray]) -> np.ndarray:
    """Unit-length embeddings of aligned faces by the run's own network (a gallery model's:
    its face network, face and mirror image averaged, as its gallery was made)."""
    from ..faces.network import FaceEmbedder
    from ..learning.model import embedding_model, takes_embeddings

    if model is None or takes_embeddings(model):  # gallery model, or a run from before the
        return FaceEmbedder(run.config().backbone, flip=True).embed(chips)  # network in Keras
    vectors = embedding_model(model).predict(np.asarray(chips, np.float32), verbose=0)[0]
    return l2_normalize(vectors)


def _kept_paths(
    run: Run, label: str, chips: list[np.ndarray], sources: list[str], keep: bool
) -> tuple[list[str], dict[Path, np.ndarray]]:
    """Gallery paths of added faces, and the face files to write for the faces kept."""
    if not keep:
        return [f"{ADDED}{Path(source).name}" for source in sources], {}
    folder = run.path / "faces" / label
    folder.mkdir(parents=True, exist_ok=True)
    start = len(list(folder.glob("*.png")))
    files = {folder / f"{i:04d}.png": chip for i, chip in enumerate(chips, start=start)}
    return [f"{ADDED}{final.relative_to(run.path)}" for final in files], files


def _rewrite(
    run: Run,
    config: TrainConfig,
    model: Any,
    gallery: tuple[np.ndarray, np.ndarray, list[str]],
    labels: list[str],
    keep: list[int] | None = None,
    faces: dict[Path, np.ndarray] | None = None,
) -> None:
    """Refit the head on ``gallery`` (a gallery model: recompute each face's normalisation
    statistics) and replace the kept ``faces``, gallery, labels and model together: a failure
    leaves the old ones, never a model that disagrees with its labels."""
    embeddings, gallery_labels, paths = gallery
    faces = faces or {}
    targets = [*faces, run.file("gallery.npz"), run.file("labels.json")]
    if model is not None:
        targets.append(run.file("model.keras"))
    with atomic_files(*targets) as temps:
        for temp, chip in zip(temps[: len(faces)], faces.values(), strict=True):
            Image.fromarray(np.asarray(chip, dtype=np.uint8)).save(temp, format="PNG")
        gallery_temp, labels_temp = temps[len(faces)], temps[len(faces) + 1]
        if model is None:  # a gallery model: no head, the statistics go with the gallery
            from ..scoring.matching import cohort_stats

            stored = embeddings.astype(np.float16)
            unit = l2_normalize(stored.astype(np.float32))
            stats = cohort_stats(unit, gallery_labels, unit, gallery_labels)
            run.write_gallery(gallery_temp, stored, gallery_labels, paths, stats)
        else:
            head = refit_head(config, model, embeddings, gallery_labels, len(labels), keep)
            head.save(temps[-1])
            run.write_gallery(gallery_temp, embeddings, gallery_labels, paths)
        labels_temp.write_text(json.dumps(labels), encoding="utf-8")


def _label(name: str) -> str:
    label = "_".join(name.split())
    if not label or "/" in label or label.startswith("."):
        raise RunError(f"{name!r}: not a usable name")
    return label


def add_faces(
    run: Run,
    name: str,
    chips: list[np.ndarray],
    sources: list[str],
    keep_faces: bool = False,
    vectors: np.ndarray | None = None,
) -> str:
    """Add aligned faces to a person of the run, new (``name`` not known yet) or known (their
    label or shown name); returns the label. ``vectors`` skips embedding when the faces'
    embeddings are already known (a group of unknown faces)."""
    config = _checked(run)
    if not len(chips if vectors is None else vectors):
        raise RunError(f"{name}: none of the photos holds a usable face")
    if keep_faces and len(chips) != len(sources):
        raise RunError(f"{name}: a face to keep for every photo is needed")
    labels = run.labels()
    by_name = {shown.lower(): label for label, shown in names(run).items()}
    label = name if name in labels else by_name.get(" ".join(name.split()).lower())
    new = label is None
    label = _label(name) if new else label
    if new and label in labels:
        raise RunError(f"{label}: already a person of {run.title}")
    model = None if run.scoring == "gallery" else run.load_model()
    vectors = embed_faces(run, model, chips) if vectors is None else l2_normalize(vectors)
    embeddings, gallery_labels = run.gallery()
    paths, files = _kept_paths(run, label, chips, sources, keep_faces)
    index = len(labels) if new else labels.index(label)
    if len(paths) != len(vectors):
        raise RunError(f"{name}: {len(vectors)} faces but {len(paths)} photos named")
    gallery = (
        np.vstack([embeddings, vectors]),
        np.r_[gallery_labels, np.full(len(vectors), index)],
        [*run.gallery_paths(), *paths],
    )
    _rewrite(run, config, model, gallery, [*labels, label] if new else labels, faces=files)
    if new and " ".join(name.split()) != display_name(label):
        rename(run, label, name)
    return label


def learns_faces(run: Run) -> bool:
    """Whether naming someone can teach this model their face without retraining: a
    face-network run, or the built-in model (through the user's own copy of it)."""
    return run.builtin or get_backbone(run.config_dict().get("backbone", "")).kind == "embedding"


def name_faces(
    run: Run, name: str, chips: list[np.ndarray], sources: list[str], vectors: np.ndarray
) -> tuple[Run, str, bool]:
    """Naming faces the model did not know makes it know them: they are added to ``name``
    (a new person, or more faces of a known one). The built-in model is read-only, so the
    first name makes the user's own copy of it (later names use that copy), the model in use
    from then on, and adds them there. Returns the run they are in, the label, and whether
    the person is new."""
    if not learns_faces(run):
        raise RunError(f"{run.title}: its network needs retraining to learn a face; name the "
                       "group only, or train a face-network run")
    if run.builtin:
        run = own_copy(run) or copy_run(run)
        choose_run(run)
    before = set(run.labels())
    label = add_faces(run, name, chips, sources, vectors=vectors)
    return run, label, label not in before


def _drop_class(run: Run, label: str) -> None:
    config = _checked(run)
    labels = run.labels()
    index = labels.index(label)
    embeddings, gallery_labels = run.gallery()
    paths = run.gallery_paths()
    kept = gallery_labels != index
    remap = np.array([i - (i > index) for i in range(len(labels))])
    gallery = (
        embeddings[kept],
        remap[gallery_labels[kept]],
        [path for path, keep in zip(paths, kept, strict=True) if keep],
    )
    keep = [i for i in range(len(labels)) if i != index]
    remaining = [labels[i] for i in keep]
    model = None if run.scoring == "gallery" else run.load_model()
    _rewrite(run, config, model, gallery, remaining, keep=keep)


def enroll(
    run: Run,
    name: str,
    photos: list[str | Path],
    keep_faces: bool = False,
    shown: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Add a celebrity to a finished face-network run from a few photos (or add photos to one
    it knows), without retraining the network. Recorded in ``enrolled.json``. ``shown`` maps
    a photo's file to the name the user gave it (uploads are saved under other names)."""
    started = time.perf_counter()
    config = _checked(run)
    chips, used, skipped = _faces(config, photos, shown)
    if not chips:
        problems = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped) or "no photos given"
        raise RunError(f"{name}: none of the photos holds a usable face ({problems})")
    label = add_faces(run, name, chips, used, keep_faces)
    record = {"name": label, "photos": used, "skipped": skipped, "when": now_iso()}
    history = run.read_json("enrolled.json", default=[]) or []
    atomic_write_json(run.file("enrolled.json"), [*history, record])
    seconds = time.perf_counter() - started
    log.info("enrolled %s from %d photo(s) in %.1f s", label, len(used), seconds)
    return {**record, "n_photos": len(used), "seconds": seconds}


def refit_head(
    config: TrainConfig,
    model: Any,
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    keep: list[int] | None = None,
) -> Any:
    """``model`` with a softmax head for ``n_classes`` refit on the whole gallery (the network
    is not touched), classes weighted so a few photos still count."""
    import keras
    from sklearn.utils.class_weight import compute_class_weight

    from ..learning.model import head_model, with_new_head

    keras.utils.set_random_seed(config.seed)
    model = with_new_head(model, config, n_classes, keep)
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


def enroll_uploaded(
    run: Run, name: str, files: Iterable[tuple[str, bytes]], keep_faces: bool = False
) -> dict[str, Any]:
    """Add a celebrity (or photos of one) from uploaded photos, kept on disk only meanwhile."""
    data_root().mkdir(parents=True, exist_ok=True)
    files = list(files)
    with tempfile.TemporaryDirectory(dir=data_root(), prefix=".enrol-") as tmp:
        photos = save_photos(files, Path(tmp))
        if not photos:
            raise UploadError("add at least one photo of the new celebrity")
        shown = {str(path): upload for path, (upload, _) in zip(photos, files, strict=True)}
        return enroll(run, name, [str(p) for p in photos], keep_faces, shown)

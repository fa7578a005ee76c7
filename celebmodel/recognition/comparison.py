"""Two models compared on photos both can answer, when they held out no photo in common.

Two runs of one folder with different photos per celebrity, or a trained run and the built-in
model, share no held-out photo: :func:`celebmodel.learning.evaluation.compare` has nothing to
count. Here every model identifies the same photos instead: the held-out photos of any of
them, of the people all of them know, leaving out every photo one of them learnt from (its
training or validation photos, or its gallery: the built-in model's holds LFW's photos, and a
run of an LFW folder holds them out). Each photo is read as its subject, the face the face
stage would take (:func:`celebmodel.faces.detection.subject_index`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.images import load_image
from ..errors import CelebmodelError
from ..faces.detection import Face, subject_index
from ..learning.evaluation import Comparison, predictions_metrics
from ..progress import BarFactory, quiet_bar
from ..runs.run import Run
from .recognize import Recognizer

UNKNOWN = "(unknown)"  # what a photo whose subject is not named counts as


def _key(path: str | Path) -> str:
    """A photo as ``person/file``: what a gallery and a split of the same photos share."""
    parts = Path(path).parts
    return "/".join(parts[-2:])


def _learnt(run: Run) -> set[str]:
    """The photos ``run`` learnt from, as :func:`_key` gives them."""
    if run.scoring == "gallery":
        return {_key(path) for path in run.gallery_paths()}
    split = run.split()
    return {_key(path) for path in split.loc[split["subset"] != "test", "path"]}


def shared_photos(runs: list[Run], subset: str = "test") -> pd.DataFrame:
    """``path`` and ``true`` of the photos every run in ``runs`` can answer fairly: held out by
    one of them, of a person all of them know, learnt from by none."""
    known = set.intersection(*(set(run.labels()) for run in runs))
    learnt = set().union(*(_learnt(run) for run in runs))
    rows: dict[str, str] = {}
    for run in runs:
        if run.scoring == "gallery":
            continue
        frame = run.predictions(subset)
        root = Path(run.config_dict().get("data_dir", ""))
        for path, true in zip(frame.get("path", []), frame.get("true", []), strict=True):
            if true in known and _key(path) not in learnt:
                rows.setdefault(str(root / path), true)
    return pd.DataFrame({"path": list(rows), "true": list(rows.values())})


def reidentified(runs: list[Run], subset: str = "test", bar: BarFactory = quiet_bar) -> Comparison:
    """Every run's metrics on :func:`shared_photos`, each photo identified by each run."""
    photos = shared_photos(runs, subset)
    missing = [path for path in photos["path"] if not Path(path).is_file()]
    if missing:
        raise CelebmodelError(
            f"{missing[0]}: not found ({len(missing)} held-out photos moved or removed since "
            "training)"
        )
    labels = sorted(set(photos["true"]))
    metrics = []
    with bar(desc="comparing", total=len(photos) * len(runs), unit="photo") as progress:
        for run in runs:
            recognizer = Recognizer.from_run(run)
            predicted, ranks = [], []
            for path, true in zip(photos["path"], photos["true"], strict=True):
                name, rank = _subject_answer(recognizer, load_image(path, name=path), true)
                predicted.append(name)
                ranks.append(rank)
                progress.update(1)
            frame = photos.assign(predicted=predicted, true_rank=ranks)
            metrics.append(predictions_metrics(frame, subset, labels))
    size = len(photos)
    return Comparison(runs, subset, size, [size] * len(runs), metrics, method="re-identified")


def _subject_answer(recognizer: Recognizer, image: np.ndarray, true: str) -> tuple[str, float]:
    """Who ``recognizer`` names in the photo's subject (``UNKNOWN`` if no one), and the rank of
    ``true`` among its most likely people (past them: infinity)."""
    faces = recognizer.identify(image)
    stand_ins = [Face(tuple(f["box"]), float(f.get("confidence") or 1.0), None, "") for f in faces]
    index = subject_index(stand_ins, image.shape)
    if index is None:
        return UNKNOWN, np.inf
    face = faces[index]
    likely = [candidate["label"] for candidate in face.get("top_k") or []] or [face["nearest"]]
    rank = likely.index(true) + 1 if true in likely else np.inf
    return (face["label"] if face["known"] else UNKNOWN), rank

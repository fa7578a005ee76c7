"""How good a finished run is: metrics files per subset, and strangers it must reject.

``predictions_<subset>.csv`` holds one row per photo: ``path``, ``true``, ``predicted``,
``probability`` (of the predicted person), ``true_rank`` (where the true person stands, 1 =
predicted), ``route`` and, up to :data:`celebmodel.scoring.metrics.DENSE_UP_TO` people, every
person's probability as ``p_<label>`` (beyond that the file would grow with photos x people).
``metrics_<subset>.json`` holds :func:`celebmodel.scoring.metrics.metrics_of`'s keys computed from
that file, plus the skipped photos, the overfitting verdict and, when a folder of people outside
the training set is given, ``open_set`` (strangers rejected, known faces accepted, ROC AUC).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.images import photos_under
from ..errors import DatasetError, RunError
from ..progress import BarFactory, quiet_bar
from ..runs.run import Run, load_run
from ..scoring.metrics import (
    DENSE_UP_TO,
    chance,
    metrics_of,
    open_set_metrics,
    overfitting_verdict,
    true_ranks,
)
from ..scoring.open_set import centroids_of, unknown_scores
from ..storage import atomic_write_json, atomic_write_text
from .inference import predict_inputs
from .model import takes_embeddings
from .pipeline import Inputs, prepare_inputs


def evaluate_subset(
    run: Run,
    subset: str,
    inputs: Any,
    embeddings: np.ndarray,
    probabilities: np.ndarray,
    labels: list[str],
    open_set: dict | None = None,
) -> dict:
    """Write ``metrics_<subset>.json`` and ``predictions_<subset>.csv`` for one subset."""
    skipped = inputs.records[inputs.records["crop"].isna()]
    return write_subset(
        run,
        subset,
        predictions_frame(inputs.usable, probabilities, labels),
        labels,
        [{"path": r.path, "reason": r.error or "no face found"} for r in skipped.itertuples()],
        open_set,
    )


def predictions_frame(
    usable: pd.DataFrame, probabilities: np.ndarray, labels: list[str]
) -> pd.DataFrame:
    """``predictions_<subset>.csv``'s rows (see the module's docstring) from the model's
    probabilities of the usable photos."""
    index = {label: i for i, label in enumerate(labels)}
    y_true = np.array([index.get(label, -1) for label in usable["label"]], dtype=int)
    known = y_true >= 0
    ranks = pd.array([pd.NA] * len(usable), dtype="Int64")
    if len(usable):
        ranks[known] = true_ranks(probabilities[known], y_true[known])
    frame = pd.DataFrame(
        {
            "path": usable["path"].to_numpy(),
            "true": usable["label"].to_numpy(),
            "predicted": [labels[i] for i in probabilities.argmax(axis=1)] if len(usable) else [],
            "probability": probabilities.max(axis=1) if len(usable) else [],
            "true_rank": ranks,
            "route": usable["route"].to_numpy(),
        }
    )
    if len(labels) > DENSE_UP_TO:
        return frame
    columns = pd.DataFrame(
        probabilities.reshape(len(usable), len(labels)), columns=[f"p_{x}" for x in labels]
    )
    return pd.concat([frame, columns], axis=1)


def write_subset(
    run: Run,
    subset: str,
    predictions: pd.DataFrame,
    labels: list[str],
    skipped: list[dict],
    open_set: dict | None = None,
) -> dict:
    """Write ``predictions_<subset>.csv`` and the metrics computed from it (with the photos
    ``skipped`` and the ``open_set`` figures) as ``metrics_<subset>.json``."""
    metrics = predictions_metrics(predictions, subset, labels)
    metrics["skipped"] = skipped
    if open_set:
        metrics["open_set"] = open_set
    accuracies = {s: (run.metrics(s) or {}).get("accuracy") for s in ("train", "val", "test")}
    accuracies[subset] = metrics["accuracy"]
    metrics["overfitting"] = overfitting_verdict(accuracies, chance(metrics))
    atomic_write_json(run.file(f"metrics_{subset}.json"), metrics)
    atomic_write_text(run.file(f"predictions_{subset}.csv"), predictions.to_csv(index=False))
    return metrics


def unknown_photos(folder: str | Path) -> list[str]:
    """Every image under ``folder``, any layout, as relative paths (people not in training)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder of unknown people")
    return [str(p.relative_to(folder)) for p in photos_under(folder)]


@dataclass
class OpenSetScores:
    """Unknown scores of a run's known held-out faces and of a folder of strangers."""

    known: np.ndarray
    strangers: np.ndarray
    threshold: float
    n_stranger_photos: int  # photos in the folder (some may hold no usable face)

    def metrics(self, threshold: float | None = None) -> dict:
        """Strangers rejected, known faces accepted and ROC AUC (``evaluate --unknown``)."""
        chosen = self.threshold if threshold is None else threshold
        return open_set_metrics(self.known, self.strangers, chosen)


class _Scorer:
    """A finished run loaded once: its subsets' outputs and unknown scores."""

    def __init__(self, run: Run, bar: BarFactory) -> None:
        self.run, self.bar = run, bar
        self.config = run.config()
        self.labels = run.labels()
        self.model = run.load_model()
        self.old = takes_embeddings(self.model)  # a head-only run reads flip-averaged embeddings
        gallery, gallery_labels = run.gallery()
        self.centroids = centroids_of(gallery, gallery_labels, len(self.labels))
        self.threshold = (run.read_json("calibration.json") or {}).get("threshold")

    def inputs(self, rows: pd.DataFrame, root: str | Path | None = None) -> Inputs:
        old = self.old
        return prepare_inputs(self.config, rows, self.bar, root=root, embed=old, flip=old)

    def outputs(self, inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
        return predict_inputs(self.model, self.config, inputs)

    def subset_rows(self, name: str) -> pd.DataFrame:
        split = self.config.kept(self.run.split())
        split = split[split["label"].isin(self.labels)]
        return split[split["subset"] == name]

    def stranger_inputs(self, folder: str | Path) -> Inputs:
        rows = pd.DataFrame({"path": unknown_photos(folder)})
        rows["label"] = "unknown"
        return self.inputs(rows, root=folder)

    def scores(self, inputs: Inputs) -> np.ndarray:
        return unknown_scores(*self.outputs(inputs), self.centroids)


def open_set_scores(
    run: Run, strangers: str | Path, subset: str = "test", bar: BarFactory = quiet_bar
) -> OpenSetScores:
    """Unknown scores of ``subset``'s known faces and of every photo under ``strangers`` (people
    the run never saw), with the run's calibrated threshold: what ``evaluate --unknown`` and
    the Evaluate page's strangers tab both compute."""
    scorer = _Scorer(run, bar)
    if scorer.threshold is None:
        raise RunError(f"{run.file('calibration.json')}: missing, so no threshold to test")
    both = [scorer.inputs(scorer.subset_rows(subset)), scorer.stranger_inputs(strangers)]
    scores = []
    with bar(desc="evaluating", total=len(both), unit="set") as progress:  # the network's turn
        for inputs in both:
            scores.append(scorer.scores(inputs))
            progress.update(1)
    return OpenSetScores(*scores, float(scorer.threshold), len(both[1].records))


def evaluate_run(
    run: Run,
    subset: str = "test",
    unknown_dir: str | Path | None = None,
    bar: BarFactory = quiet_bar,
) -> dict[str, dict]:
    """Evaluate a finished run on one subset (or ``all``), optionally against unknown people."""
    scorer = _Scorer(run, bar)
    strangers = None
    if unknown_dir is not None:
        strangers = scorer.scores(scorer.stranger_inputs(unknown_dir))
    results = {}
    for name in ("train", "val", "test") if subset == "all" else (subset,):
        inputs = scorer.inputs(scorer.subset_rows(name))
        embeddings, probabilities = scorer.outputs(inputs)
        open_set = None
        if strangers is not None and scorer.threshold is not None:
            known = unknown_scores(embeddings, probabilities, scorer.centroids)
            open_set = open_set_metrics(known, strangers, scorer.threshold)
        results[name] = evaluate_subset(
            run, name, inputs, embeddings, probabilities, scorer.labels, open_set
        )
    return results


def evaluate(
    run: Run | str | Path, subset: str = "test", unknown_dir: str | Path | None = None
) -> dict[str, dict]:
    """Metrics of a finished run (or its path) on ``subset`` or ``"all"``, optionally against
    a folder of strangers."""
    return evaluate_run(run if isinstance(run, Run) else load_run(run), subset, unknown_dir)


POOLED = ("val+test",)  # subsets pooled from their parts' predictions


def subset_metrics(run: Run, subset: str) -> dict | None:
    """A subset's metrics: ``metrics_<subset>.json``, or, for ``val+test``, both subsets'
    predictions pooled (twice the photos, narrower intervals), computed from the files over
    the people the run knew when it was evaluated."""
    if subset not in POOLED:
        return run.metrics(subset)
    pooled = run.predictions(subset)
    if pooled.empty:
        return None
    parts = [run.metrics(part) or {} for part in subset.split("+")]
    return predictions_metrics(pooled, subset, parts[0].get("labels") or None)


def missing_metrics_note(run: Run, subset: str) -> str:
    """Why a run shows no metrics for ``subset``, and what to do about it, in words."""
    parts = subset.split("+")
    if run.scoring == "gallery":
        return (
            f"{run.title} names people by their nearest faces in its gallery; it was not "
            "trained on a split of photos, so there are no held-out metrics per person. It is "
            "measured by the open-set identification protocol on LFW (the tab below)."
        )
    if not any(run.file(f"metrics_{name}.json").is_file() for name in ("train", "val", "test")):
        return (
            f"{run.title} has no metrics: it was never evaluated on held-out photos of the "
            "people it knows (no metrics_<subset>.json in its folder), so there is nothing per "
            "person to show. Its strangers test and downloads still work."
        )
    files = ", ".join(f"metrics_{name}.json" for name in parts)
    return (
        f"{run.title} has no metrics for these photos ({files} missing or empty): compute "
        f"them with `python -m celebmodel evaluate {run.path} --subset all`, or choose other "
        "photos above."
    )


def predictions_metrics(
    predictions: pd.DataFrame, subset: str, labels: list[str] | None = None
) -> dict:
    """The metrics of a ``predictions_<subset>.csv`` frame over ``labels`` (default: its
    ``p_<label>`` columns, the celebrities the run knew when it was evaluated); top-5 from
    ``true_rank``, or from the ``p_<label>`` columns in files written before it was kept."""
    if labels is None:
        labels = [column[2:] for column in predictions.columns if column.startswith("p_")]
    index = {label: i for i, label in enumerate(labels)}
    known = predictions[predictions["true"].isin(index)]
    y_true = known["true"].map(index).to_numpy(dtype=int)
    y_pred = known["predicted"].map(index).fillna(-1).to_numpy(dtype=int)
    ranks = (
        pd.to_numeric(known["true_rank"], errors="coerce").to_numpy(dtype=np.float64)
        if "true_rank" in known
        else np.full(len(known), np.nan)
    )
    missing = np.isnan(ranks)
    if missing.any():
        columns = known.loc[missing, [f"p_{label}" for label in labels]]
        ranks[missing] = true_ranks(columns.to_numpy(dtype=np.float64), y_true[missing])
    return {**metrics_of(y_true, y_pred, ranks, labels), "subset": subset}


@dataclass
class Comparison:
    """Two or more runs on the photos they all held out, one order everywhere."""

    runs: list[Run]
    subset: str
    common: int  # photos every run has in ``subset``
    sizes: list[int]  # each run's own number of photos in ``subset``
    metrics: list[dict]  # per run, computed on the common photos only
    # "held-out": each run's own predictions; "re-identified": every run identified the same
    # photos again (celebmodel.recognition.comparison)
    method: str = "held-out"

    @property
    def same_photos(self) -> bool:
        return all(size == self.common for size in self.sizes)

    def note(self) -> str:
        if self.method == "re-identified":
            people = len((self.metrics[0] if self.metrics else {}).get("labels") or [])
            return (
                f"Every model identified the same {self.common} {self.subset} photos again: "
                f"those of the {people} people all of them know that none of them learnt from."
            )
        if self.same_photos:
            return f"Tested on the same {self.common} {self.subset} photos."
        own = " and ".join(
            f"{n} ({run.title})" for run, n in zip(self.runs, self.sizes, strict=True)
        )
        return (
            f"Tested on different photos: {own}, {self.common} in common. The figures below "
            f"are on the {self.common} photos every run held out."
        )


def compare(runs: list[Run], subset: str = "test") -> Comparison:
    """Metrics of ``runs`` on the ``subset`` photos they all have (same dataset file, same
    subset): a photo one run trained on is never counted as held out for it."""
    frames = []
    for run in runs:
        frame = run.predictions(subset).copy()
        root = Path(run.config_dict().get("data_dir", ""))
        frame["key"] = [str(root / path) for path in frame.get("path", [])]
        frames.append(frame)
    common = set.intersection(*(set(frame["key"]) for frame in frames)) if frames else set()
    metrics = []
    for run, frame in zip(runs, frames, strict=True):
        shared = frame[frame["key"].isin(common)]
        labels = (run.metrics(subset) or {}).get("labels") or None
        metrics.append(predictions_metrics(shared, subset, labels) if len(shared) else {})
    return Comparison(runs, subset, len(common), [len(f) for f in frames], metrics)

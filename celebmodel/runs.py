"""Run directories: everything of one training in one folder, and the questions pages ask of it.

Layout: ``config.json``, ``split.csv``, ``labels.json``, ``history.csv``, ``status.json``,
``model.keras`` (only once training finished), ``log.txt``, ``metrics_<subset>.json``,
``predictions_<subset>.csv``, ``gallery.npz`` and ``calibration.json``. Files are replaced
atomically, so a reader never sees half of one, and nothing in a run is unpickled.
"""

from __future__ import annotations

import datetime as dt
import functools
import getpass
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .config import TrainConfig
from .dataset import read_split
from .errors import RunError
from .images import load_image
from .storage import atomic_write_json, now_iso, runs_root

STATES = ("queued", "running", "finished", "failed", "cancelled")
BUILTIN = "lfw-public-figures"  # the built-in model's name (celebmodel.public_figures.NAME)
ACTIVE_FILE = "active.json"  # the model the user chose, beside the runs
ACTIVE = ("queued", "running")
WORDS = ("file", "files")  # what a warning's list holds, unless it says
PHASE_TITLES = {"head": "phase 1", "fine-tune": "phase 2", "full": "training"}  # history


def prepare_root(root: str | Path | None = None) -> Path:
    """The runs folder, created when missing; a clear error when it cannot be used."""
    root = Path(root) if root else runs_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(
            f"{root}: cannot be the runs folder ({exc.strerror or exc}); "
            "set CELEBMODEL_RUNS to a folder you can write to"
        ) from exc
    return root


def new_run_dir(backbone: str, root: str | Path | None = None) -> Path:
    """Create ``<root>/<timestamp>-<backbone>``; a suffix keeps simultaneous names apart."""
    root = prepare_root(root)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", backbone)
    for attempt in range(1000):
        name = f"{stamp}-{safe}" + (f"-{attempt}" if attempt else "")
        try:
            (root / name).mkdir()
        except FileExistsError:
            continue
        return root / name
    raise RunError(f"{root}: cannot find a free run name for {stamp}-{safe}")


def pid_alive(pid: int | None) -> bool:
    """True when ``pid`` is a live process (a zombie, dead but not reaped, counts as dead)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass(frozen=True)
class Run:
    """One run directory. Reading never changes it; the training process owns the writes."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str, default: Any = None) -> Any:
        try:
            return json.loads(self.file(name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunError(f"{self.file(name)}: unreadable ({exc})") from exc

    def status(self) -> dict[str, Any]:
        """The run's state; a queued or running run whose process is gone reads as failed."""
        try:
            status = self.read_json("status.json") or {}
        except RunError as exc:
            return {"state": "failed", "error": str(exc)}
        if not isinstance(status, dict) or status.get("state") not in STATES:
            return {"state": "failed", "error": f"{self.file('status.json')}: missing or invalid"}
        if status["state"] in ACTIVE and not pid_alive(status.get("pid")):
            status = {
                **status,
                "state": "failed",
                "error": status.get("error") or "the training process ended without finishing",
            }
        return status

    @property
    def state(self) -> str:
        return self.status()["state"]

    def set_status(self, state: str, **fields: Any) -> None:
        """Record a state change (only the process that owns the run calls this)."""
        current = self.read_json("status.json", default={}) or {}
        current.update(fields, state=state, updated=now_iso())
        atomic_write_json(self.file("status.json"), current)

    def config(self) -> TrainConfig:
        return TrainConfig.load(self.file("config.json"))

    def config_dict(self) -> dict[str, Any]:
        return self.read_json("config.json", default={}) or {}

    def labels(self) -> list[str]:
        labels = self.read_json("labels.json")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise RunError(f"{self.file('labels.json')}: missing or not a list of names")
        return labels

    def history(self) -> pd.DataFrame:
        """Per-epoch history (empty frame before the first epoch ends)."""
        try:
            return pd.read_csv(self.file("history.csv"))
        except (FileNotFoundError, pd.errors.EmptyDataError):
            return pd.DataFrame()

    def metrics(self, subset: str = "test") -> dict[str, Any] | None:
        try:
            return self.read_json(f"metrics_{subset}.json")
        except RunError:
            return None

    def predictions(self, subset: str = "test") -> pd.DataFrame:
        """``predictions_<subset>.csv``; ``val+test`` pools both files."""
        frames = []
        for part in subset.split("+"):
            try:
                frames.append(pd.read_csv(self.file(f"predictions_{part}.csv")))
            except FileNotFoundError:
                return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)

    def split(self) -> pd.DataFrame:
        return read_split(self.file("split.csv"))

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.file("log.txt").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def has_model(self) -> bool:
        """A trained network (``model.keras``) or, for a gallery model, its gallery."""
        if self.scoring == "gallery":
            return self.file("gallery.npz").is_file()
        return self.file("model.keras").is_file()

    @property
    def scoring(self) -> str:
        """``"gallery"`` for a model that names people by their nearest faces (the built-in
        public-figures model and copies of it), ``"classifier"`` for a trained softmax head."""
        facts = self.config_dict().get("run") or {}
        return "gallery" if facts.get("scoring") == "gallery" else "classifier"

    @property
    def builtin(self) -> bool:
        """The read-only model shipped inside the package."""
        from .builtin_model import folder

        return self.path.resolve() == folder().resolve()

    def check_writable(self) -> None:
        """Refuse any change to the built-in model, saying how to get one that can change."""
        if self.builtin:
            raise RunError(
                f"{self.title}: built in and read-only; make your own copy (People: "
                f"\"Make my own copy\", or `celebmodel copy {BUILTIN}`) and change that"
            )

    def versions(self) -> tuple[float, ...]:
        """When the files a Recognizer reads last changed (people added or removed, a new
        threshold): the key that tells a loaded Recognizer it is out of date."""
        files = ("model.keras", "calibration.json", "labels.json", "gallery.npz", "people.json")
        return tuple(self.file(name).stat().st_mtime for name in files if self.file(name).is_file())

    def load_model(self) -> Any:
        """The finished Keras model, loaded with ``safe_mode=True`` (no code from the file runs)."""
        import keras

        if self.state != "finished" or not self.has_model():
            raise RunError(f"{self.path}: no finished model (state {self.state})")
        if self.scoring == "gallery":
            raise RunError(f"{self.title}: a gallery model has no trained network of its own; "
                           "it uses dlib's face network as shipped")
        from . import face_network  # noqa: F401 (registers the layers a dlib128 model is made of)

        try:
            return keras.models.load_model(self.file("model.keras"), compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a broken archive
            raise RunError(f"{self.file('model.keras')}: cannot load the model ({exc})") from exc

    @contextmanager
    def _gallery_file(self) -> Iterator[Any]:
        """``gallery.npz`` open (no pickle); whatever goes wrong reading it is the run's error."""
        try:
            with np.load(self.file("gallery.npz"), allow_pickle=False) as data:
                yield data
        except FileNotFoundError:
            raise RunError(f"{self.path}: no gallery.npz (train again to get one)") from None
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{self.file('gallery.npz')}: unreadable ({exc})") from exc

    def gallery(self) -> tuple[np.ndarray, np.ndarray]:
        """Training-face embeddings and their label indices, for centroids and enrolment."""
        with self._gallery_file() as data:
            return data["embeddings"].astype(np.float32), data["labels"].astype(int)

    def gallery_with_stats(
        self,
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """A gallery model's unit-length faces, their labels and each face's normalisation
        statistics (``None`` when the file has none: they are then computed)."""
        with self._gallery_file() as data:
            embeddings = data["embeddings"].astype(np.float32)
            labels = data["labels"].astype(int)
            stats = None
            if "cohort_mean" in data and "cohort_spread" in data:
                stats = (data["cohort_mean"].astype(np.float32),
                         data["cohort_spread"].astype(np.float32))
        if embeddings.ndim != 2 or len(labels) != len(embeddings) or (
            stats is not None and any(len(s) != len(labels) for s in stats)
        ):
            raise RunError(f"{self.file('gallery.npz')}: its arrays do not agree in length")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        return embeddings / np.maximum(norms, 1e-12), labels, stats

    def gallery_paths(self) -> list[str]:
        """Where each gallery face came from: a dataset photo (relative to the run's dataset),
        ``added:<file>`` for a photo given later, or ``""`` (runs from before paths were kept)."""
        with self._gallery_file() as data:
            if "paths" in data:
                return [str(path) for path in data["paths"]]
            return [""] * len(data["embeddings"])

    def write_gallery(
        self,
        embeddings: np.ndarray,
        labels: np.ndarray,
        paths: list[str] | None = None,
        stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Path:
        """Write gallery faces beside ``gallery.npz`` (plain arrays, strings as unicode, no
        pickle) and return that partial file, for the caller to rename into place with what
        goes with it. A gallery model's file also holds each face's normalisation ``stats``
        (and keeps its faces at the precision given: the built-in model's are float16)."""
        partial = self.file(".gallery.tmp.npz")
        paths = [""] * len(embeddings) if paths is None else paths
        arrays = {
            "embeddings": embeddings if stats is not None else embeddings.astype(np.float32),
            "labels": labels.astype(np.int64),
            "paths": np.asarray(paths, dtype=str),
        }
        if stats is not None:
            arrays["cohort_mean"], arrays["cohort_spread"] = stats
        np.savez(partial, **arrays)
        return partial

    def gallery_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Each gallery face's label index and source path, without reading the faces (what
        listing people needs, quick for thousands of people)."""
        with self._gallery_file() as data:
            labels = data["labels"].astype(int)
            paths = data["paths"] if "paths" in data else np.full(len(labels), "")
        return labels, np.asarray(paths, dtype=str)

    # Queries the pages ask ------------------------------------------------------------------

    def photo_path(self, path: str) -> Path:
        """A dataset photo of the run on disk (paths in run files are relative to its dataset)."""
        return Path(self.config_dict().get("data_dir", "")) / path

    def open_photo(self, path: str) -> Image.Image:
        """A dataset photo, decoded safely (raises :class:`celebmodel.errors.ImageError`)."""
        return Image.fromarray(load_image(self.photo_path(path), name=path))

    def cell_photos(self, subset: str, true: str, predicted: str) -> pd.DataFrame:
        """Predictions of ``subset`` with this true and predicted celebrity (a confusion cell)."""
        frame = self.predictions(subset)
        if frame.empty:
            return frame
        chosen = (frame["true"] == true) & (frame["predicted"] == predicted)
        return frame[chosen].reset_index(drop=True)

    def misclassified(self, subset: str = "test") -> pd.DataFrame:
        """Wrong predictions, most confident first (the most surprising mistakes on top)."""
        frame = self.predictions(subset)
        if frame.empty:
            return frame
        wrong = frame[frame["true"] != frame["predicted"]]
        return wrong.sort_values("probability", ascending=False).reset_index(drop=True)

    def several_faces(self) -> pd.DataFrame:
        """Photos where several faces were found and the central one was taken, with the box
        of the face taken (``[x, y, w, h]``; ``None`` in runs from before it was recorded)."""
        columns = ["path", "label", "subset", "n_faces", "box"]
        try:
            faces = pd.read_csv(self.file("faces.csv"), keep_default_na=False)
        except FileNotFoundError:
            return pd.DataFrame(columns=columns)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise RunError(f"{self.file('faces.csv')}: unreadable ({exc})") from exc
        chosen = faces[faces["route"] == "several"].reset_index(drop=True)
        boxes = chosen["box"] if "box" in chosen else [""] * len(chosen)
        try:
            chosen["box"] = [json.loads(b) if isinstance(b, str) and b else None for b in boxes]
        except ValueError as exc:
            raise RunError(f"{self.file('faces.csv')}: unreadable box ({exc})") from exc
        return chosen[columns]

    def accuracies(self) -> dict[str, float | None]:
        return {s: (self.metrics(s) or {}).get("accuracy") for s in ("train", "val", "test")}

    def elapsed(self) -> float | None:
        """Seconds since the run started (queued, for a training still starting), until it
        ended once it did."""
        status = self.status()
        try:
            started = dt.datetime.fromisoformat(status.get("started") or status["queued"])
        except (KeyError, TypeError, ValueError):
            return None
        ended = status.get("ended")
        end = dt.datetime.fromisoformat(ended) if ended else dt.datetime.now(started.tzinfo)
        return max(0.0, (end - started).total_seconds())

    def progress(self) -> dict[str, Any]:
        """Epochs per phase (from ``history.csv``), the most a phase may take (early stopping
        may end it sooner), and ``text``: one line a page shows under the stage, which never
        repeats the stage's own epoch counter. While the training is active it is the time
        since Start (a sign of life in every second of it), afterwards the epochs of each
        phase and how long it all took."""
        history = self.history()
        done = len(history)
        phases: dict[str, int] = {}
        if done and "phase" in history:
            phases = {str(k): int(v) for k, v in history["phase"].value_counts(sort=False).items()}
        status = self.status()
        seconds = self.elapsed()
        if status["state"] in ACTIVE:
            text = f"{duration(seconds)} since Start" if seconds is not None else ""
        else:
            counts = ", ".join(
                f"{PHASE_TITLES.get(phase, phase)}: {n}" for phase, n in phases.items()
            )
            words = f"{done} epoch{'s' if done != 1 else ''}" if done else ""
            if len(phases) > 1:
                words += f" ({counts})"
            if seconds is not None:
                words += f"{' in ' if words else 'took '}{duration(seconds)}"
            text = words
        return {
            "epochs": done,
            "phases": phases,
            "phase": str(history["phase"].iloc[-1]) if phases else None,
            "max_epochs": int(self.config_dict().get("max_epochs") or 0) or None,
            "text": text,
        }

    def stage_view(self) -> dict[str, Any] | None:
        """What a queued or running training is doing, as the Train page shows it: the bar's
        ``fraction``, its ``text`` (stage, counts, time left) and the stage ``key``; ``None``
        once the run has ended.

        Counts are the stage's own: a phase's epochs, never the run's total. Time left is
        "about" for a stage of known size, "at least" for epochs (early stopping decides how
        many) and "estimating" until the trainer could measure it.
        """
        status = self.status()
        if status["state"] not in ACTIVE:
            return None
        stage = status.get("stage")
        if not stage:
            return {"key": "starting", "fraction": 0.0, "text": "Starting the training process…"}
        done, total, unit = stage.get("done") or 0, stage.get("total"), stage.get("unit")
        words = [stage.get("name", "")]
        fraction = min(1.0, done / total) if total else 0.0
        left = stage.get("seconds_left")
        if unit == "epoch":
            words.append(f"{done:,} of at most {total:,} epochs")
            if stage.get("batches"):
                words.append(f"batch {stage.get('batch', 0)} of {stage['batches']}")
            patience, waited = stage.get("patience"), stage.get("waited") or 0
            if patience and done:
                words.append(f"{waited} of {patience} epochs without improvement")
            if left is None:
                words.append("time left: estimating")
            elif left >= 1:
                words.append(f"at least {duration(left)} left in this phase")
            elif (stage.get("least") or 0) > 1:  # quick epochs: count them, not seconds
                words.append(f"at least {stage['least']} more epochs in this phase")
            elif patience:  # one more epoch without improvement ends the phase
                words.append("early stopping may end this phase after this epoch")
            else:
                words.append("under a second left in this phase")
            if stage.get("least") is not None:  # near the end early stopping allows at least
                fraction = done / max(1, done + stage["least"])
        elif total:
            words.append(f"{done:,} of {total:,} {unit or 'step'}s")
            if done < total:
                words.append(
                    f"about {duration(left)} left" if left is not None else "time left: estimating"
                )
        elif done:
            people = stage.get("people")
            words.append(
                f"{done:,} {unit or 'item'}s" + (f" of {people:,} people" if people else "")
            )
        return {
            "key": stage.get("key"),
            "fraction": min(1.0, fraction),
            "text": " · ".join(w for w in words if w),
        }

    def phase_summary(self) -> str | None:
        """Which phase of a two-phase training was kept, in words (None for one phase)."""
        phases = self.status().get("phases") or {}
        before, after = phases.get("head"), phases.get("fine-tune")
        if before is None or after is None:
            return None
        if phases.get("kept") == "fine-tune":
            return (
                f"Phase 2 (fine-tuning) kept: it lowered the validation loss from {before:.3f} "
                f"to {after:.3f}."
            )
        return (
            f"Phase 2 (fine-tuning) did not lower the validation loss ({before:.3f} after "
            f"phase 1, {after:.3f} at best after phase 2): the phase 1 model was kept."
        )

    # What the user calls the run --------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """``meta.json``: the run's name and notes (editable at any time) and their history."""
        try:
            meta = self.read_json("meta.json", default={}) or {}
        except RunError:
            meta = {}
        return meta if isinstance(meta, dict) else {}

    @property
    def title(self) -> str:
        """The name the user gave the run, else its folder name."""
        return str(self.meta().get("name") or "").strip() or self.name

    def set_meta(self, name: str | None = None, notes: str | None = None) -> None:
        """Rename the run or change its notes (atomically, with who and when in its history)."""
        self.check_writable()
        meta = self.meta()
        change = {k: v.strip() for k, v in (("name", name), ("notes", notes)) if v is not None}
        history = [*meta.get("history", []), {**change, "by": _user(), "when": now_iso()}]
        atomic_write_json(self.file("meta.json"), {**meta, **change, "history": history})

    def set_threshold(self, threshold: float, source: str) -> None:
        """Set the unknown threshold identification uses, keeping who, when and why in the
        calibration's history (``calibration.json``, written atomically)."""
        self.check_writable()
        calibration = self.read_json("calibration.json", default={}) or {}
        entry = {
            "threshold": float(threshold),
            "previous": calibration.get("threshold"),
            "source": source,
            "by": _user(),
            "when": now_iso(),
        }
        history = [*calibration.get("history", []), entry]
        update = {"threshold": float(threshold), "history": history}
        atomic_write_json(self.file("calibration.json"), {**calibration, **update})

    def people(self) -> int | None:
        """How many people it knows now: its labels less those removed (``people.json``)."""
        try:
            labels = self.labels()
            removed = (self.read_json("people.json", default={}) or {}).get("removed") or []
        except (RunError, AttributeError):
            return None
        return len(labels) - len(set(removed) & set(labels))

    @property
    def lfw_gallery(self) -> bool:
        """Whether its gallery holds LFW's photos (the built-in model and copies of it): their
        names and the LFW site stand in for the photos, which are not shipped."""
        return bool((self.config_dict().get("run") or {}).get("builtin"))

    @property
    def copied_from(self) -> str | None:
        """The run folder this one is a copy of ("Make my own copy"), if it is one."""
        return self.meta().get("copied_from")

    def warnings(self) -> list[dict[str, Any]]:
        """What the training noticed about the dataset, grouped (``warnings.json``), each with
        ``list_title``: what its list holds, counted in its own words ("The 150 celebrities";
        groups written before they said so list files)."""
        try:
            groups = self.read_json("warnings.json", default=[]) or []
        except RunError:
            return []
        kept = []
        for group in groups:
            if isinstance(group, dict) and "title" in group:
                n = len(group.get("files") or [])
                what = group.get("what")
                one, several = what if isinstance(what, list) and len(what) == 2 else WORDS
                kept.append({**group, "list_title": f"The {n} {one if n == 1 else several}"})
        return kept

    def results(self) -> tuple[int, float | None, float | None]:
        """Epochs, best validation loss and test accuracy, read once per version of
        ``history.csv`` and ``metrics_test.json``: the runs table lists every run on every
        rerun, and a metrics file of thousands of people takes milliseconds to parse."""
        stamps = tuple(_stamp(self.file(n)) for n in ("history.csv", "metrics_test.json"))
        return _results(self.path, stamps)

    def summary(self) -> dict[str, Any]:
        """One row of the runs table, raw values (``None`` where the run does not say)."""
        config = self.config_dict()
        status = self.status()
        epochs, best_val_loss, test_accuracy = self.results()
        facts = config.get("run") or {}
        return {
            "run": self.name,
            "name": self.title,
            "state": status.get("state"),
            "dataset": config.get("data_dir"),
            "people": self.people() or facts.get("n_celebrities"),
            "photos": facts.get("n_photos"),
            "backbone": config.get("backbone"),
            "weights": config.get("weights"),
            "recipe": config.get("recipe"),
            "epochs": epochs,
            "seconds": self.elapsed(),
            "best_val_loss": best_val_loss,
            "test_accuracy": test_accuracy,
            "started": status.get("started"),
            "ended": status.get("ended"),
            "error": status.get("error"),
        }


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4096)
def _results(path: Path, stamps: tuple) -> tuple[int, float | None, float | None]:
    """:meth:`Run.results` of one version of its files (``stamps`` keys the cache)."""
    run = Run(path)
    history = run.history()
    best = float(history["val_loss"].min()) if "val_loss" in history and len(history) else None
    return len(history), best, (run.metrics("test") or {}).get("accuracy")


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Runs under ``root``, newest first (folders without ``status.json`` are not runs)."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        return []
    runs = [Run(p) for p in root.iterdir() if p.is_dir() and (p / "status.json").is_file()]
    return sorted(runs, key=lambda run: run.name, reverse=True)


def runs_table(root: str | Path | None = None) -> pd.DataFrame:
    return pd.DataFrame([run.summary() for run in list_runs(root)])


def best_run(root: str | Path | None = None) -> Run | None:
    """The newest finished run with the best test accuracy."""
    finished = finished_runs(root)
    if not finished:
        return None
    return max(finished, key=lambda run: (run.metrics("test") or {}).get("accuracy") or 0.0)


def finished_runs(root: str | Path | None = None) -> list[Run]:
    """Runs with a saved model, newest first: what can identify faces."""
    return [run for run in list_runs(root) if run.state == "finished" and run.has_model()]


def active_run(root: str | Path | None = None) -> Run | None:
    """The model the user chose (``active.json`` beside the runs), if it still exists.

    It changes only when the user picks another (:func:`choose_run`). When no model was ever
    chosen, the best finished run is chosen once and written down, so the first model ever
    trained becomes the active one and later trainings never replace it by themselves; with
    no model of the user's at all, the built-in public-figures model is used (not written
    down, so a first training still takes over).
    """
    root = Path(root) if root else runs_root()
    try:
        chosen = json.loads((root / ACTIVE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        best = best_run(root)
        if best is not None:
            choose_run(best, root)
            return best
        return builtin_run_or_none()
    except (OSError, ValueError):
        return None
    if isinstance(chosen, dict) and chosen.get("builtin"):
        return builtin_run_or_none()
    run = Run(root / str(chosen.get("run", ""))) if isinstance(chosen, dict) else None
    if run is None or not run.path.is_dir() or run.state != "finished" or not run.has_model():
        return None
    return run


def chosen_name(root: str | Path | None = None) -> str | None:
    """The run folder named in ``active.json`` (it may have been deleted since)."""
    root = Path(root) if root else runs_root()
    try:
        chosen = json.loads((root / ACTIVE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(chosen.get("run")) if isinstance(chosen, dict) and chosen.get("run") else None


def choose_run(run: Run, root: str | Path | None = None) -> None:
    """Make ``run`` the active model for every page and session, until another is chosen."""
    if run.state != "finished" or not run.has_model():
        raise RunError(f"{run.name}: no finished model to use")
    builtin = run.builtin
    root = Path(root) if root else (runs_root() if builtin else run.path.parent)
    prepare_root(root)
    choice = {"run": BUILTIN if builtin else run.name, "by": _user(), "when": now_iso()}
    atomic_write_json(root / ACTIVE_FILE, {**choice, **({"builtin": True} if builtin else {})})


def builtin_run() -> Run:
    """The built-in public-figures model, its files checked (a clear error naming a missing,
    damaged or altered file)."""
    from .builtin_model import verify

    return Run(verify())


def builtin_run_or_none() -> Run | None:
    """The built-in model when it is installed and whole, else ``None`` (the studio then
    offers to train your own; :func:`builtin_problem` says what is wrong)."""
    try:
        return builtin_run()
    except RunError:
        return None


def builtin_problem() -> str | None:
    """Why the built-in model cannot be used, or ``None`` when it can."""
    try:
        builtin_run()
    except RunError as exc:
        return str(exc)
    return None


def copy_run(run: Run, name: str | None = None, root: str | Path | None = None) -> Run:
    """A writable copy of ``run`` (the built-in model included) under the runs folder: an
    ordinary run, people can be added to it, renamed and removed."""
    from .builtin_model import copy_to_runs

    if run.state != "finished" or not run.has_model():
        raise RunError(f"{run.title}: no finished model to copy")
    title = " ".join((name or f"{run.title} (my copy)").split())
    return Run(copy_to_runs(run.path, title, prepare_root(root)))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def delete_run(run: Run) -> None:
    """Remove a run; an active one is refused so a live process keeps its folder."""
    run.check_writable()
    if run.state in ACTIVE:
        raise RunError(f"{run.name}: still {run.state}; stop it before deleting")
    shutil.rmtree(run.path)


def load_run(path: str | Path) -> Run:
    """A run directory given by the user, checked for the files a finished run must have.

    The bare name ``lfw-public-figures`` always means the built-in model, whatever folder the
    command runs in, so it means the same on every machine; a run folder of yours with that
    name is reached by its path (``runs/lfw-public-figures``, ``./lfw-public-figures``).
    """
    if str(path) == BUILTIN:
        return builtin_run()
    run = Run(Path(path).expanduser().resolve())
    if not run.path.is_dir():
        raise RunError(f"{path}: no such run directory")
    missing = [
        n for n in ("config.json", "labels.json", "status.json") if not run.file(n).is_file()
    ]
    if missing:
        raise RunError(f"{path}: not a complete run (missing {', '.join(missing)})")
    return run


TRACE_MARKERS = (
    "Traceback (most recent call last):",
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
    "At:",
)

RUN_COLUMNS = {  # summary key -> column title on the Train page
    "name": "name",
    "state": "state",  # beside the name: a narrow window still shows it
    "dataset": "dataset folder",
    "people": "people",
    "photos": "photos",
    "backbone": "backbone",
    "recipe": "recipe",
    "seconds": "duration",
    "ended": "finished",
    "best_val_loss": "val loss",
    "test_accuracy": "test accuracy",
    "error": "error",
}


def first_line(text: Any, limit: int = 300) -> str:
    """An error message's first line: stack listings stay in the log file."""
    lines = str(text or "").strip().splitlines()
    return lines[0][:limit] if lines else ""


def readable_log(text: str, limit: int = 300) -> str:
    """A training log for the page: records and messages, without traceback frames.

    Frames (indented lines) and traceback headers are dropped, progress bars keep their
    last state, and the exception line itself stays, so the cause is still named.
    """
    kept = []
    for raw in text.split("\n"):
        line = raw.rsplit("\r", 1)[-1].rstrip()
        if not line or line[0].isspace() or line.strip() in TRACE_MARKERS:
            continue
        kept.append(line[:limit])
    return "\n".join(kept)


def runs_view(table: pd.DataFrame) -> pd.DataFrame:
    """The runs table as the Train page shows it: words and local times, empty cells empty."""
    rows = []
    for row in table.to_dict("records"):
        rows.append(
            {
                "name": row.get("name") or row.get("run") or "",
                "dataset": _text(row.get("dataset")),
                "people": _count(row.get("people")),
                "photos": _count(row.get("photos")),
                "backbone": _text(row.get("backbone")),
                "recipe": _text(row.get("recipe")),
                "seconds": duration(row.get("seconds")) if _text(row.get("ended")) else "",
                "ended": local_time(row.get("ended")),
                "best_val_loss": _number(row.get("best_val_loss"), "{:.3f}"),
                "test_accuracy": _number(row.get("test_accuracy"), "{:.1%}"),
                "state": _text(row.get("state")),
                "error": first_line(_text(row.get("error"))),
            }
        )
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS)).rename(columns=RUN_COLUMNS)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def _count(value: Any) -> str:
    return "" if _missing(value) else f"{int(value):,}"


def _number(value: Any, form: str) -> str:
    return "" if _missing(value) else form.format(float(value))


def duration(seconds: float | None) -> str:
    """``3 min 05 s``, ``1 h 02 min``, ``42 s``; empty when unknown."""
    if _missing(seconds):
        return ""
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def local_time(stamp: Any) -> str:
    """An ISO time stamp as this machine's local time, ``2026-11-28 07:12``."""
    try:
        when = dt.datetime.fromisoformat(str(stamp))
    except (TypeError, ValueError):
        return ""
    return when.astimezone().strftime("%Y-%m-%d %H:%M")

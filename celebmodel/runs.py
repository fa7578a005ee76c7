"""Run directories: everything of one training in one folder, and the questions pages ask of it.

Layout: ``config.json``, ``split.csv``, ``labels.json``, ``history.csv``, ``status.json``,
``model.keras`` (only once training finished), ``log.txt``, ``metrics_<subset>.json``,
``predictions_<subset>.csv``, ``gallery.npz`` and ``calibration.json``. Files are replaced
atomically, so a reader never sees half of one, and nothing in a run is unpickled.
"""

from __future__ import annotations

import datetime as dt
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

from .backbones import BACKBONES
from .config import RECIPES, TrainConfig
from .dataset import read_split
from .errors import RunError
from .images import load_image
from .storage import atomic_write_json, now_iso, runs_root

STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE_FILE = "active.json"  # the model the user chose, beside the runs
ACTIVE = ("queued", "running")


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
        return self.file("model.keras").is_file()

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

    def gallery_paths(self) -> list[str]:
        """Where each gallery face came from: a dataset photo (relative to the run's dataset),
        ``added:<file>`` for a photo given later, or ``""`` (runs from before paths were kept)."""
        with self._gallery_file() as data:
            if "paths" in data:
                return [str(path) for path in data["paths"]]
            return [""] * len(data["embeddings"])

    def write_gallery(
        self, embeddings: np.ndarray, labels: np.ndarray, paths: list[str] | None = None
    ) -> Path:
        """Write gallery faces beside ``gallery.npz`` (plain arrays, strings as unicode, no
        pickle) and return that partial file, for the caller to rename into place with what
        goes with it."""
        partial = self.file(".gallery.tmp.npz")
        paths = [""] * len(embeddings) if paths is None else paths
        np.savez(
            partial,
            embeddings=embeddings.astype(np.float32),
            labels=labels.astype(np.int64),
            paths=np.asarray(paths, dtype=str),
        )
        return partial

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
        """Photos where several faces were found and the central one was taken."""
        try:
            faces = pd.read_csv(self.file("faces.csv"))
        except FileNotFoundError:
            return pd.DataFrame(columns=["path", "label", "subset", "n_faces"])
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise RunError(f"{self.file('faces.csv')}: unreadable ({exc})") from exc
        chosen = faces[faces["route"] == "several"]
        return chosen[["path", "label", "subset", "n_faces"]].reset_index(drop=True)

    def accuracies(self) -> dict[str, float | None]:
        return {s: (self.metrics(s) or {}).get("accuracy") for s in ("train", "val", "test")}

    def elapsed(self) -> float | None:
        """Seconds since the run started (until it ended, once it did)."""
        status = self.status()
        try:
            started = dt.datetime.fromisoformat(status["started"])
        except (KeyError, TypeError, ValueError):
            return None
        ended = status.get("ended")
        end = dt.datetime.fromisoformat(ended) if ended else dt.datetime.now(started.tzinfo)
        return max(0.0, (end - started).total_seconds())

    def progress(self) -> dict[str, Any]:
        """Epochs done, the most the run can take (early stopping may end it sooner), the phase."""
        config = self.config_dict()
        history = self.history()
        backbone = BACKBONES.get(config.get("backbone", ""))
        recipe = RECIPES.get(config.get("recipe", ""))
        fine_tune = config.get("fine_tune")
        if fine_tune is None:
            fine_tune = backbone.fine_tune if backbone else False
        phases = 2 if recipe and recipe.two_phase and fine_tune else 1
        max_epochs = int(config.get("max_epochs") or 0) * phases
        done = len(history)
        return {
            "epochs": done,
            "max_epochs": max_epochs or None,
            "fraction": min(1.0, done / max_epochs) if max_epochs else 0.0,
            "phase": str(history["phase"].iloc[-1]) if done and "phase" in history else None,
        }

    def stage_view(self) -> dict[str, Any] | None:
        """What a queued or running training is doing, as the Train page shows it: the bar's
        ``fraction``, its ``text`` (stage, counts, time left) and the stage ``key``; ``None``
        once the run has ended."""
        status = self.status()
        if status["state"] not in ACTIVE:
            return None
        stage = status.get("stage")
        if not stage:
            return {"key": "starting", "fraction": 0.0, "text": "Starting the training process…"}
        done, total, unit = stage.get("done") or 0, stage.get("total"), stage.get("unit")
        words = [stage.get("name", "")]
        if total:
            most = "at most " if unit == "epoch" else ""
            words.append(f"{done:,} of {most}{total:,} {unit or 'step'}s")
        if stage.get("batches"):
            words.append(f"batch {stage.get('batch', 0)} of {stage['batches']}")
        left = stage.get("seconds_left")
        if left is not None and total and done < total:
            words.append(f"{'at most' if unit == 'epoch' else 'about'} {duration(left)} left")
        fraction = min(1.0, done / total) if total else 0.0
        return {
            "key": stage.get("key"),
            "fraction": fraction,
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
        meta = self.meta()
        change = {k: v.strip() for k, v in (("name", name), ("notes", notes)) if v is not None}
        history = [*meta.get("history", []), {**change, "by": _user(), "when": now_iso()}]
        atomic_write_json(self.file("meta.json"), {**meta, **change, "history": history})

    def set_threshold(self, threshold: float, source: str) -> None:
        """Set the unknown threshold identification uses, keeping who, when and why in the
        calibration's history (``calibration.json``, written atomically)."""
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
        try:
            return len(self.labels())
        except RunError:
            return None

    def warnings(self) -> list[dict[str, Any]]:
        """What the training noticed about the dataset, grouped (``warnings.json``)."""
        try:
            groups = self.read_json("warnings.json", default=[]) or []
        except RunError:
            return []
        return [g for g in groups if isinstance(g, dict) and "title" in g]

    def summary(self) -> dict[str, Any]:
        """One row of the runs table, raw values (``None`` where the run does not say)."""
        config = self.config_dict()
        status = self.status()
        history = self.history()
        test = self.metrics("test") or {}
        facts = config.get("run") or {}
        return {
            "run": self.name,
            "name": self.title,
            "state": status.get("state"),
            "dataset": config.get("data_dir"),
            "people": facts.get("n_celebrities") or self.people(),
            "photos": facts.get("n_photos"),
            "backbone": config.get("backbone"),
            "weights": config.get("weights"),
            "recipe": config.get("recipe"),
            "epochs": len(history),
            "seconds": self.elapsed(),
            "best_val_loss": float(history["val_loss"].min())
            if "val_loss" in history and len(history)
            else None,
            "test_accuracy": test.get("accuracy"),
            "started": status.get("started"),
            "ended": status.get("ended"),
            "error": status.get("error"),
        }


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
    trained becomes the active one and later trainings never replace it by themselves.
    """
    root = Path(root) if root else runs_root()
    try:
        chosen = json.loads((root / ACTIVE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        best = best_run(root)
        if best is not None:
            choose_run(best, root)
        return best
    except (OSError, ValueError):
        return None
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
    root = Path(root) if root else run.path.parent
    atomic_write_json(root / ACTIVE_FILE, {"run": run.name, "by": _user(), "when": now_iso()})


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def delete_run(run: Run) -> None:
    """Remove a run; an active one is refused so a live process keeps its folder."""
    if run.state in ACTIVE:
        raise RunError(f"{run.name}: still {run.state}; stop it before deleting")
    shutil.rmtree(run.path)


def load_run(path: str | Path) -> Run:
    """A run directory given by the user, checked for the files a finished run must have."""
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
    "dataset": "dataset folder",
    "people": "people",
    "photos": "photos",
    "backbone": "backbone",
    "recipe": "recipe",
    "seconds": "duration",
    "ended": "finished",
    "best_val_loss": "val loss",
    "test_accuracy": "test accuracy",
    "state": "state",
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

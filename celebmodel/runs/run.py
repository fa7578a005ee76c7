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

from ..config import TrainConfig
from ..data.dataset import read_split
from ..errors import RunError
from ..data.images import load_image
from ..vectors import l2_normalize
from ..storage import atomic_file, atomic_write_json, data_root, now_iso, runs_root

STATES = ("queued", "running", "finished", "failed", "cancelled")
BUILTIN = "lfw-public-figures"  # the built-in model's name (public_figures.NAME)
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
        from .builtin import folder

        return self.path.resolve() == folder().resolve()

    @property
    def embeddings_id(self) -> str:
        """What files of its faces' embeddings (an album's groups) are recorded against: the
        model's name and, unless dlib128 (the one network before there was a choice, so older
        files still match), its network: faces of two networks are never compared."""
        backbone = str(self.config_dict().get("backbone") or "dlib128")
        return self.name if backbone == "dlib128" else f"{self.name} ({backbone})"

    @property
    def user_files(self) -> Path:
        """Where the user's own files about this model go (albums and their groups): the run
        folder, or for the read-only built-in model a folder of the user's data folder keyed
        by the model, so that nothing of the user's is ever written inside the package."""
        return data_root() / "models" / self.name if self.builtin else self.path

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
                           f"it uses the {self.config_dict().get('backbone')} face network as "
                           "shipped")
        from ..faces import dlib_resnet  # noqa: F401 (registers the layers of dlib128 models)

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
        return l2_normalize(embeddings), labels, stats

    def gallery_paths(self) -> list[str]:
        """Where each gallery face came from: a dataset photo (relative to the run's dataset),
        ``added:<file>`` for a photo given later, or ``""`` (runs from before paths were kept)."""
        with self._gallery_file() as data:
            if "paths" in data:
                return [str(path) for path in data["paths"]]
            return [""] * len(data["embeddings"])

    @staticmethod
    def write_gallery(
        target: Path,
        embeddings: np.ndarray,
        labels: np.ndarray,
        paths: list[str] | None = None,
        stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Write gallery faces to ``target`` (a temporary file of :func:`atomic_files`, so it
        is renamed into place with what goes with it): plain arrays, strings as unicode, no
        pickle. A gallery model's file also holds each face's normalisation ``stats`` (and
        keeps its faces at the precision given: the built-in model's are float16)."""
        paths = [""] * len(embeddings) if paths is None else paths
        arrays = {
            "embeddings": embeddings if stats is not None else embeddings.astype(np.float32),
            "labels": labels.astype(np.int64),
            "paths": np.asarray(paths, dtype=str),
        }
        if stats is not None:
            arrays["cohort_mean"], arrays["cohort_spread"] = stats
        np.savez(target, **arrays)

    def save_gallery(
        self, embeddings: np.ndarray, labels: np.ndarray, paths: list[str] | None = None
    ) -> None:
        """Training-face embeddings and the photos they came from, written atomically."""
        with atomic_file(self.file("gallery.npz")) as temp:
            self.write_gallery(temp, embeddings, labels, paths)

    def gallery_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Each gallery face's label index and source path, without reading the faces (what
        listing people needs, quick for thousands of people)."""
        with self._gallery_file() as data:
            labels = data["labels"].astype(int)
            paths = data["paths"] if "paths" in data else np.full(len(labels), "")
        return labels, np.asarray(paths, dtype=str)

    # Its dataset's photos ------------------------------------------------------------------

    def photo_path(self, path: str) -> Path:
        """A dataset photo of the run on disk (paths in run files are relative to its dataset)."""
        return Path(self.config_dict().get("data_dir", "")) / path

    def open_photo(self, path: str) -> Image.Image:
        """A dataset photo, decoded safely (raises :class:`celebmodel.errors.ImageError`)."""
        return Image.fromarray(load_image(self.photo_path(path), name=path))

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
        """The name the user gave the run, else what it is: its dataset folder, its people, its
        network and when it started (``lfw · 8 people · dlib128 · 7 Dec 15:21``; the time tells
        two such runs apart), or its folder name before it knows them."""
        given = str(self.meta().get("name") or "").strip()
        if given:
            return given
        config = self.config_dict()
        data, backbone = Path(str(config.get("data_dir") or "")).name, config.get("backbone")
        if not (data and backbone):
            return self.name
        people = self.people()  # known once the dataset is split
        counted = f"{people:,} {'person' if people == 1 else 'people'} · " if people else ""
        words = f"{data} · {counted}{backbone}"
        started = re.match(r"(\d{8}-\d{6})", self.name)
        if started:
            when = dt.datetime.strptime(started.group(1), "%Y%m%d-%H%M%S")
            words += f" · {when.day} {when:%b %H:%M}"
        return words

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

def list_runs(root: str | Path | None = None) -> list[Run]:
    """Runs under ``root``, newest first (folders without ``status.json`` are not runs)."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        return []
    runs = [Run(p) for p in root.iterdir() if p.is_dir() and (p / "status.json").is_file()]
    return sorted(runs, key=lambda run: run.name, reverse=True)


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
    from .builtin import verify

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
    from .builtin import copy_to_runs

    if run.state != "finished" or not run.has_model():
        raise RunError(f"{run.title}: no finished model to copy")
    title = " ".join((name or f"My {run.title}").split())  # short: it fits the sidebar
    return Run(copy_to_runs(run.path, title, prepare_root(root)))


def own_copy(run: Run, root: str | Path | None = None) -> Run | None:
    """The user's newest finished copy of ``run`` (the built-in model), if there is one:
    naming someone on the built-in model adds them there rather than making another copy."""
    copies = [other for other in list_runs(root) if other.copied_from == str(run.path)
              and other.state == "finished" and other.has_model()]
    return max(copies, key=lambda other: other.name, default=None)


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



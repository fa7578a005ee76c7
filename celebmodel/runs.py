"""Run directories: everything of one training in one folder, readable by another process.

Layout: ``config.json``, ``split.csv``, ``labels.json``, ``history.csv``, ``status.json``,
``model.keras`` (only once training finished), ``log.txt``, ``metrics_<subset>.json``,
``predictions_<subset>.csv``, ``gallery.npz`` and ``calibration.json``. Files are replaced
atomically, so a reader never sees half of one, and nothing in a run is unpickled.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE = ("queued", "running")


class RunError(RuntimeError):
    """A run that cannot be used; the message names the run and what is wrong."""


def runs_root() -> Path:
    """``$CELEBMODEL_RUNS`` or ``runs/`` under the working directory."""
    return Path(os.environ.get("CELEBMODEL_RUNS", "runs")).expanduser().resolve()


def data_root() -> Path:
    """The app's data folder (uploads, datasets, caches): ``$CELEBMODEL_DATA`` or ``data/``."""
    return Path(os.environ.get("CELEBMODEL_DATA", "data")).expanduser().resolve()


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the run from another user's app
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_together(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each ``(temporary, target)`` pair into place; if one rename fails, the targets
    already replaced get their old files back, so the set changes together or not at all."""
    backups: dict[Path, Path] = {}  # target -> hard link to its previous file
    replaced: list[Path] = []
    try:
        for source, target in pairs:
            if target.exists():
                backups[target] = target.with_name(f".{target.name}.previous")
                backups[target].unlink(missing_ok=True)
                os.link(target, backups[target])
            os.replace(source, target)
            replaced.append(target)
    except BaseException:
        for target in reversed(replaced):
            if target in backups:
                os.replace(backups[target], target)
        raise
    finally:
        for backup in backups.values():
            backup.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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

    def config(self) -> Any:
        from .config import TrainConfig

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
        try:
            return pd.read_csv(self.file(f"predictions_{subset}.csv"))
        except FileNotFoundError:
            return pd.DataFrame()

    def split(self) -> pd.DataFrame:
        from .data import read_split

        return read_split(self.file("split.csv"))

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.file("log.txt").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def has_model(self) -> bool:
        return self.file("model.keras").is_file()

    def load_model(self) -> Any:
        """The finished Keras model, loaded with ``safe_mode=True`` (no code from the file runs)."""
        import keras

        if self.state != "finished" or not self.has_model():
            raise RunError(f"{self.path}: no finished model (state {self.state})")
        try:
            return keras.models.load_model(self.file("model.keras"), compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a broken archive
            raise RunError(f"{self.file('model.keras')}: cannot load the model ({exc})") from exc

    def gallery(self) -> tuple[np.ndarray, np.ndarray]:
        """Training-face embeddings and their label indices, for centroids and enrolment."""
        try:
            with np.load(self.file("gallery.npz"), allow_pickle=False) as data:
                return data["embeddings"].astype(np.float32), data["labels"].astype(int)
        except FileNotFoundError:
            raise RunError(f"{self.path}: no gallery.npz (train again to get one)") from None
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"{self.file('gallery.npz')}: unreadable ({exc})") from exc

    def summary(self) -> dict[str, Any]:
        """One row of the runs table."""
        config = self.config_dict()
        status = self.status()
        history = self.history()
        test = self.metrics("test") or {}
        return {
            "run": self.name,
            "state": status.get("state"),
            "backbone": config.get("backbone"),
            "weights": config.get("weights"),
            "recipe": config.get("recipe"),
            "faces": config.get("faces"),
            "epochs": len(history),
            "best_val_loss": float(history["val_loss"].min())
            if "val_loss" in history and len(history)
            else None,
            "test_accuracy": test.get("accuracy"),
            "started": status.get("started"),
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
    """The newest finished run with the best test accuracy: the app's preselected model."""
    finished = [run for run in list_runs(root) if run.state == "finished" and run.has_model()]
    if not finished:
        return None
    return max(finished, key=lambda run: (run.metrics("test") or {}).get("accuracy") or 0.0)


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

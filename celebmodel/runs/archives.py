"""A whole run as one zip, and a run zip brought back: to share a model with its evidence.

An imported zip passes the same guards as an uploaded dataset (entry count, sizes, names that
would escape, links, encryption, zip bombs), only run files are unpacked, and the run is
checked as the app will use it before it appears: its model loads with ``safe_mode=True``, its
gallery without pickle, its labels match the model. Anything else is refused, and nothing is
left behind.
"""

from __future__ import annotations

import fnmatch
import io
import zipfile
from pathlib import Path
from typing import IO, Any

from ..errors import CelebmodelError, UploadError
from .run import Run, load_run
from ..data.sources import Limits, plan_zip, unpack
from ..storage import runs_root

RUN_FILES = (  # what a run folder holds that is worth sharing (no lock, no process output)
    "config.json",
    "labels.json",
    "status.json",
    "meta.json",
    "split.csv",
    "history.csv",
    "log.txt",
    "faces.csv",
    "warnings.json",
    "calibration.json",
    "gallery.npz",
    "enrolled.json",
    "model.keras",
    "metrics_*.json",
    "predictions_*.csv",
)
RUN_LIMITS = Limits(entries=200, total_bytes=4 * 1024**3, file_bytes=2 * 1024**3)


def is_run_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FILES)


def run_zip(run: Run) -> bytes:
    """The run's files in one zip, under a folder named after the run."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(run.path.iterdir()):
            if path.is_file() and not path.is_symlink() and is_run_file(path.name):
                archive.write(path, f"{run.name}/{path.name}")
    return buffer.getvalue()


def _plan_run(archive: zipfile.ZipFile, label: str, limits: Limits) -> list[tuple[Any, tuple]]:
    """The run files of a zip: at its top level or in one folder (as :func:`run_zip` writes)."""

    def keep(parts: tuple[str, ...]) -> bool:
        return len(parts) <= 2 and is_run_file(parts[-1])

    files = plan_zip(archive, label, limits, keep=keep, noun="file")
    tops = {parts[0] for _, parts in files if len(parts) == 2}
    if len(tops) > 1 or (tops and any(len(parts) == 1 for _, parts in files)):
        raise UploadError(f"{label}: holds more than one run; export and import runs one by one")
    files = [(info, parts[-1:]) for info, parts in files]
    names = {parts[0] for _, parts in files}
    missing = [
        n for n in ("config.json", "labels.json", "status.json", "model.keras") if n not in names
    ]
    if missing:
        raise UploadError(f"{label}: not a run zip (missing {', '.join(missing)})")
    return files


def import_run(
    source: bytes | str | Path | IO[bytes], filename: str, root: str | Path | None = None
) -> Run:
    """Bring a run zip back as a new run folder under the runs folder; refuse it, leaving
    nothing behind, unless it holds a finished run the app can load safely."""
    label = Path(filename).name or "run.zip"

    def usable(folder: Path) -> None:
        try:
            run = load_run(folder)
            if run.state != "finished":
                raise UploadError(f"{label}: the run is {run.state}, not finished")
            model = run.load_model()  # safe_mode=True: no code from the file runs
            if int(model.output.shape[-1]) != len(run.labels()):
                raise UploadError(f"{label}: the model and labels.json name different people")
            run.gallery()  # plain arrays, never unpickled
            run.config()  # every setting known and well typed
        except UploadError:
            raise
        except CelebmodelError as exc:
            raise UploadError(f"{label}: not a usable run ({exc})") from exc

    root = Path(root) if root else runs_root()
    return Run(unpack(source, filename, root, _plan_run, RUN_LIMITS, check=usable))

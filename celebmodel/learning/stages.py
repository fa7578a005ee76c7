"""What a training is doing now, for whoever watches it: its stage, done/total and time left.

The trainer's progress bars are tqdm bars whose refreshes (throttled by tqdm to one a second)
also write the stage into the run's ``status.json``; epochs report through a Keras callback
(:class:`celebmodel.learning.estimator.EpochReporter`) the same way. So the console and the
Train page show the same counts, and no stage sits silent. Nothing here imports TensorFlow: a
training process records its first stage ("Importing TensorFlow") before that import starts.
"""

from __future__ import annotations

import io
import signal
import time
from typing import Any

from tqdm.auto import tqdm

from ..errors import Cancelled
from ..runs.run import Run
from ..storage import atomic_write_json

STAGES = {  # key -> what the page calls it
    "starting": "Importing TensorFlow",
    "scanning": "Scanning the dataset",
    "faces": "Finding faces",
    "embeddings": "Computing face embeddings",
    "phase 1": "Phase 1: training the head",
    "phase 2": "Phase 2: fine-tuning",
    "training": "Training the whole network",
    "evaluating": "Evaluating",
    "mirroring": "Measuring the gallery's mirror images (to group unknown faces)",
    "saving": "Saving the model",
    "comparing": "Identifying the photos both models can answer again",
}
REPORT_EVERY = 1.0  # seconds between two writes of status.json
ESTIMATE_AFTER = 2.0  # seconds of a stage before its time left is estimated from its rate

class _Stop:
    """SIGTERM handling that never raises where it lands.

    The handler only records the request; the training raises :class:`Cancelled` at its own
    safe points: each stage's start and each step of a stage's bar (:class:`Stages`), and
    the next batch of ``fit`` (the estimator's ``StopOnRequest``). An exception raised from a
    handler lands wherever the main thread is: inside TensorFlow (where AutoGraph swallows it
    or pybind11 wraps it) or inside the import machinery's lock, whose other waiter, the
    thread importing TensorFlow, then never wakes.
    It lives here, not beside the estimator, so it is in place before TensorFlow is imported.
    """

    requested: str | None = None

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        cls.requested = f"stopped by signal {signal.Signals(signum).name}"

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise Cancelled(cls.requested)


class Stages:
    """The stages of one run's training, recorded in its ``status.json`` as ``stage``.

    Parameters
    ----------
    run : Run
        The run whose status is written (only its training process calls this).
    console : bool
        Also draw the bars on standard error (the command line); else they draw nowhere.
    """

    def __init__(self, run: Run, console: bool = False) -> None:
        self.run = run
        self.console = console
        self._last = 0.0
        self._warnings: list[dict[str, Any]] = []

    def warn(
        self, title: str, files: list[str] | None = None, what: tuple[str, str] = ("file", "files")
    ) -> None:
        """Add a group to the run's ``warnings.json`` (what the page shows as alerts):
        ``files`` lists what it is about, ``what`` calls one and several of them (a list of
        celebrities is not "150 file(s)")."""
        group = {"title": title, "files": list(files or []), "what": list(what)}
        self._warnings.append(group)
        atomic_write_json(self.run.file("warnings.json"), self._warnings)

    def enter(self, key: str, done: int = 0, total: int | None = None, **extra: Any) -> None:
        """Record the start of a stage (or new counts in it) right away; a stop requested
        since the last one ends the training here."""
        _Stop.check()
        self._write(key, done, total, None, extra, force=True)

    def report(
        self,
        key: str,
        done: int,
        total: int | None,
        seconds_left: float | None,
        force: bool = False,
        **extra: Any,
    ) -> None:
        """Record counts, at most once per :data:`REPORT_EVERY` unless ``force``."""
        self._write(key, done, total, seconds_left, extra, force)

    def _write(
        self,
        key: str,
        done: int,
        total: int | None,
        seconds_left: float | None,
        extra: dict[str, Any],
        force: bool,
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last < REPORT_EVERY:
            return
        self._last = now
        stage = {"key": key, "name": STAGES[key], "done": int(done), "total": total}
        if seconds_left is not None:
            stage["seconds_left"] = round(float(seconds_left), 1)
        self.run.set_status("running", stage={**stage, **extra})

    def bar(self, desc: str, total: int, unit: str = "photo", **options: Any) -> tqdm:
        """A tqdm bar for stage ``desc`` (a key of :data:`STAGES`) that records itself."""
        stages = self
        stream = None if self.console else io.StringIO()

        class StageBar(tqdm):
            def update(self, n: float | None = 1) -> bool | None:
                _Stop.check()  # each step is a point where a stop can end the training
                return super().update(n)

            def display(self, msg: str | None = None, pos: int | None = None) -> bool:
                if stream is None:
                    super().display(msg, pos)
                stages.report(desc, self.n, self.total, self.seconds_left(), unit=unit)
                return True

            def seconds_left(self) -> float | None:
                """From the rate so far, once the stage has run long enough for it to mean
                something (``None``: the page says "estimating")."""
                info = self.format_dict
                if not self.total or self.n < 1 or info["elapsed"] < ESTIMATE_AFTER:
                    return None
                rate = info["rate"] or info["n"] / info["elapsed"]  # the average (no smoothing)
                return (self.total - self.n) / rate

            def close(self) -> None:
                if not self.disable:
                    stages.report(desc, self.n, self.total, 0.0, force=True, unit=unit)
                super().close()

        self.enter(desc, 0, total, unit=unit)
        return StageBar(
            total=total,
            desc=desc,
            unit=unit,
            file=stream,
            mininterval=REPORT_EVERY,
            smoothing=0,
            **options,
        )

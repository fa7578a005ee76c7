"""What a training is doing now, for whoever watches it: its stage, done/total and time left.

The trainer's progress bars are tqdm bars whose refreshes (throttled by tqdm to one a second)
also write the stage into the run's ``status.json``; epochs report through a Keras callback the
same way. So the console and the Train page show the same counts, and no stage sits silent.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import keras
from tqdm.auto import tqdm

from .runs import Run
from .storage import atomic_write_json

STAGES = {  # key -> what the page calls it
    "scanning": "Scanning the dataset",
    "faces": "Finding faces",
    "embeddings": "Computing face embeddings",
    "phase 1": "Phase 1: training the head",
    "phase 2": "Phase 2: fine-tuning",
    "training": "Training the whole network",
    "evaluating": "Evaluating",
    "saving": "Saving the model",
}
REPORT_EVERY = 1.0  # seconds between two writes of status.json

BarFactory = Callable[..., Any]  # (desc=stage key, total=..., unit=...) -> a tqdm bar


def quiet_bar(**options: Any) -> tqdm:
    """A bar that shows and records nothing (library calls without a run to report to)."""
    return tqdm(disable=True, **options)


def console_bar(**options: Any) -> tqdm:
    """A bar on standard error only (the command line's ``evaluate``)."""
    return tqdm(**options)


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

    def warn(self, title: str, files: list[str] | None = None) -> None:
        """Add a group to the run's ``warnings.json`` (what the page shows as alerts)."""
        self._warnings.append({"title": title, "files": list(files or [])})
        atomic_write_json(self.run.file("warnings.json"), self._warnings)

    def enter(self, key: str, done: int = 0, total: int | None = None, **extra: Any) -> None:
        """Record the start of a stage (or new counts in it) right away."""
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
            def display(self, msg: str | None = None, pos: int | None = None) -> bool:
                if stream is None:
                    super().display(msg, pos)
                rate = self.format_dict.get("rate")
                left = (self.total - self.n) / rate if rate and self.total else None
                stages.report(desc, self.n, self.total, left, unit=unit)
                return True

            def close(self) -> None:
                if not self.disable:
                    stages.report(desc, self.n, self.total, 0.0, force=True, unit=unit)
                super().close()

        self.enter(desc, 0, total, unit=unit)
        return StageBar(
            total=total, desc=desc, unit=unit, file=stream, mininterval=REPORT_EVERY, **options
        )

    def epochs(self, key: str, max_epochs: int) -> keras.callbacks.Callback:
        """A Keras callback recording epochs (and batches of the current epoch) of a phase."""
        return EpochReporter(self, key, max_epochs)


class EpochReporter(keras.callbacks.Callback):
    """Epoch ``done`` of at most ``total``, the batch within it, and time left at most."""

    def __init__(self, stages: Stages, key: str, max_epochs: int) -> None:
        super().__init__()
        self.stages, self.key, self.max_epochs = stages, key, max_epochs
        self.epoch_seconds: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.stages.enter(self.key, 0, self.max_epochs, unit="epoch")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        steps = self.params.get("steps")
        done = len(self.epoch_seconds)
        per_epoch = self._per_epoch(batch + 1, steps)
        left = per_epoch * (self.max_epochs - done) - (time.monotonic() - self.started)
        self.stages.report(
            self.key,
            done,
            self.max_epochs,
            max(0.0, left),
            unit="epoch",
            batch=batch + 1,
            batches=steps,
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_seconds.append(time.monotonic() - self.started)
        done = len(self.epoch_seconds)
        left = self._per_epoch(None, None) * (self.max_epochs - done)
        self.stages.report(self.key, done, self.max_epochs, left, force=True, unit="epoch")

    def _per_epoch(self, batches_done: int | None, steps: int | None) -> float:
        """Seconds an epoch takes: measured once one has ended, else from the first batches."""
        if self.epoch_seconds:
            return sum(self.epoch_seconds) / len(self.epoch_seconds)
        if batches_done and steps:
            return (time.monotonic() - self.started) / batches_done * steps
        return 0.0

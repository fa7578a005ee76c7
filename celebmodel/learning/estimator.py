"""The estimator: a backbone with a softmax head, fitted by a recipe (scikit-learn style).

:class:`CelebrityClassifier` takes its settings in the constructor, ``fit`` returns ``self``
and learned state ends in ``_``. Keras callbacks do the rest: early stopping on the validation
loss, the per-epoch history (with phase, learning rate and seconds), stopping on request and
the progress a watcher sees (:class:`EpochReporter`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from ..backbones import get_backbone
from ..config import RECIPES, TrainConfig
from ..faces.network import set_trainable
from .model import augmentation, build_model, head_model
from .pipeline import Inputs, model_dataset
from .stages import Stages, _Stop

log = logging.getLogger("celebmodel")
PHASE_STAGES = {"head": "phase 1", "fine-tune": "phase 2", "full": "training"}  # progress keys


class StopOnRequest(keras.callbacks.Callback):
    """Ends ``fit`` at the next batch once a stop was requested."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if _Stop.requested:
            self.model.stop_training = True


class EpochReporter(keras.callbacks.Callback):
    """One phase's epochs as a watcher sees them: epochs done of at most ``max_epochs``, the
    batch within the current one, epochs without improvement of ``patience``, and a time
    left that is never absurd.

    Early stopping may end a phase long before ``max_epochs``, so the time left is a lower
    bound: the epochs early stopping needs at the least (``patience`` minus the epochs since
    the best validation loss; one more before the first epoch) at the measured time per
    epoch. Until an epoch's time can be measured (an epoch ended, or a few batches of the
    first), none is given and the page says "estimating".
    """

    def __init__(
        self, stages: Stages, key: str, max_epochs: int, early: keras.callbacks.EarlyStopping
    ) -> None:
        super().__init__()
        self.stages, self.key = stages, key
        self.max_epochs, self.early = max_epochs, early  # early stopping counts the epochs
        self.patience = early.patience
        self.epoch_seconds: list[float] = []

    @property
    def waited(self) -> int:
        """Epochs since the best validation loss, as early stopping counts them (it runs
        before this callback, so at an epoch's end it has counted that epoch)."""
        return int(getattr(self.early, "wait", 0) or 0)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.stages.enter(self.key, 0, self.max_epochs, **self._counts())

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        steps = self.params.get("steps")
        self._report(batch + 1, steps, force=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_seconds.append(time.monotonic() - self.started)
        self._report(None, None, force=True)

    def epochs_left(self) -> int:
        """The fewest epochs this phase can still take (early stopping's patience)."""
        done = len(self.epoch_seconds)
        least = self.patience + 1 if done == 0 else self.patience - self.waited
        return max(0, min(least, self.max_epochs - done))

    def _counts(self) -> dict[str, Any]:
        return {
            "unit": "epoch",
            "patience": self.patience,
            "waited": self.waited,
            "least": self.epochs_left(),
        }

    def _report(self, batches_done: int | None, steps: int | None, force: bool) -> None:
        done = len(self.epoch_seconds)
        per_epoch = self._per_epoch(batches_done, steps)
        left = None
        if per_epoch is not None:
            into = time.monotonic() - self.started if batches_done else 0.0
            left = max(0.0, per_epoch * self.epochs_left() - into)
        extra = self._counts()
        if batches_done:
            extra.update(batch=batches_done, batches=steps)
        self.stages.report(self.key, done, self.max_epochs, left, force=force, **extra)

    def _per_epoch(self, batches_done: int | None, steps: int | None) -> float | None:
        """Seconds an epoch takes: measured once one has ended, else from the first batches
        (a fifth of them at least, to leave out the first batch's tracing)."""
        if self.epoch_seconds:
            return sum(self.epoch_seconds) / len(self.epoch_seconds)
        if batches_done and steps and batches_done >= max(2, steps / 5):
            return (time.monotonic() - self.started) / batches_done * steps
        return None


class BatchCounter(keras.callbacks.Callback):
    """Moves a progress bar by the photos of each batch ``predict`` finishes (evaluation
    progress that moves while a subset is predicted, not once per subset)."""

    def __init__(self, bar: Any, batch_size: int, photos: int) -> None:
        super().__init__()
        self.bar, self.batch_size, self.left = bar, batch_size, photos

    def on_predict_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = min(self.batch_size, self.left)
        self.left -= step
        self.bar.update(step)


class HistoryWriter(keras.callbacks.Callback):
    """Adds phase, learning rate and seconds to each epoch's logs before ``CSVLogger`` runs."""

    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase = phase

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        logs["phase"] = self.phase
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        logs["seconds"] = round(time.perf_counter() - self.started, 2)
        log.info(
            "epoch %d (%s): loss %.4f accuracy %.4f val_loss %.4f val_accuracy %.4f",
            epoch + 1,
            self.phase,
            *(logs.get(k, float("nan")) for k in ("loss", "accuracy", "val_loss", "val_accuracy")),
        )


class CelebrityClassifier:
    """A backbone with a softmax head, fitted by the recipe named in ``config``.

    Parameters
    ----------
    config : TrainConfig
        Resolved settings (see :meth:`TrainConfig.resolved`).
    history_file : path, optional
        ``CSVLogger`` target, appended to after every epoch of either phase.
    stages : Stages, optional
        Where each phase's epochs are reported (an :class:`EpochReporter` per phase).

    Attributes
    ----------
    model_ : keras.Model
    classes_ : list of str
    history_ : pandas.DataFrame
        One row per epoch with its phase.
    phases_ : dict
        Best validation loss of each phase and the phase whose weights were kept.
    """

    def __init__(
        self,
        config: TrainConfig,
        history_file: str | Path | None = None,
        stages: Stages | None = None,
    ) -> None:
        self.config = config
        self.history_file = history_file
        self.stages = stages

    def _callbacks(self, phase: str) -> list[Any]:
        early = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=self.config.patience, restore_best_weights=True
        )
        callbacks = [
            early,
            HistoryWriter(phase),
            StopOnRequest(),
        ]
        if self.history_file:
            callbacks.append(keras.callbacks.CSVLogger(str(self.history_file), append=True))
        if self.stages is not None:
            stage = PHASE_STAGES[phase] if RECIPES[self.config.recipe].two_phase else "training"
            callbacks.append(
                EpochReporter(self.stages, stage, self.config.max_epochs, early)
            )
        return callbacks

    def _fit_phase(
        self, model: Any, phase: str, train: Any, val: Any, learning_rate: float
    ) -> float:
        """Fit one phase, early-stopped on ``val``; returns its best validation loss."""
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        start = len(self.history_)
        result = model.fit(
            train,
            validation_data=val,
            epochs=start + self.config.max_epochs,
            initial_epoch=start,
            callbacks=self._callbacks(phase),
            shuffle=False,  # tf.data shuffles, seeded
            verbose=0,
        )
        _Stop.check()
        rows = pd.DataFrame(result.history)
        rows.insert(0, "epoch", range(start, start + len(rows)))
        self.history_ = pd.concat([self.history_, rows], ignore_index=True)
        best = float(rows["val_loss"].min()) if "val_loss" in rows and len(rows) else np.inf
        self.phases_[phase] = best
        self.phases_["kept"] = phase
        return best

    def fit(self, train: Inputs, val: Inputs, classes: list[str]) -> CelebrityClassifier:
        """Train on the prepared ``train`` photos, early-stopped on ``val``.

        The improved recipe first trains the head on the frozen base (for a face network: on
        its cached embeddings), then unfreezes the top of the base and fine-tunes at a low
        learning rate. A face network keeps that second phase only if it lowers the
        validation loss. The classic recipe trains the whole network at once.
        """
        keras.utils.set_random_seed(self.config.seed)
        recipe = RECIPES[self.config.recipe]
        backbone = get_backbone(self.config.backbone)
        self.classes_ = list(classes)
        self.model_, base = build_model(self.config, len(classes))
        self.history_ = pd.DataFrame()
        self.phases_: dict[str, Any] = {}
        index = {label: i for i, label in enumerate(classes)}

        def data(inputs: Inputs, training: bool = False, **options: Any) -> Any:
            return model_dataset(self.config, inputs, index, training=training, **options)

        augment = augmentation(self.config) if self.config.augment else None
        rate, fine_rate = self.config.learning_rate, self.config.fine_tune_learning_rate
        if not recipe.two_phase:
            if backbone.kind == "embedding":
                set_trainable(base, None)
            self._fit_phase(
                self.model_, "full", data(train, True, augment=augment), data(val), rate
            )
        elif backbone.kind == "embedding":
            self._fit_phase(
                head_model(self.model_),
                "head",
                data(train, True, features=True),
                data(val, features=True),
                rate,
            )
            if self.config.fine_tune:
                before = self.model_.get_weights()
                set_trainable(base, backbone.fine_tune_from)
                train_chips = data(train, True, augment=augment)
                self._fit_phase(self.model_, "fine-tune", train_chips, data(val), fine_rate)
                if not self._keep_fine_tune():
                    self.model_.set_weights(before)
                    self.phases_["kept"] = "head"
        else:
            train_images, val_images = data(train, True, augment=augment), data(val)
            self._fit_phase(self.model_, "head", train_images, val_images, rate)
            if not self.config.fine_tune:
                return self
            set_trainable(base, backbone.fine_tune_from)
            self._fit_phase(self.model_, "fine-tune", train_images, val_images, fine_rate)
        return self

    def _keep_fine_tune(self) -> bool:
        """A face network keeps phase 2 only if it lowered the validation loss."""
        return self.phases_["fine-tune"] < self.phases_["head"]

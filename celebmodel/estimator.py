"""The estimator: a backbone with a softmax head, fitted by a recipe (scikit-learn style).

:class:`CelebrityClassifier` takes its settings in the constructor, ``fit`` returns ``self``
and learned state ends in ``_``. Keras callbacks do the rest: early stopping on the validation
loss, the per-epoch history (with phase, learning rate and seconds) and stopping on request.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from .backbones import get_backbone
from .config import RECIPES, TrainConfig
from .errors import Cancelled
from .face_network import set_trainable
from .model import augmentation, build_model, head_model
from .pipeline import Inputs, model_dataset

log = logging.getLogger("celebmodel")
PHASE_STAGES = {"head": "phase 1", "fine-tune": "phase 2", "full": "training"}  # progress keys


class _Stop:
    """SIGTERM handling that never raises inside TensorFlow.

    Outside ``fit`` the handler raises :class:`Cancelled` at once; during ``fit`` (and while the
    finished model is written) it only sets ``requested``: :class:`StopOnRequest` ends training
    at the next batch, after which :meth:`check` raises. (An exception raised from a handler
    inside TensorFlow can be swallowed by AutoGraph or wrapped by pybind11.)
    """

    requested: str | None = None
    defer: bool = False

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        cls.requested = f"stopped by signal {signal.Signals(signum).name}"
        if not cls.defer:
            raise Cancelled(cls.requested)

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise Cancelled(cls.requested)


class StopOnRequest(keras.callbacks.Callback):
    """Ends ``fit`` at the next batch once a stop was requested."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if _Stop.requested:
            self.model.stop_training = True


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
    progress : callable, optional
        ``progress(stage, max_epochs)`` gives a callback reporting a phase's epochs
        (:meth:`celebmodel.progress.Stages.epochs`).

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
        progress: Callable[[str, int], keras.callbacks.Callback] | None = None,
    ) -> None:
        self.config = config
        self.history_file = history_file
        self.progress = progress

    def _callbacks(self, phase: str) -> list[Any]:
        callbacks = [
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.config.patience, restore_best_weights=True
            ),
            HistoryWriter(phase),
            StopOnRequest(),
        ]
        if self.history_file:
            callbacks.append(keras.callbacks.CSVLogger(str(self.history_file), append=True))
        if self.progress:
            stage = PHASE_STAGES[phase] if RECIPES[self.config.recipe].two_phase else "training"
            callbacks.append(self.progress(stage, self.config.max_epochs))
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
        _Stop.defer = True
        try:
            result = model.fit(
                train,
                validation_data=val,
                epochs=start + self.config.max_epochs,
                initial_epoch=start,
                callbacks=self._callbacks(phase),
                shuffle=False,  # tf.data shuffles, seeded
                verbose=0,
            )
        finally:
            _Stop.defer = False
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
            base.trainable = True
            unfrozen = False
            for layer in base.layers:
                unfrozen = unfrozen or layer.name == backbone.fine_tune_from
                layer.trainable = unfrozen
            self._fit_phase(self.model_, "fine-tune", train_images, val_images, fine_rate)
        return self

    def _keep_fine_tune(self) -> bool:
        """A face network keeps phase 2 only if it lowered the validation loss."""
        return self.phases_["fine-tune"] < self.phases_["head"]

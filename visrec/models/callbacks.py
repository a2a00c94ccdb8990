"""Keras callbacks for training within a time budget, shared by the image model and the GAN.

Used with Keras's own ``EarlyStopping(monitor="val_accuracy", restore_best_weights=True)``, which keeps
the best scored epoch and stops after ``patience`` scored epochs without improvement:

- :class:`TimeBudget` stops before an epoch that would not end within the budget;
- :class:`CosineSchedule` decays the learning rate over the training's progress, where progress is
  the larger of epochs done / epochs and time spent / budget: a run stopped by its budget still ends
  at a small learning rate instead of being cut off mid-schedule;
- :class:`LateValidation` scores the held-out data only once training is ``validate_from`` of the way
  through (and when the budget stops it): with the rate decaying to the end the best epoch comes late,
  while scoring after every epoch (two forward passes each, with flip averaging) took about a tenth of
  the image model's training time. Epochs it does not score carry no ``val_*`` metrics, which
  ``EarlyStopping`` skips.

Order them ``[TimeBudget, CosineSchedule, LateValidation, EarlyStopping, ...]``.
"""

from __future__ import annotations

import logging
import warnings

import keras
import numpy as np

from visrec.models.budget import EpochBudget

log = logging.getLogger(__name__)

# EarlyStopping warns at every epoch that LateValidation leaves unscored, by design.
warnings.filterwarnings("ignore", message="Early stopping conditioned on metric")


class TimeBudget(keras.callbacks.Callback):
    """Stops training before an epoch that would not end within ``max_minutes`` (see :class:`EpochBudget`)."""

    def __init__(self, max_minutes: float | None, name: str = "training"):
        super().__init__()
        self.budget = EpochBudget(max_minutes)
        self.name = name
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.budget.start()

    def on_epoch_begin(self, epoch, logs=None):
        self.budget.epoch_started()

    def on_epoch_end(self, epoch, logs=None):
        self.budget.epoch_done()
        if not self.budget.another_fits():
            log.info(
                "%s: stopping after epoch %d: another would pass the %.1f min budget",
                self.name,
                epoch + 1,
                self.budget.max_seconds / 60,
            )
            self.stopped = True
            self.model.stop_training = True


class CosineSchedule(keras.callbacks.Callback):
    """Cosine decay from ``learning_rate`` to 2% of it over the progress of ``budget`` and ``epochs``."""

    def __init__(self, learning_rate: float, epochs: int, budget: EpochBudget):
        super().__init__()
        self.base_lr, self.epochs, self.budget = learning_rate, epochs, budget

    def progress(self, epoch: int) -> float:
        """How far along the training is at the middle of ``epoch`` (0..1)."""
        by_epochs = (epoch + 0.5) / self.epochs
        if not self.budget.max_seconds or not self.budget.last_epoch:
            return min(by_epochs, 1.0)
        by_time = (self.budget.elapsed() + 0.5 * self.budget.last_epoch) / self.budget.max_seconds
        return min(max(by_epochs, by_time), 1.0)

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.base_lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * self.progress(epoch))))
        self.model.optimizer.learning_rate.assign(lr)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # in place: Keras's History reads the same dict
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())


class LateValidation(keras.callbacks.Callback):
    """Adds ``val_*`` metrics of ``held_out`` to an epoch's logs once training is ``validate_from`` of
    the way through by epochs or by ``budget``, and at the epoch where the budget stops training."""

    def __init__(self, held_out, epochs: int, budget: TimeBudget, validate_from: float = 0.5):
        super().__init__()
        self.held_out, self.epochs, self.time = held_out, epochs, budget
        self.validate_from = validate_from

    def on_epoch_end(self, epoch, logs=None):
        done = max((epoch + 1) / self.epochs, self.time.budget.fraction_spent())
        if done >= self.validate_from or self.time.stopped:
            scores = self.model.evaluate(self.held_out, verbose=0, return_dict=True)
            if logs is not None:
                logs.update({f"val_{k}": float(v) for k, v in scores.items()})

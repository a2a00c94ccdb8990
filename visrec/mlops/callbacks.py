"""A Keras callback that reports each epoch: to the log, to the active MLflow run, to a progress bar."""

from __future__ import annotations

import logging
from collections.abc import Callable

import keras

log = logging.getLogger(__name__)


class EpochReport(keras.callbacks.Callback):
    """Logs each epoch's metrics (``name epoch N: k=v ...``), records them in the active MLflow run at
    step N-1, and ticks ``progress(stage, done, total)`` when given. Put it last: it reports what the
    callbacks before it added to the epoch's logs."""

    def __init__(self, name: str, epochs: int, progress: Callable[[str, int, int], None] | None = None):
        super().__init__()
        self.name, self.epochs, self.progress = name, epochs, progress
        self.history: list[dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        import mlflow

        record = {k: float(v) for k, v in (logs or {}).items()}
        self.history.append(record)
        if mlflow.active_run():
            mlflow.log_metrics(record, step=epoch)
        log.info("%s epoch %d: %s", self.name, epoch + 1, " ".join(f"{k}={v:.4g}" for k, v in record.items()))
        if self.progress:
            self.progress(f"{self.name} epochs", epoch + 1, self.epochs)

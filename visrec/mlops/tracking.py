"""MLflow: one helper that opens a (nested) run with the pipeline's tags.

The tracking store is the configured URI (SQLite under ``VISREC_HOME`` by default) and artifacts go to
the configured location, never to ``./mlruns`` in whatever folder the process happens to run in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from visrec import __version__
from visrec.settings import Settings

if TYPE_CHECKING:
    import mlflow


log = logging.getLogger(__name__)

EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def use_tracking(settings: Settings) -> None:
    """Point MLflow (tracking and registry) at ``settings.mlflow_tracking_uri``; SQLite's folder is created."""
    import mlflow

    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)


def ensure_experiment(settings: Settings, name: str | None = None) -> str:
    """Return the id of the experiment ``name`` (default: the pipeline's), creating it when it does
    not exist: with an explicit artifact location under ``settings.mlflow_artifact_uri`` for a local
    tracking store, and the server's own (its artifact proxy) for an ``http(s)`` tracking server, so
    that models never land on whichever machine trained them."""
    import mlflow

    use_tracking(settings)
    name = name or settings.mlflow_experiment
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if not settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        location = f"{settings.mlflow_artifact_uri.rstrip('/')}/{name}"
    # The UI opens a model-training experiment in its training view, not the GenAI one.
    return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING})


def training_device() -> tuple[str, str]:
    """The Keras backend and the device it computes on, e.g. ``("jax", "gpu: NVIDIA H200")``."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return backend, f"{device.platform}: {getattr(device, 'device_kind', device)}"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return backend, f"gpu: {gpus[0].name}" if gpus else "cpu"
    return backend, "unknown"


@contextmanager
def tracked_run(
    settings: Settings,
    name: str,
    *,
    ds: str | None = None,
    nested: bool = False,
    tags: dict[str, str] | None = None,
    training: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Open an MLflow run tagged with the pipeline's context; nested under the active run if asked.

    Tags: ``visrec.version``, ``visrec.step`` (= ``name``), ``visrec.lake``, and ``visrec.ds`` when
    given; for a ``training`` run also ``visrec.backend`` and ``visrec.device`` (what it trains on,
    also logged). The run ends (FINISHED, or FAILED on an exception) when the block exits.
    """
    import mlflow

    experiment_id = ensure_experiment(settings)
    all_tags = {"visrec.version": __version__, "visrec.step": name, "visrec.lake": settings.lake_uri}
    if ds:
        all_tags["visrec.ds"] = ds
        all_tags["visrec.report"] = f"{settings.lake_uri.rstrip('/')}/reports/ds={ds}/index.html"
    if training:
        backend, device = training_device()
        all_tags.update({"visrec.backend": backend, "visrec.device": device})
        log.info("%s trains on %s (Keras backend %s)", name, device, backend)
    all_tags.update(tags or {})
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=nested, tags=all_tags) as run:
        yield run

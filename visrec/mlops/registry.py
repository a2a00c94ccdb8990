"""MLflow model registry: register a version, and promote it to ``champion`` only if it is better.

Every new version gets the ``challenger`` alias. It also becomes ``champion`` when there is none yet,
or when its metric beats the champion's on the same evaluation data by more than ``-tolerance``
(the caller evaluates both on the same data and passes both values). Stages are deprecated in
MLflow; aliases are what scoring loads: ``models:/<name>@champion``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass
class Registration:
    """The outcome of registering a model version."""

    name: str
    version: str
    promoted: bool
    reason: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def champion(name: str):
    """The champion ``ModelVersion`` of a registered model, or None."""
    from mlflow.exceptions import MlflowException

    import mlflow

    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register(
    model_uri: str,
    name: str,
    *,
    metric: str,
    value: float,
    champion_value: float | None,
    higher_is_better: bool = True,
    tolerance: float = 0.0,
) -> Registration:
    """Register ``model_uri`` as a new version of ``name`` and apply the promotion rule."""

    current = champion(name)
    if current is None or champion_value is None:
        promoted, reason = True, f"no champion yet; {metric}={value:.4f} makes it the champion"
    else:
        delta = (value - champion_value) if higher_is_better else (champion_value - value)
        promoted = delta >= -tolerance
        verdict = "promoted" if promoted else "kept the champion"
        reason = (
            f"{metric}={value:.4f} vs champion v{current.version} "
            f"{metric}={champion_value:.4f} (tolerance {tolerance}): {verdict}"
        )
    return register_decided(model_uri, name, promoted, reason)


def register_decided(model_uri: str, name: str, promoted: bool, reason: str) -> Registration:
    """Register ``model_uri`` as a new version of ``name`` (the ``challenger``), and make it the
    ``champion`` when the caller's gate ``promoted`` it; ``reason`` is kept as the version's tag."""
    import mlflow

    client = mlflow.MlflowClient()
    version = mlflow.register_model(model_uri, name).version
    client.set_registered_model_alias(name, CHALLENGER, version)
    verdict = f"version {version} {'promoted to champion' if promoted else 'not promoted'}: {reason}"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", verdict)
    log.info("%s: %s", name, verdict)
    return Registration(name=name, version=str(version), promoted=promoted, reason=verdict)


def version_exists(model_version: str) -> bool:
    """Whether ``name/version`` (as visrec writes it, e.g. ``visrec-cnn/3``) is still registered."""
    from mlflow.exceptions import MlflowException

    import mlflow

    name, _, version = model_version.rpartition("/")
    try:
        mlflow.MlflowClient().get_model_version(name, version)
    except MlflowException:
        return False
    return True


def model_uri(name: str, version: str | None = None) -> str:
    """The MLflow URI of ``version`` (as visrec writes it, ``visrec-cnn/3``) or, without one, of the
    champion of ``name``."""
    if not version:
        return f"models:/{name}@{CHAMPION}"
    registered, _, number = version.rpartition("/")
    if registered != name or not number.isdigit():
        raise ValueError(f"{version!r} is not a version of {name} (expected {name}/<number>)")
    return f"models:/{name}/{number}"


def load_keras(uri: str):
    """Load a registered Keras model (``models:/name@alias`` or ``models:/name/version``); returns
    ``(model, "name/version")``. Import the module defining its custom classes first."""
    import mlflow.keras

    import mlflow

    model = mlflow.keras.load_model(uri)
    version = uri.removeprefix("models:/")
    if "@" in uri:
        name, alias = uri.removeprefix("models:/").split("@")
        version = f"{name}/{mlflow.MlflowClient().get_model_version_by_alias(name, alias).version}"
    return model, version


def log_keras_model(model, example_input, example_output, *, pip_requirements: list[str]) -> str:
    """Log a Keras ``model`` into the active MLflow run, with a signature and an input example (what
    the registry's UI shows); returns its URI for :func:`register`.

    ``mlflow.keras.log_model(input_example=...)`` fails in MLflow 3.17 (it writes the example before
    it creates the model's folder), so the model is saved into a folder made first, then logged."""
    import tempfile
    from pathlib import Path

    import mlflow.keras
    from mlflow.models import infer_signature

    import mlflow

    signature = infer_signature(example_input, example_output)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        path.mkdir()
        mlflow.keras.save_model(
            model,
            str(path),
            signature=signature,
            input_example=example_input,
            pip_requirements=pip_requirements,
        )
        mlflow.log_artifacts(str(path), "model")
    return f"runs:/{mlflow.active_run().info.run_id}/model"

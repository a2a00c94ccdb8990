"""Which model version served, night by night, and moving the ``champion`` alias by hand.

The nightly run records each training's champion in the run records (each training step's
``champion``). A rollback (``visrec rollback mf --to 3 --reason ...``) moves the
``champion`` alias of the registered model and keeps who, when, from which version and why as a tag of
the version it moved to (``rollback.<UTC time>``), so MLflow's UI shows it beside the version. The next
``score`` (and the next night's promotion gate) uses the new champion.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from visrec.errors import VisrecError
from visrec.generation import train as gan_training
from visrec.mlops import registry
from visrec.pipeline.graph import STEPS
from visrec.recsys import train as mf_training
from visrec.store.lake import Lake
from visrec.store.runs import RunLog
from visrec.vision import embed

# The short names the command line takes -> the registered models, and the step that trains each
# (the steps of the training queue, `train_<short name>`).
MODELS = {"cnn": embed.MODEL_NAME, "mf": mf_training.MODEL_NAME, "gan": gan_training.MODEL_NAME}
TRAINED_BY = {s.name.removeprefix("train_"): s.name for s in STEPS if s.queue == "training"}
TAG_PREFIX = "rollback."


@dataclass(frozen=True)
class Rollback:
    """A champion moved by hand: when (UTC), which model, from and to which version, by whom, why."""

    at: str
    model: str
    version: str
    previous: str | None
    by: str
    reason: str


def rollback(model: str, to_version: int | str, reason: str, by: str | None = None) -> Rollback:
    """Make version ``to_version`` of ``model`` (cnn, mf, gan) the champion; tag it with who, when,
    from which version and why. Refuses an unknown model, a version that is not registered, and an
    empty reason."""
    from mlflow.exceptions import MlflowException

    import mlflow

    if model not in MODELS:
        raise VisrecError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
    if not reason.strip():
        raise VisrecError("give a --reason: it is kept with the version, for whoever looks next")
    name, version = MODELS[model], str(to_version)
    client = mlflow.MlflowClient()
    try:
        client.get_model_version(name, version)
    except MlflowException:
        known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise VisrecError(
            f"{name} has no version {version} (registered: {', '.join(map(str, known)) or 'none'})"
        ) from None
    current = registry.champion(name)
    previous = str(current.version) if current else None
    done = Rollback(
        at=datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ"),
        model=model,
        version=version,
        previous=previous,
        by=by or getpass.getuser(),
        reason=reason.strip(),
    )
    client.set_registered_model_alias(name, registry.CHAMPION, version)
    value = json.dumps({"from": previous, "by": done.by, "reason": done.reason})
    client.set_model_version_tag(name, version, TAG_PREFIX + done.at, value)
    return done


def rollbacks() -> list[Rollback]:
    """Every champion moved by hand, oldest first (from the versions' tags)."""
    from mlflow.exceptions import MlflowException

    import mlflow

    client = mlflow.MlflowClient()
    found = []
    for model, name in MODELS.items():
        try:
            versions = client.search_model_versions(f"name='{name}'")
        except MlflowException:
            continue
        for v in versions:
            for key, value in (v.tags or {}).items():
                if key.startswith(TAG_PREFIX):
                    facts = json.loads(value)
                    found.append(
                        Rollback(
                            at=key.removeprefix(TAG_PREFIX),
                            model=model,
                            version=str(v.version),
                            previous=facts.get("from"),
                            by=facts.get("by", "?"),
                            reason=facts.get("reason", ""),
                        )
                    )
    return sorted(found, key=lambda r: r.at)


def nightly_champions(lake: Lake) -> list[tuple[str, dict[str, str | None]]]:
    """Each night of the run records (oldest first) with the champion each training left: version
    numbers by model (None where that training did not run that night)."""
    runs = RunLog(lake)
    nights = []
    for ds in runs.dates():
        night = runs.night(ds)
        champions = {}
        for model, step in TRAINED_BY.items():
            summary = night.get(step) or {}
            value = summary.get("champion") or summary.get("version")
            champions[model] = str(value).rpartition("/")[2] if value else None
        nights.append((ds, champions))
    return nights

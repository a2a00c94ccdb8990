"""One typed settings object, filled from ``VISREC_*`` environment variables with defaults.

Every path defaults to somewhere under ``VISREC_HOME`` (``./.visrec``), so a fresh clone runs with no
configuration, and nothing here names a path of any particular machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build it with :meth:`from_env`, or directly in tests."""

    home: Path = field(default_factory=lambda: Path(".visrec").resolve())
    lake_uri: str = ""
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    mlflow_tracking_uri: str = ""
    mlflow_artifact_uri: str = ""
    mlflow_experiment: str = "visrec"
    warehouse_path: Path = field(default_factory=lambda: Path(".visrec/warehouse.duckdb").resolve())
    seed: int = 42
    error_budget: float = 0.05

    def __post_init__(self) -> None:
        # Derived defaults depend on ``home``; fill the empty ones once so every reader agrees.
        home = Path(self.home).resolve()
        object.__setattr__(self, "home", home)
        if not self.lake_uri:
            object.__setattr__(self, "lake_uri", (home / "lake").as_uri())
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"sqlite:///{home / 'mlflow.db'}")
        if not self.mlflow_artifact_uri:
            object.__setattr__(self, "mlflow_artifact_uri", (home / "mlartifacts").as_uri())
        if not 0.0 <= self.error_budget <= 1.0:
            raise ValueError(f"VISREC_ERROR_BUDGET must be within [0, 1], got {self.error_budget}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read settings from the environment (``os.environ`` unless ``environ`` is given)."""
        env = dict(os.environ if environ is None else environ)

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else default

        home = Path(get("VISREC_HOME", ".visrec")).resolve()
        try:
            seed = int(get("VISREC_SEED", "42"))
            budget = float(get("VISREC_ERROR_BUDGET", "0.05"))
        except ValueError as exc:
            raise ValueError(f"bad numeric setting: {exc}") from None
        return cls(
            home=home,
            lake_uri=get("VISREC_LAKE_URI", "") or "",
            s3_endpoint=get("VISREC_S3_ENDPOINT"),
            s3_region=get("VISREC_S3_REGION", "us-east-1") or "us-east-1",
            mlflow_tracking_uri=get("VISREC_MLFLOW_TRACKING_URI", "") or "",
            mlflow_artifact_uri=get("VISREC_MLFLOW_ARTIFACT_URI", "") or "",
            mlflow_experiment=get("VISREC_MLFLOW_EXPERIMENT", "visrec") or "visrec",
            warehouse_path=Path(get("VISREC_WAREHOUSE", str(home / "warehouse.duckdb"))).resolve(),
            seed=seed,
            error_budget=budget,
        )


def describe(settings: Settings) -> dict[str, str]:
    """The settings as strings, for logs and ``visrec --version``-style output."""
    return {f.name: str(getattr(settings, f.name)) for f in fields(settings)}

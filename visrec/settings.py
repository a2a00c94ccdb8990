"""One typed settings object, filled from ``VISREC_*`` environment variables with defaults.

Every path defaults to somewhere under ``VISREC_HOME`` (``./.visrec``), so a fresh clone runs with no
configuration, and nothing here names a path of any particular machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    spark_master: str = "local[2]"
    image_size: int = 64
    # Implicit-feedback confidence: each event counts its type's weight, halved every half-life days.
    event_weights: str = "view=1,click=2,add_to_cart=4,purchase=8"
    decay_half_life_days: float = 30.0
    max_event_age_days: int = 365  # older events in a day's log are quarantined as stale
    test_days: int = 2  # evaluation: the last N days before a run's ds are the test window
    cnn_max_minutes: float = 20.0  # the image model's training budget per run (fine-tuning needs less)
    report_users: int = 6  # sample users shown in each run's HTML report
    photo_retention_days: int = 30  # user photos (and what was derived from them) older than this go
    photo_weight: float = 0.5  # weight of photo evidence beside behaviour when scoring (see README)
    gan_every_days: int = 7  # train the GAN when its last training is this old...
    gan_catalog_change: float = 0.2  # ...or when more than this share of the catalog is new since then
    gan_max_minutes: float = 10.0  # the GAN's training budget when it trains
    generated_slots: int = 2  # places per list given to real items nearest the user's generated looks
    retrain: bool = False  # a rerun of a date trains new models instead of reusing that date's

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
        if self.photo_retention_days < 1:
            raise ValueError(
                f"VISREC_PHOTO_RETENTION_DAYS must be at least 1, got {self.photo_retention_days}"
            )
        self.weights()  # fail early on a malformed VISREC_EVENT_WEIGHTS

    def weights(self) -> dict[str, float]:
        """The event-type weights of :attr:`event_weights` as a dict."""
        from visrec.schemas import EVENT_TYPES

        out: dict[str, float] = {}
        for part in self.event_weights.split(","):
            name, _, value = part.partition("=")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                raise ValueError(
                    f"VISREC_EVENT_WEIGHTS: bad entry {part!r}; use view=1,click=2,..."
                ) from None
        missing = set(EVENT_TYPES) - set(out)
        if missing or set(out) - set(EVENT_TYPES):
            raise ValueError(
                f"VISREC_EVENT_WEIGHTS must give exactly {', '.join(EVENT_TYPES)}; got {self.event_weights!r}"
            )
        return out

    def to_env(self) -> dict[str, str]:
        """These settings as ``VISREC_*`` variables: what a child process (Airflow) needs to see them."""
        env = {
            "VISREC_HOME": str(self.home),
            "VISREC_LAKE_URI": self.lake_uri,
            "VISREC_S3_REGION": self.s3_region,
            "VISREC_MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "VISREC_MLFLOW_ARTIFACT_URI": self.mlflow_artifact_uri,
            "VISREC_MLFLOW_EXPERIMENT": self.mlflow_experiment,
            "VISREC_WAREHOUSE": str(self.warehouse_path),
            "VISREC_SEED": str(self.seed),
            "VISREC_ERROR_BUDGET": str(self.error_budget),
            "VISREC_SPARK_MASTER": self.spark_master,
            "VISREC_IMAGE_SIZE": str(self.image_size),
            "VISREC_EVENT_WEIGHTS": self.event_weights,
            "VISREC_DECAY_HALF_LIFE_DAYS": str(self.decay_half_life_days),
            "VISREC_MAX_EVENT_AGE_DAYS": str(self.max_event_age_days),
            "VISREC_TEST_DAYS": str(self.test_days),
            "VISREC_CNN_MINUTES": str(self.cnn_max_minutes),
            "VISREC_REPORT_USERS": str(self.report_users),
            "VISREC_PHOTO_RETENTION_DAYS": str(self.photo_retention_days),
            "VISREC_PHOTO_WEIGHT": str(self.photo_weight),
            "VISREC_GAN_EVERY_DAYS": str(self.gan_every_days),
            "VISREC_GAN_CATALOG_CHANGE": str(self.gan_catalog_change),
            "VISREC_GAN_MINUTES": str(self.gan_max_minutes),
            "VISREC_GENERATED_SLOTS": str(self.generated_slots),
            "VISREC_RETRAIN": "1" if self.retrain else "0",
        }
        if self.s3_endpoint:
            env["VISREC_S3_ENDPOINT"] = self.s3_endpoint
        return env

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
            image_size = int(get("VISREC_IMAGE_SIZE", "64"))
            half_life = float(get("VISREC_DECAY_HALF_LIFE_DAYS", "30"))
            max_age = int(get("VISREC_MAX_EVENT_AGE_DAYS", "365"))
            test_days = int(get("VISREC_TEST_DAYS", "2"))
            cnn_max_minutes = float(get("VISREC_CNN_MINUTES", "20"))
            report_users = int(get("VISREC_REPORT_USERS", "6"))
            photo_retention_days = int(get("VISREC_PHOTO_RETENTION_DAYS", "30"))
            photo_weight = float(get("VISREC_PHOTO_WEIGHT", "0.5"))
            gan_every_days = int(get("VISREC_GAN_EVERY_DAYS", "7"))
            gan_catalog_change = float(get("VISREC_GAN_CATALOG_CHANGE", "0.2"))
            gan_max_minutes = float(get("VISREC_GAN_MINUTES", "10"))
            generated_slots = int(get("VISREC_GENERATED_SLOTS", "2"))
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
            spark_master=get("VISREC_SPARK_MASTER", "local[2]") or "local[2]",
            image_size=image_size,
            event_weights=get("VISREC_EVENT_WEIGHTS", cls.event_weights) or cls.event_weights,
            decay_half_life_days=half_life,
            max_event_age_days=max_age,
            test_days=test_days,
            cnn_max_minutes=cnn_max_minutes,
            report_users=report_users,
            photo_retention_days=photo_retention_days,
            photo_weight=photo_weight,
            gan_every_days=gan_every_days,
            gan_catalog_change=gan_catalog_change,
            gan_max_minutes=gan_max_minutes,
            generated_slots=generated_slots,
            retrain=get("VISREC_RETRAIN", "0") == "1",
        )

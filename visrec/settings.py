"""One typed settings object, filled from ``VISREC_*`` environment variables with defaults.

Each setting is declared once, below: its type, its default, its allowed range and what it is for.
pydantic-settings reads the environment (``VISREC_`` + the field name, or the alias where the
variable's name is shorter), checks types and ranges, and the command line overrides fields with
:meth:`Settings.with_overrides` instead of carrying defaults of its own. Every path defaults to
somewhere under ``VISREC_HOME`` (``./.visrec``), so a fresh clone runs with no configuration, and
nothing here names a path of any particular machine.
"""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from visrec.errors import VisrecError
from visrec.vocabulary import EVENT_TYPES


class SettingsError(VisrecError, ValueError):
    """A setting (environment variable or command-line flag) has a value visrec cannot use."""


# VISREC_* variables that are not settings: read by the benches (data paths) and by the container
# entrypoint (which queues a worker serves); every other VISREC_* name must be a setting.
NOT_SETTINGS = frozenset(
    {
        "VISREC_HM_SAMPLE",
        "VISREC_ML1M",
        "VISREC_QUEUES",
        "VISREC_WORKER_CONCURRENCY",
        "VISREC_WORKER_HOSTNAME",
        "VISREC_WORKER_NAME",
    }
)


def _env(alias: str, name: str) -> AliasChoices:
    """A field read from a variable named otherwise than ``VISREC_<FIELD>`` (that name also works)."""
    return AliasChoices(alias, f"VISREC_{name.upper()}")


class Settings(BaseSettings):
    """Runtime configuration. Build it with :meth:`from_env`, or directly in tests."""

    model_config = SettingsConfigDict(
        env_prefix="VISREC_",
        frozen=True,
        populate_by_name=True,
        extra="forbid",
        env_ignore_empty=True,
        allow_inf_nan=False,
    )

    home: Path = Field(Path(".visrec"), description="where everything local lives")
    lake_uri: str = Field("", description="root of the lake (S3 credentials: the usual `AWS_*` variables)")
    s3_endpoint: str | None = Field(
        None, description="S3 endpoint URL, e.g. `http://127.0.0.1:9000` for MinIO"
    )
    s3_region: str = Field("us-east-1", description="S3 region")
    mlflow_tracking_uri: str = Field("", description="MLflow tracking store")
    mlflow_artifact_uri: str = Field("", description="where new MLflow experiments keep their artifacts")
    mlflow_experiment: str = Field("visrec", description="the pipeline's MLflow experiment")
    warehouse_path: Path = Field(
        Path(""),
        validation_alias=_env("VISREC_WAREHOUSE", "warehouse_path"),
        description="the DuckDB warehouse file",
    )
    seed: int = Field(42, ge=0, description="the seed of every random part")
    error_budget: float = Field(
        0.05, ge=0.0, le=1.0, description="share of a day's input that may be rejected"
    )
    engine: Literal["auto", "duckdb", "spark"] = Field(
        "auto",
        description="what runs the data jobs (events, features): duckdb in this process, or spark; auto: "
        "spark when `VISREC_SPARK_MASTER` is a cluster, otherwise duckdb",
    )
    spark_master: str = Field("local[2]", description="where Spark jobs run (a cluster's master URL)")
    spark_cores: int = Field(
        2, ge=1, le=100_000, description="on a Spark cluster: the most cores one job takes"
    )
    dag_schedule: str = Field(
        "@daily",
        min_length=1,
        description="Airflow: when the nightly DAG runs (a cron or preset; `none`: only when triggered)",
    )
    spark_pool_slots: int = Field(
        1, ge=1, le=1000, description="Airflow: Spark jobs of the DAG at once (the visrec_spark pool)"
    )
    training_pool_slots: int = Field(
        1, ge=1, le=1000, description="Airflow: model trainings at once (the visrec_training pool)"
    )
    spark_executor_memory: str = Field(
        "1g", pattern=r"^[0-9]+[kmgt]$", description="on a Spark cluster: each executor's memory"
    )
    image_size: int = Field(
        64, ge=16, le=1024, description="side of the staged images and user photos, in pixels"
    )
    # Implicit-feedback confidence: each event counts its type's weight, halved every half-life days.
    event_weights: str = Field(
        "view=1,click=2,add_to_cart=4,purchase=8", description="implicit-feedback confidence per event type"
    )
    decay_half_life_days: float = Field(
        30.0, gt=0, description="an event's weight halves every this many days"
    )
    max_event_age_days: int = Field(365, ge=1, description="older events in a day's log are quarantined")
    test_days: int = Field(
        2, ge=0, description="evaluation: the last N days before a run's date are the test window"
    )
    test_min_users: int = Field(
        1000, ge=1, description="the test window grows back day by day until it holds this many users"
    )
    top_k: int = Field(20, ge=1, le=1000, description="recommendations per user")
    eval_k: int = Field(
        20, ge=1, le=1000, description="evaluation: the cutoff K of the recommender's metrics"
    )
    max_per_category: int = Field(
        8, ge=0, le=1000, description="most items of one category in a published list (0: no cap)"
    )
    similar_k: int = Field(10, ge=1, le=1000, description="neighbours per item in similar_items")
    cnn_max_minutes: float = Field(
        20.0,
        gt=0,
        le=24 * 60,
        validation_alias=_env("VISREC_CNN_MINUTES", "cnn_max_minutes"),
        description="the image model's training budget per run",
    )
    cnn_epochs: int = Field(
        30, ge=1, le=10_000, description="the image model's most epochs (its budget may stop it sooner)"
    )
    cnn_precision: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="the image model's training compute: bfloat16 or float16 mixed precision, float32 weights",
    )
    cnn_warm_start_max_change: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="fine-tune the image model's champion when at most this share of the images is new to it",
    )
    cnn_scratch_every: int = Field(
        7, ge=1, le=1000, description="train the image model from scratch at least every this many trainings"
    )
    report_users: int = Field(6, ge=1, description="sample users shown in each run's HTML report")
    photo_retention_days: int = Field(30, ge=1, description="user photos older than this are deleted")
    photo_weight: float = Field(0.5, ge=0.0, description="photo evidence beside behaviour when scoring")
    gan_every_days: int = Field(7, ge=1, description="train the GAN when its last training is this old...")
    gan_catalog_change: float = Field(
        0.2, ge=0.0, le=1.0, description="...or this share of the catalog is new"
    )
    gan_ema_decay: float = Field(
        0.999, ge=0.0, lt=1.0, description="the GAN draws with this moving average of its generator (0: none)"
    )
    # 1: at 0.7 and 0.5 the 30-minute GAN's samples were recognised at 0.744 and 0.746 of the judge's
    # accuracy against 0.715 (one standard error) with Frechet ratios 8.6 and 9.9 against 7.3.
    gan_temperature: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="the GAN draws from latents at this temperature (below 1: more recognisable, less varied)",
    )
    # 45: it trains weekly, and on hm-sample's photos (`python bench/run.py gan_hm`) 10 minutes (3 epochs
    # here) drew images the image model recognised at 0.45 of its accuracy on real ones, 30 minutes at
    # 0.71 to 0.77 (10 to 12 epochs, by the hour), 45 minutes at 0.87 (18 epochs; the goal is 0.8).
    gan_max_minutes: float = Field(
        45.0,
        gt=0,
        le=24 * 60,
        validation_alias=_env("VISREC_GAN_MINUTES", "gan_max_minutes"),
        description="the GAN's training budget when it trains",
    )
    gan_epochs: int = Field(
        60, ge=1, le=10_000, description="the GAN's most epochs (its budget may stop it sooner)"
    )
    generated_slots: int = Field(2, ge=0, description="places per list for items nearest generated looks")
    mf_minutes: float = Field(
        5.0,
        gt=0,
        le=24 * 60,
        description="the recommender's model search budget per run (trials stop after it)",
    )
    mf_trials: int = Field(
        12,
        ge=0,
        le=10_000,
        description="settings the recommender's search tries (0: the defaults below only)",
    )
    mf_families: str = Field(
        "vbpr,ease",
        pattern=r"^vbpr(,ease)?$",
        description="recommender search: the families compared (vbpr; vbpr,ease: EASE replaces the chosen "
        "VBPR when clearly better on validation)",
    )
    mf_ease_l2: float = Field(500.0, gt=0, description="recommender: EASE's L2 (its family's one setting)")
    mf_ease_rank: int = Field(
        128,
        ge=1,
        le=4096,
        description="recommender: the factors EASE's item-item weights are cut to for scoring",
    )
    mf_validation_min_users: int = Field(
        50,
        ge=1,
        description="recommender search: fewest validation users with history on both sides of a time "
        "cut; fewer: a per-user holdout, and below it too the defaults",
    )
    mf_promotion: Literal["gate", "always"] = Field(
        "gate",
        description="gate: a new recommender becomes champion only if it clearly beats popularity and the "
        "champion; always: every new one does (shops too small for the gate to decide)",
    )
    ranker_promotion: Literal["gate", "always", "never"] = Field(
        "gate",
        description="gate: a new ranker becomes champion (and scoring serves it) only if its lists clearly beat "
        "the best single generator, popularity and the served recommender; always: every new one does; "
        "never: none does",
    )
    mf_factors: int = Field(32, ge=1, le=1024, description="recommender default: collaborative factors")
    mf_visual_factors: int = Field(
        32,
        ge=0,
        le=1024,
        description="recommender default: visual factors (0: no visual term for warm items)",
    )
    mf_epochs: int = Field(
        30, ge=1, le=1000, description="recommender: most epochs (training stops early on validation NDCG)"
    )
    mf_learning_rate: float = Field(0.01, gt=0, le=1, description="recommender default: Adam's learning rate")
    mf_l2: float = Field(1e-2, ge=0, le=10, description="recommender default: L2 on the collaborative part")
    mf_visual_l2: float = Field(1e-2, ge=0, le=10, description="recommender default: L2 on the visual part")
    mf_negatives: int = Field(
        4, ge=1, le=100, description="recommender default: sampled negatives per positive"
    )
    mf_batch_size: int = Field(
        32768, ge=1, le=1_000_000, description="recommender: triples per training step"
    )
    mf_search_factors: str = Field("16,32,64", description="recommender search: collaborative factors tried")
    mf_search_visual_factors: str = Field("0,16,32", description="recommender search: visual factors tried")
    mf_search_negatives: str = Field("2,4,8", description="recommender search: negatives tried")
    mf_search_l2: str = Field("1e-4..1e-1", description="recommender search: collaborative L2 (log scale)")
    mf_search_visual_l2: str = Field("1e-4..1e-1", description="recommender search: visual L2 (log scale)")
    mf_search_learning_rate: str = Field(
        "2e-3..5e-2", description="recommender search: learning rate (log scale)"
    )
    events_wait_minutes: float = Field(
        60.0,
        ge=0,
        le=24 * 60,
        description="the nightly DAG waits (in the triggerer) this long for the day's raw events, then "
        "fails naming them; an empty file in raw/events/dt=<ds>/ declares an empty day",
    )
    serving_uri: str = Field(
        "",
        pattern=r"^((sqlite:///|postgresql://)\S+)?$",
        description="the serving store the latest recommendations are exported to (sqlite:///path or "
        "postgresql://user:password@host/db; default a SQLite file in VISREC_HOME)",
    )
    cluster_dir: Path = Field(
        Path(""),
        description="where `visrec cluster` keeps the process twin's state, logs and cluster.env (default "
        "VISREC_HOME/cluster)",
    )
    alert_webhook: str = Field(
        "",
        pattern=r"^(https?://\S+)?$",
        description="a failed nightly task posts a JSON summary here (Slack-compatible `text`); empty: "
        "the failure is only logged",
    )
    retrain: bool = Field(False, description="a rerun of a date trains new models instead of reusing them")

    @field_validator("event_weights")
    @classmethod
    def _check_weights(cls, value: str) -> str:
        parse_weights(value)
        return value

    @field_validator("mf_search_factors", "mf_search_visual_factors", "mf_search_negatives")
    @classmethod
    def _check_choices(cls, value: str, info) -> str:
        parse_choices(value, minimum=0 if info.field_name == "mf_search_visual_factors" else 1)
        return value

    @field_validator("mf_search_l2", "mf_search_visual_l2", "mf_search_learning_rate")
    @classmethod
    def _check_range(cls, value: str) -> str:
        parse_range(value)
        return value

    def mf_search_space(self) -> dict[str, list[int] | tuple[float, float]]:
        """The recommender search's choices (lists) and log-scale ranges (pairs), by parameter name."""
        return {
            "factors": parse_choices(self.mf_search_factors),
            "visual_factors": parse_choices(self.mf_search_visual_factors, minimum=0),
            "negatives": parse_choices(self.mf_search_negatives),
            "l2": parse_range(self.mf_search_l2),
            "visual_l2": parse_range(self.mf_search_visual_l2),
            "learning_rate": parse_range(self.mf_search_learning_rate),
        }

    @field_validator("lake_uri")
    @classmethod
    def _check_lake(cls, value: str) -> str:
        if value and "://" not in value:  # a plain path: the local folder's file URI
            value = Path(value).expanduser().resolve().as_uri()
        if value and not value.startswith(("file://", "s3://")):
            raise ValueError("must be a path, file:///path or s3://bucket/prefix")
        return value

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        # Derived defaults depend on ``home``; fill the empty ones once so every reader agrees.
        home = Path(self.home).resolve()
        object.__setattr__(self, "home", home)
        if not self.lake_uri:
            object.__setattr__(self, "lake_uri", (home / "lake").as_uri())
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"sqlite:///{home / 'mlflow.db'}")
        if not self.mlflow_artifact_uri:
            object.__setattr__(self, "mlflow_artifact_uri", (home / "mlartifacts").as_uri())
        if not self.serving_uri:
            object.__setattr__(self, "serving_uri", f"sqlite:///{home / 'serving.sqlite'}")
        cluster_dir = home / "cluster" if str(self.cluster_dir) in ("", ".") else self.cluster_dir
        object.__setattr__(self, "cluster_dir", Path(cluster_dir).resolve())
        warehouse = (
            home / "warehouse.duckdb" if str(self.warehouse_path) in ("", ".") else self.warehouse_path
        )
        object.__setattr__(self, "warehouse_path", Path(warehouse).resolve())
        return self

    def weights(self) -> dict[str, float]:
        """The event-type weights of :attr:`event_weights` as a dict."""
        return parse_weights(self.event_weights)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable a field is read from."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return f"VISREC_{field.upper()}"

    def to_env(self) -> dict[str, str]:
        """These settings as ``VISREC_*`` variables: what a child process (Airflow) needs to see them."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            env[self.env_name(name)] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read settings from the environment (``os.environ`` unless ``environ`` is given); a
        ``VISREC_*`` variable that is no setting is refused, naming the closest one (a misspelt
        setting would otherwise be ignored and its default used)."""
        _check_names(cls, os.environ if environ is None else environ)
        if environ is None:
            return _checked(cls, {})
        values = {}
        for name in cls.model_fields:
            value = environ.get(cls.env_name(name))
            if value not in (None, ""):
                values[name] = value
        return _checked(cls, {}, **values)

    def with_profile(self, profile: dict[str, Any]) -> Settings:
        """A copy with ``profile``'s values (a named set of settings, such as the demo's) for the fields
        that the environment or the caller did not set: those keep their value."""
        return self.with_overrides(**{k: v for k, v in profile.items() if k not in self.model_fields_set})

    def with_overrides(self, *, flags: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """A copy with some fields replaced (command-line flags), validated like the environment; an
        error names the flag (``flags`` maps a field to its flag) beside the variable. ``None`` values
        are ignored, so a flag the user did not give keeps the setting."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        values = {k: getattr(self, k) for k in type(self).model_fields}
        return _checked(
            type(self), {k: f for k, f in (flags or {}).items() if k in given}, **{**values, **given}
        )


def _check_names(cls: type[Settings], environ: typing.Mapping[str, str]) -> None:
    known = set(NOT_SETTINGS)
    for name, field in cls.model_fields.items():
        known.add(f"VISREC_{name.upper()}")
        if isinstance(field.validation_alias, AliasChoices):
            known.update(str(choice) for choice in field.validation_alias.choices)
    unknown = sorted(k for k in environ if k.startswith("VISREC_") and k not in known)
    if unknown:
        names = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known - NOT_SETTINGS), n=1, cutoff=0.6)
            names.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise SettingsError(
            f"unknown setting{'s' if len(names) > 1 else ''} {', '.join(names)}: "
            "the settings reference (docs/reference/settings.md, `make docs`) lists every VISREC_* variable"
        )


def parse_weights(text: str) -> dict[str, float]:
    """``view=1,click=2,...`` -> ``{"view": 1.0, ...}``; exactly the four event types, each >= 0."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"bad entry {part!r}; use view=1,click=2,add_to_cart=4,purchase=8") from None
    if set(out) != set(EVENT_TYPES) or any(v < 0 for v in out.values()):
        raise ValueError(f"must give each of {', '.join(EVENT_TYPES)} a weight >= 0; got {text!r}")
    return out


def parse_choices(text: str, minimum: int = 1) -> list[int]:
    """``"16,32,64"`` -> ``[16, 32, 64]``: whole numbers >= ``minimum``, at least one."""
    try:
        values = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise ValueError(f"must be whole numbers separated by commas, like 16,32,64; got {text!r}") from None
    if any(v < minimum or v > 1024 for v in values):
        raise ValueError(f"each must be between {minimum} and 1024; got {text!r}")
    return values


def parse_range(text: str) -> tuple[float, float]:
    """``"1e-4..1e-1"`` -> ``(0.0001, 0.1)``: two numbers > 0, the first at most the second."""
    low, sep, high = text.partition("..")
    try:
        bounds = (float(low), float(high))
    except ValueError:
        bounds = ()
    if not sep or not bounds or not 0 < bounds[0] <= bounds[1] < float("inf"):
        raise ValueError(f"must be low..high with 0 < low <= high, like 1e-4..1e-1; got {text!r}")
    return bounds


def _checked(cls: type[Settings], flags: dict[str, str], **values: Any) -> Settings:
    """Build settings; a bad value becomes one :class:`SettingsError` naming the variable (and the
    command-line flag that set it, from ``flags``), its value and what is allowed."""
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            name = cls.env_name(field) if field in cls.model_fields else field
            message = error["msg"].removeprefix("Value error, ")
            if field in flags:
                problems.append(f"{flags[field]} {error.get('input')!r} ({name}): {message}")
            else:
                problems.append(f"{name}={error.get('input')!r}: {message}")
        if any(field in flags for field in (str(e["loc"][0]) for e in exc.errors() if e["loc"])):
            raise SettingsError("bad argument " + "; ".join(problems)) from None
        raise SettingsError("bad setting " + "; ".join(problems)) from None


def settings_table() -> str:
    """The settings as a Markdown table (variable, default, allowed values, meaning): the settings reference page of the docs."""
    derived = {
        "lake_uri": "`file://$VISREC_HOME/lake`",
        "mlflow_tracking_uri": "`sqlite:///$VISREC_HOME/mlflow.db`",
        "mlflow_artifact_uri": "`file://$VISREC_HOME/mlartifacts`",
        "warehouse_path": "`$VISREC_HOME/warehouse.duckdb`",
        "serving_uri": "`sqlite:///$VISREC_HOME/serving.sqlite`",
        "cluster_dir": "`$VISREC_HOME/cluster`",
        "home": "`./.visrec`",
        "s3_endpoint": "(AWS)",
    }
    rows = ["| variable | default | allowed | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        bounds = []
        for rule in field.metadata:
            for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if getattr(rule, attr, None) is not None:
                    bounds.append(f"{sign} {getattr(rule, attr):g}")
        kind = {int: "whole number", float: "number", bool: "0 or 1"}.get(field.annotation, "")
        if name == "lake_uri":
            kind = "a path, `file://...` or `s3://...`"
        elif name == "event_weights":
            kind = "each event type `=` a number >= 0"
        elif typing.get_origin(field.annotation) is Literal:
            *first, last = (f"`{v}`" for v in typing.get_args(field.annotation))
            kind = f"{', '.join(first)} or {last}"
        elif name.startswith("mf_search_"):
            kind = (
                "`low..high`, 0 < low <= high" if "l2" in name or "rate" in name else "whole numbers, `a,b,c`"
            )
        allowed = ", ".join(filter(None, [kind, *bounds])) or "text"
        default = derived.get(name) or ("`0`" if field.default is False else f"`{field.default}`")
        rows.append(f"| `{Settings.env_name(name)}` | {default} | {allowed} | {field.description or ''} |")
    return "\n".join(rows)

"""The nightly run's step graph, declared once.

Each :class:`Step` says what the step takes from the steps before it (their results, handed over by
return value: XCom in Airflow), which steps it only follows, the tables of its own date it reads and
writes, whether it can change published tables, and where it runs (Celery queue and Airflow pool).
The DAG builds its tasks from :data:`STEPS` in a loop, ``visrec step`` takes its choices and help
from it, :mod:`visrec.pipeline.steps` is checked against it when imported, and a test compares the
parsed DAG's edges with it. Adding a step: one entry here and its function in ``steps``.

Light on purpose (the standard library only): the scheduler imports it each time it parses the DAG.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from visrec.vocabulary import PUBLISHED_TABLES

# Celery queue -> Airflow pool that bounds it (the default queue has no pool).
POOLS: Mapping[str, str] = MappingProxyType({"spark": "visrec_spark", "training": "visrec_training"})
QUEUES = ("default", "spark", "training")


@dataclass(frozen=True, eq=False)
class Step:
    """One step of the nightly run: a DAG task and a ``visrec step`` choice."""

    name: str
    doc: str  # one line, for ``visrec step --help`` and the DAG's task docs
    takes: Mapping[str, str] = field(default_factory=dict)  # argument -> step whose result it reads
    follows: tuple[str, ...] = ()  # steps it runs after without reading their results
    reads: tuple[str, ...] = ()  # tables of its own date that must exist before it starts
    writes: tuple[str, ...] = ()  # tables of its own date it (over)writes
    changes_published: bool = False  # refuses a published date unless forced
    publishes: tuple[str, ...] = ()  # tables it makes visible to readers: its Airflow Asset outlets
    queue: str = "default"

    @property
    def upstream(self) -> tuple[str, ...]:
        """Every step this one runs after, sorted."""
        return tuple(sorted({*self.takes.values(), *self.follows}))

    @property
    def pool(self) -> str | None:
        """The Airflow pool of its queue, if it has one."""
        return POOLS.get(self.queue)


_NIGHT: tuple[Step, ...] = (
    Step(
        "ingest_images", "catalog images -> staging_images; bad files quarantined", writes=("staging_images",)
    ),
    Step(
        "ingest_events",
        "the day's raw event logs -> events; malformed, unknown and duplicate rows quarantined",
        writes=("events",),
        queue="spark",
    ),
    Step(
        "build_features",
        "events up to the date -> interactions, user_days, user_profiles, item_stats",
        follows=("ingest_events",),
        reads=("events",),
        writes=("interactions", "user_days", "user_profiles", "item_stats"),
        changes_published=True,
        queue="spark",
    ),
    Step(
        "ingest_user_photos",
        "the day's photo uploads -> staging_user_photos; retention applied",
        writes=("staging_user_photos",),
    ),
    Step(
        "train_cnn",
        "train (or fine-tune) the image model; register it behind the gate",
        follows=("ingest_images",),
        reads=("staging_images",),
        queue="training",
    ),
    Step(
        "embed_items",
        "embed the catalog with the champion image model -> item_embeddings, similar_items",
        takes={"cnn": "train_cnn"},
        reads=("staging_images",),
        writes=("item_embeddings", "similar_items"),
        changes_published=True,
    ),
    Step(
        "recognise_user_photos",
        "retained user photos through the image model -> user_photos, photo_recommendations",
        takes={"embeddings": "embed_items"},
        follows=("ingest_user_photos",),
        reads=("item_embeddings",),
        writes=("user_photos", "photo_recommendations"),
        changes_published=True,
    ),
    Step(
        "train_mf",
        "select and train the recommender; register it behind the gate",
        follows=("build_features", "embed_items"),
        reads=("events", "item_embeddings"),
        queue="training",
    ),
    Step(
        "train_ranker",
        "learn the second-stage ranker over the candidate generators -> ranker_training; register it "
        "behind the gate (beat the best generator, popularity and the served recommender)",
        follows=("train_mf",),  # its gate compares with the recommender train_mf leaves serving
        reads=("events", "item_embeddings"),
        writes=("ranker_training",),
        queue="training",
    ),
    Step(
        "train_gan",
        "train the conditional GAN when it is due, judged by the image model",
        takes={"embeddings": "embed_items"},
        reads=("staging_images",),
        queue="training",
    ),
    Step(
        "generate_looks",
        "generated looks for the most active users of each segment -> generated_looks",
        takes={"gan": "train_gan", "mf": "train_mf", "embeddings": "embed_items"},
        reads=("user_profiles", "item_embeddings"),
        writes=("generated_looks",),
        changes_published=True,
    ),
    Step(
        "score",
        "top-K for every user with the champion recommender -> recommendations",
        takes={"mf": "train_mf", "looks": "generate_looks"},
        # train_ranker: scoring serves the ranker champion tonight's training leaves, not yesterday's.
        follows=("recognise_user_photos", "train_ranker"),
        reads=("events", "user_profiles", "item_embeddings"),
        writes=("recommendations",),
        changes_published=True,
    ),
    Step(
        "publish",
        "validate the date's output tables, switch the release, refresh the warehouse",
        takes={"recommendations": "score"},
        follows=("generate_looks",),
        reads=("recommendations",),
        changes_published=True,
        publishes=PUBLISHED_TABLES,
    ),
)
# The report shows every step's result of the night: it takes them all.
STEPS: tuple[Step, ...] = (
    *_NIGHT,
    Step(
        "report",
        "the run's HTML report -> reports/ds=<ds>/index.html and MLflow",
        takes={step.name: step.name for step in _NIGHT},
        reads=("recommendations",),
    ),
)

BY_NAME: Mapping[str, Step] = MappingProxyType({step.name: step for step in STEPS})
NAMES: tuple[str, ...] = tuple(BY_NAME)


def _writer(table: str) -> str:
    return next(step.name for step in STEPS if table in step.writes)


def _check() -> None:
    """The declaration is a DAG in order: every upstream step comes earlier, every table read has a writer."""
    seen: set[str] = set()
    for step in STEPS:
        late = [up for up in step.upstream if up not in seen]
        unwritten = [t for t in step.reads if not any(t in s.writes for s in STEPS)]
        if late or unwritten or step.queue not in QUEUES or step.name in seen:
            raise ValueError(
                f"step {step.name}: upstream not declared before it {late}, tables nobody writes "
                f"{unwritten}, queue {step.queue!r}, or declared twice"
            )
        seen.add(step.name)


_check()


def made_by(table: str) -> str:
    """The command that makes ``table`` for a date: its writer's ``visrec step``."""
    return f"visrec step {_writer(table)}"

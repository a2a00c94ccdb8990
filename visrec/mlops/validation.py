"""Great Expectations (1.x) suites for every table, run on the real dataframes inside the jobs.

A run builds one ephemeral context (:class:`TableValidator`), validates each table as it is produced
and raises :class:`ValidationFailed`, naming every failed expectation, before a broken table is
written. The context's Data Docs (HTML) are then copied into the lake under
``validation/ds=<ds>/data_docs/`` so a person can browse what was checked.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from visrec.errors import VisrecError
from visrec.vocabulary import EVENT_TYPES, SOURCES

if TYPE_CHECKING:
    import pandas as pd

    from visrec.store.lake import Lake

log = logging.getLogger(__name__)


class ValidationFailed(VisrecError):
    """A table broke its suite; the message lists the failed expectations."""


def _within_ds(expectation):
    """A uniqueness expectation made to hold within each ``ds``; any other one unchanged."""
    import great_expectations as gx

    E = gx.expectations
    if isinstance(expectation, E.ExpectColumnValuesToBeUnique):
        return E.ExpectCompoundColumnsToBeUnique(column_list=["ds", expectation.column])
    if isinstance(expectation, E.ExpectCompoundColumnsToBeUnique):
        return E.ExpectCompoundColumnsToBeUnique(column_list=["ds", *expectation.column_list])
    return expectation


def _suites() -> dict[str, list]:
    import great_expectations as gx

    E = gx.expectations
    segments = ["new", "loyal", "engaged", "casual"]
    return {
        "catalog": [
            E.ExpectColumnValuesToNotBeNull(column="item_id"),
            E.ExpectColumnValuesToBeUnique(column="item_id"),
            E.ExpectColumnValuesToNotBeNull(column="category"),
        ],
        "events": [
            *[E.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "item_id", "ts", "category")],
            E.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
            E.ExpectColumnValuesToBeBetween(column="price", min_value=0),
        ],
        "interactions": [
            E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
            E.ExpectColumnValuesToBeBetween(column="confidence", min_value=0, strict_min=True),
            *[E.ExpectColumnValuesToBeBetween(column=f"n_{t}", min_value=0) for t in EVENT_TYPES],
            E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="last_ts", column_B="first_ts", or_equal=True),
        ],
        "user_days": [E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "day"])],
        "user_profiles": [
            E.ExpectColumnValuesToBeUnique(column="user_id"),
            E.ExpectColumnValuesToBeInSet(column="segment", value_set=segments),
            E.ExpectColumnValuesToBeBetween(column="recency_days", min_value=0),
            E.ExpectColumnValuesToBeBetween(column="active_days", min_value=1),
            E.ExpectColumnValuesToBeInSet(column="price_band", value_set=["low", "mid", "high"]),
        ],
        "item_stats": [
            E.ExpectColumnValuesToBeUnique(column="item_id"),
            E.ExpectColumnValuesToBeBetween(column="n_view_30d", min_value=0),
            E.ExpectColumnValuesToBeBetween(column="conversion_30d", min_value=0),
        ],
        "staging_images": [
            E.ExpectColumnValuesToBeUnique(column="item_id"),
            E.ExpectColumnValuesToNotBeNull(column="image_png"),
            E.ExpectColumnValuesToBeBetween(column="width", min_value=1),
            E.ExpectColumnValuesToBeBetween(column="height", min_value=1),
            E.ExpectColumnValueLengthsToEqual(column="content_hash", value=64),
        ],
        "recommendations": [
            E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "rank"]),
            E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
            E.ExpectColumnValuesToBeBetween(column="rank", min_value=1),
            E.ExpectColumnValuesToBeInSet(column="source", value_set=list(SOURCES)),
            E.ExpectColumnValuesToNotBeNull(column="score"),
            E.ExpectColumnValuesToNotBeNull(column="reason"),
        ],
        "ranker_training": [
            E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
            E.ExpectColumnValuesToBeInSet(column="label", value_set=[0.0, 1.0]),
            E.ExpectColumnValuesToNotBeNull(column="proposed_by"),
        ],
        "similar_items": [
            E.ExpectCompoundColumnsToBeUnique(column_list=["item_id", "rank"]),
            E.ExpectColumnValuesToBeBetween(column="score", min_value=-1.0001, max_value=1.0001),
        ],
        "photo_recommendations": [
            E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "photo_id", "rank"]),
            E.ExpectColumnValuesToBeBetween(column="rank", min_value=1),
        ],
        "generated_looks": [
            E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "rank"]),
            E.ExpectColumnValuesToNotBeNull(column="image_uri"),
        ],
        "user_photos": [
            E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "photo_id"]),
            E.ExpectColumnValuesToNotBeNull(column="model_version"),
        ],
        "staging_user_photos": [
            E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "photo_id"]),
            E.ExpectColumnValuesToNotBeNull(column="image_key"),
            E.ExpectColumnValuesToBeBetween(column="width", min_value=1),
            E.ExpectColumnValueLengthsToEqual(column="content_hash", value=64),
        ],
        "item_embeddings": [
            E.ExpectColumnValuesToBeUnique(column="item_id"),
            E.ExpectColumnValuesToNotBeNull(column="model_version"),
        ],
    }


@dataclass
class TableValidator:
    """One Great Expectations context for a run; validate tables, then publish the Data Docs."""

    ds: str
    step: str | None = None  # a pipeline step keeps its own Data Docs: validation/ds=<ds>/<step>/
    docs_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="visrec-gx-")))

    def __post_init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.context.add_data_docs_site(
            "visrec",
            {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(self.docs_dir),
                },
            },
        )
        self.source = self.context.data_sources.add_pandas("visrec")
        self.suites = _suites()
        self.results: dict[str, bool] = {}
        self.runs: dict[str, int] = {}

    def validate(self, table: str, df: pd.DataFrame, partitioned: bool = False) -> None:
        """Validate ``df`` against ``table``'s suite; raise :class:`ValidationFailed` on failure.
        ``partitioned``: ``df`` holds several dates' partitions, told apart by its ``ds`` column, and
        keys need to be unique within each date only (one run for a backfill's many days)."""
        gx = self._gx
        expectations = self.suites[table]
        if partitioned:
            expectations = [_within_ds(e) for e in expectations]
        # A table validated again by the same validator (a backfill's next chunk) gets its own name.
        self.runs[table] = self.runs.get(table, 0) + 1
        name = table if self.runs[table] == 1 else f"{table}-{self.runs[table]}"
        suite = self.context.suites.add(gx.ExpectationSuite(name=name))
        for expectation in expectations:
            suite.add_expectation(expectation.copy())
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs")],
            )
        )
        result = checkpoint.run(
            batch_parameters={"dataframe": df}, run_id=gx.RunIdentifier(run_name=f"{name}-{self.ds}")
        )
        self.results[table] = self.results.get(table, True) and result.success
        if result.success:
            log.info("validated %s (%d rows): %d expectations met", table, len(df), len(expectations))
            return
        failed = []
        for run_result in result.run_results.values():
            for r in run_result.results:
                if not r.success:
                    kwargs = {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}
                    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
                    count = (r.result or {}).get("unexpected_count")
                    sample = (r.result or {}).get("partial_unexpected_list", [])[:3]
                    failed.append(
                        f"{r.expectation_config.type}({args})"
                        + (
                            f": {count} of {len(df)} rows unexpected, e.g. {sample}"
                            if count is not None
                            else ""
                        )
                    )
        raise ValidationFailed(
            f"table {table} for ds={self.ds} failed {len(failed)} expectation(s): " + "; ".join(failed)
        )

    def publish_docs(self, lake: Lake) -> str:
        """Copy the Data Docs into the lake; return the URI of their index page."""
        step = f"/{self.step}" if self.step else ""
        prefix = f"validation/ds={self.ds}{step}/data_docs"
        lake.delete(prefix)
        for path in sorted(self.docs_dir.rglob("*")):
            if path.is_file():
                lake.put_bytes(f"{prefix}/{path.relative_to(self.docs_dir).as_posix()}", path.read_bytes())
        return lake.url(f"{prefix}/index.html")

"""The serving store: the published recommendations of one date copied into a database an application
reads per user (a SQLite file by default, PostgreSQL on a cluster: ``VISREC_SERVING_URI``).

Run by the ``visrec_serving_export`` DAG when the nightly run publishes (the ``recommendations``
asset), or by ``visrec export``. The rows are loaded into a new table first; one transaction then
renames it into place and records the release it holds (``visrec_release``), so a reader sees the
old release or the new one, never a mix, and a failed export leaves the old one serving. Idempotent
per date: exporting what is already served does nothing, and an older date (a backfill's) never
replaces a newer one unless forced.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text

from visrec.errors import VisrecError
from visrec.settings import Settings
from visrec.store.lake import Lake, read_published, read_release

log = logging.getLogger(__name__)

TABLE = "recommendations"
RELEASE_TABLE = "visrec_release"
SQL_TYPES = {"string": "TEXT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT", "float": "REAL"}


@dataclass(frozen=True)
class Export:
    """What an export did: the date it serves, its rows, and why it skipped (None: it swapped)."""

    ds: str
    rows: int
    uri: str
    skipped: str | None = None


def served(settings: Settings) -> dict | None:
    """The release the serving store holds (``ds``, ``published_at``, ``rows``), or None."""
    engine = _engine(settings)
    with engine.connect() as con:
        return _served(con)


def export_recommendations(
    settings: Settings, ds: str | None = None, *, lake: Lake | None = None, force: bool = False
) -> Export:
    """Serve the published recommendations of ``ds`` (default: the newest published date)."""
    lake = lake or Lake.from_settings(settings)
    release = read_release(lake)
    parts = release["tables"].get(TABLE, {})
    if not parts:
        raise VisrecError("no recommendations are published yet: run the nightly DAG (or `visrec publish`)")
    ds = ds or max(parts)
    if ds not in parts:
        raise VisrecError(
            f"recommendations for {ds} are not published (published: {', '.join(sorted(parts))})"
        )
    uri = _display(settings.serving_uri)
    engine = _engine(settings)
    with engine.connect() as con:
        now = _served(con)
    if now and not force:
        if now["ds"] > ds:
            why = f"serving {now['ds']}, newer than {ds} (an old date does not replace it; force does)"
            return Export(now["ds"], now["rows"], uri, skipped=why)
        if now["ds"] == ds and now["published_at"] == release["published_at"]:
            return Export(ds, now["rows"], uri, skipped=f"already serving {ds}")
    rows = read_published(lake, release, TABLE, ds)
    incoming, token = f"{TABLE}__incoming", uuid.uuid4().hex[:8]
    columns = ", ".join(f"{f.name} {SQL_TYPES[str(f.type)]}" for f in rows.schema)
    with engine.begin() as con:  # load beside the served table: readers see nothing of it yet
        con.execute(text(f"DROP TABLE IF EXISTS {incoming}"))
        con.execute(text(f"CREATE TABLE {incoming} ({columns})"))
        names = rows.schema.names
        insert = text(
            f"INSERT INTO {incoming} ({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"
        )
        for batch in rows.to_batches(max_chunksize=50_000):
            con.execute(insert, batch.to_pylist())
        con.execute(text(f"CREATE INDEX ix_{TABLE}_user_{token} ON {incoming} (user_id, rank)"))
    with engine.begin() as con:  # the swap: one transaction
        con.execute(text(f"DROP TABLE IF EXISTS {TABLE}__old"))
        if _has_table(con, TABLE):
            con.execute(text(f"ALTER TABLE {TABLE} RENAME TO {TABLE}__old"))
        con.execute(text(f"ALTER TABLE {incoming} RENAME TO {TABLE}"))
        con.execute(
            text(f"CREATE TABLE IF NOT EXISTS {RELEASE_TABLE} (ds TEXT, published_at TEXT, rows BIGINT)")
        )
        con.execute(text(f"DELETE FROM {RELEASE_TABLE}"))
        con.execute(
            text(f"INSERT INTO {RELEASE_TABLE} VALUES (:ds, :published_at, :rows)"),
            {"ds": ds, "published_at": release["published_at"], "rows": rows.num_rows},
        )
    with engine.begin() as con:
        con.execute(text(f"DROP TABLE IF EXISTS {TABLE}__old"))
    log.info("serving %s: %d recommendations of %s", uri, rows.num_rows, ds)
    return Export(ds, rows.num_rows, uri)


def _engine(settings: Settings):
    uri = settings.serving_uri
    if uri.startswith("postgresql://"):
        return create_engine("postgresql+psycopg2://" + uri.removeprefix("postgresql://"))
    Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(uri, connect_args={"timeout": 60})

    # Python's sqlite3 commits before DDL on its own, so the rename would not be atomic (a test saw
    # "no such table" mid-swap): take transactions over, as SQLAlchemy's pysqlite notes advise.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _has_table(con, name: str) -> bool:
    return inspect(con).has_table(name)


def _served(con) -> dict | None:
    if not _has_table(con, RELEASE_TABLE):
        return None
    row = con.execute(text(f"SELECT ds, published_at, rows FROM {RELEASE_TABLE}")).first()
    return dict(row._mapping) if row else None


def _display(uri: str) -> str:
    """The URI without its password."""
    head, sep, tail = uri.partition("@")
    if not sep or "://" not in head:
        return uri
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}:***@{tail}"

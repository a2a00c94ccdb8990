"""The serving store: the published recommendations swapped into SQLite atomically (a reader running
throughout never sees two releases mixed or a half-loaded table), idempotent per date, an older date
never replacing a newer one unless forced. The releases are written as `publish` leaves them: Parquet
parts listed in the lake's release file. (PostgreSQL and the asset-triggered DAG: make cluster-test.)"""

from __future__ import annotations

import io
import json
import sqlite3
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from visrec.errors import VisrecError
from visrec.serving import export_recommendations, served
from visrec.settings import Settings
from visrec.store.lake import RELEASE_KEY, Lake
from visrec.store.schemas import spec_for

pytestmark = pytest.mark.unit

D1, D2 = "2026-11-01", "2026-11-02"


def _release(lake: Lake, sizes: dict[str, int], published_at: str) -> None:
    """Publish ``sizes[ds]`` users x 10 recommendations for each date (two Parquet parts each)."""
    schema = spec_for("recommendations").schema
    tables = {}
    for ds, users in sizes.items():
        keys = []
        for part in range(2):
            rows = [
                {"user_id": f"u{part}-{u}", "rank": r, "item_id": f"{ds}-i{r}", "score": 1.0 / r, "source": "model",
                 "reason": "model", "model_version": "visrec-mf/1"}
                for u in range(users // 2) for r in range(1, 11)
            ]  # fmt: skip
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
            key = f"published/recommendations/ds={ds}/part-{part}.parquet"
            lake.put_bytes(key, buffer.getvalue())
            keys.append(key)
        tables[ds] = keys
    release = {"ds": max(sizes), "published_at": published_at, "tables": {"recommendations": tables}}
    lake.put_bytes(RELEASE_KEY, json.dumps(release).encode())


@pytest.fixture
def shop(tmp_path):
    settings = Settings(home=tmp_path)
    lake = Lake.from_settings(settings)
    _release(lake, {D1: 400, D2: 600}, "2026-11-02T03:00:00+00:00")
    return settings, lake


def test_nothing_published_is_a_clear_error(tmp_path):
    with pytest.raises(VisrecError, match="no recommendations are published yet"):
        export_recommendations(Settings(home=tmp_path))


def test_export_serves_the_newest_release_once(shop):
    settings, lake = shop
    done = export_recommendations(settings, lake=lake)
    assert (done.ds, done.rows, done.skipped) == (D2, 6000, None)
    con = sqlite3.connect(settings.serving_uri.removeprefix("sqlite:///"))
    assert con.execute(
        "SELECT count(*), count(DISTINCT user_id), min(ds) FROM recommendations"
    ).fetchone() == (6000, 600, D2)
    assert served(settings) == {"ds": D2, "published_at": "2026-11-02T03:00:00+00:00", "rows": 6000}
    again = export_recommendations(settings, lake=lake)
    assert again.skipped == f"already serving {D2}"
    older = export_recommendations(settings, D1, lake=lake)  # a backfill's date
    assert older.skipped.startswith(f"serving {D2}, newer than {D1}") and served(settings)["ds"] == D2
    forced = export_recommendations(settings, D1, lake=lake, force=True)
    assert forced.rows == 4000 and served(settings)["ds"] == D1
    with pytest.raises(VisrecError, match="2026-10-31 are not published"):
        export_recommendations(settings, "2026-10-31", lake=lake)


def test_a_reader_never_sees_a_mix_during_swaps(shop):
    settings, lake = shop
    export_recommendations(settings, D1, lake=lake)
    path = settings.serving_uri.removeprefix("sqlite:///")
    seen, stop, errors = set(), threading.Event(), []

    def read() -> None:
        con = sqlite3.connect(path, timeout=30)
        while not stop.is_set():
            try:
                seen.add(
                    con.execute(
                        "SELECT count(*), count(DISTINCT ds), min(ds) FROM recommendations"
                    ).fetchone()
                )
            except sqlite3.OperationalError as error:  # a locked database, never a missing table
                errors.append(str(error))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(6):
            export_recommendations(settings, (D2, D1)[n % 2], lake=lake, force=True)
    finally:
        stop.set()
        reader.join()
    assert seen and seen <= {(4000, 1, D1), (6000, 1, D2)}, seen
    assert not [e for e in errors if "no such table" in e], errors

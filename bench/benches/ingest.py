"""The ingest bench: `python bench/run.py ingest`. See :func:`run`."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchkit import HM_SAMPLE, Figures, figure


def _duckdb_reference(path: str, out: str) -> float:
    """What one machine can do: DuckDB (2 threads) reads the JSONL log, keeps the rows with the
    required fields, a known event type and a parseable time, drops exact duplicates and writes
    Parquet. Seconds."""
    import duckdb

    fields = ", ".join(
        f"{n}: 'VARCHAR'" for n in ("user_id", "item_id", "event_type", "ts", "event_id", "price")
    )
    sql = f"""
        COPY (
            SELECT DISTINCT user_id, item_id, event_type, TRY_CAST(ts AS TIMESTAMPTZ) AS ts, event_id,
                   TRY_CAST(price AS DOUBLE) AS price
            FROM read_json('{path}', format = 'newline_delimited', columns = {{{fields}}})
            WHERE user_id <> '' AND item_id <> '' AND event_type IN ('view', 'click', 'add_to_cart', 'purchase')
              AND TRY_CAST(ts AS TIMESTAMPTZ) IS NOT NULL
        ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"""
    con = duckdb.connect()
    con.execute("SET threads = 2")
    started = time.perf_counter()
    con.execute(sql)
    return time.perf_counter() - started


def run() -> Figures:
    """Event ingestion of about 2 million events in one day's log: visrec's job on DuckDB (the default
    on one machine) and on Spark local[2] (the cluster route), beside DuckDB alone doing read +
    validate + dedupe + write of the same file; the feature jobs on both engines; the interactions
    aggregation on both engines beside DuckDB alone; and image ingestion throughput."""
    import duckdb

    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.ingest.catalog_images import ingest_images
    from visrec.ingest.events import ingest_events
    from visrec.ingest.features import build_features
    from visrec.ingest.jobs.features import interactions_sql
    from visrec.settings import Settings
    from visrec.store.engine import DuckDBEngine, SparkEngine
    from visrec.store.lake import Lake
    from visrec.store.spark import get_spark

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), error_budget=0.5)
        lake = Lake.from_settings(settings)
        config = ShopConfig(users=30_000, items=5_000, days=30, seed=1)
        generate_shop(config, lake)
        # All days in one log: one ingestion job over ~2M lines.
        ds = "2026-11-30"
        lines = b"".join(lake.get_bytes(k) for k in lake.list_keys("raw/events"))
        lake.delete("raw/events")
        key = f"raw/events/dt={ds}/events.jsonl"
        lake.put_bytes(key, lines)
        n_events = lines.count(b"\n")
        shape = f"{n_events} events in one day's JSONL ({len(lines) / 1e6:.0f} MB), {config.users} users x {config.items} items"
        reference = _duckdb_reference(lake.path(key), str(Path(tmp) / "reference.parquet"))
        out["ingest.events.count"] = figure(n_events, "events", shape)
        out["ingest.events.duckdb_reference_seconds"] = figure(
            round(reference, 2), "s", "DuckDB alone, 2 threads: read + validate + dedupe + write Parquet"
        )
        weights = settings.weights()
        engines = {"duckdb": DuckDBEngine(threads=2), "spark": SparkEngine(get_spark(settings, "bench"))}
        ingest_events(settings, lake, "2026-11-29", engines["spark"])  # warm up the JVM on an empty day
        for name, engine in engines.items():
            started = time.perf_counter()
            counts, _ = ingest_events(settings, lake, ds, engine)
            seconds = time.perf_counter() - started
            assert counts.valid == n_events, counts
            note = f"{shape}; visrec's job on {'DuckDB, 2 threads' if name == 'duckdb' else 'Spark local[2]'}"
            prefix = "ingest.events" if name == "duckdb" else "ingest.events.spark"
            out[f"{prefix}.seconds"] = figure(round(seconds, 2), "s", note)
            out[f"{prefix}.events_per_s"] = figure(round(n_events / seconds), "events/s", note)
            out[f"{prefix}.over_duckdb" if name == "spark" else "ingest.events.over_duckdb"] = figure(
                round(seconds / reference, 1),
                "x",
                "this job's time over DuckDB alone's on the same file (goal <= 5)",
            )
            started = time.perf_counter()
            rows = build_features(settings, lake, ds, engine, rebuild=True)
            out[f"ingest.features.{name}_seconds"] = figure(
                round(time.perf_counter() - started, 2),
                "s",
                f"interactions + user days + user profiles + item stats over {counts.valid} events, written",
            )
            # The interactions aggregation alone, materialised as Arrow on each side.
            engine.register_lake("events", lake, "events", [ds])
            started = time.perf_counter()
            n_pairs = engine.query(
                interactions_sql(ds, weights, settings.decay_half_life_days, None)
            ).num_rows
            out[f"ingest.interactions.{name}_engine_seconds"] = figure(
                round(time.perf_counter() - started, 3),
                "s",
                f"visrec's interactions SQL on {name} -> {n_pairs} pairs",
            )
            assert n_pairs == rows["interactions"]
            engine.drop("events")
        # DuckDB alone, straight from the Parquet file: the floor for the aggregation.
        path = lake.partition_files("events", ds)[0].removeprefix("file://")
        case = " ".join(f"WHEN '{k}' THEN {v}" for k, v in weights.items())
        sql = f"""
            SELECT user_id, item_id,
                   SUM((CASE event_type {case} END) *
                       POW(0.5, (EPOCH(TIMESTAMPTZ '{ds} 00:00:00+00' + INTERVAL 1 DAY) - EPOCH(ts)) / 86400.0
                                / {settings.decay_half_life_days})) AS confidence,
                   COUNT(*) FILTER (event_type = 'view') AS n_view, COUNT(*) FILTER (event_type = 'click') AS n_click,
                   COUNT(*) FILTER (event_type = 'add_to_cart') AS n_cart,
                   COUNT(*) FILTER (event_type = 'purchase') AS n_purchase, MIN(ts), MAX(ts)
            FROM read_parquet('{path}') GROUP BY user_id, item_id"""
        con = duckdb.connect()
        con.execute("SET threads = 2")
        started = time.perf_counter()
        n_duck = con.execute(sql).to_arrow_table().num_rows
        duck_agg = time.perf_counter() - started
        assert n_duck == n_pairs
        out["ingest.interactions.duckdb_seconds"] = figure(
            round(duck_agg, 3), "s", "the same aggregation written by hand for DuckDB, from the Parquet file"
        )
        for name in engines:
            value = out[f"ingest.interactions.{name}_engine_seconds"]["value"] / duck_agg
            out[f"ingest.interactions.{name}_over_duckdb"] = figure(
                round(value, 1),
                "x",
                f"visrec's aggregation on {name} over DuckDB alone's (goal <= 2 on one machine)",
            )

    # Image ingestion: the real H&M photos when present, otherwise the synthetic shop's.
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), error_budget=0.5)
        lake = Lake.from_settings(settings)
        if (HM_SAMPLE / "articles.csv").exists():
            from visrec.devdata.importer import import_hm

            import_hm(HM_SAMPLE, lake)
            source = "hm-sample (96x144 JPEG)"
        else:
            generate_shop(ShopConfig(users=100, items=10_000, days=1), lake)
            source = "synthetic shop (64x64)"
        started = time.perf_counter()
        counts, _ = ingest_images(settings, lake, "2026-11-01")
        first = time.perf_counter() - started
        started = time.perf_counter()
        again, _ = ingest_images(settings, lake, "2026-11-02")
        second = time.perf_counter() - started
        note = f"{counts.files} images of {source} -> {settings.image_size}x{settings.image_size} PNG, {os.cpu_count()} threads"
        out["ingest.images.count"] = figure(counts.files, "images", note)
        out["ingest.images.images_per_s"] = figure(round(counts.files / first), "images/s", note)
        out["ingest.images.unchanged_images_per_s"] = figure(
            round(again.files / second), "images/s", "the next day, every image unchanged (hash check only)"
        )
    return out

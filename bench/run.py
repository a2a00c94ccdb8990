"""Benchmarks. Every figure goes to bench/results.json (flat keys) and bench/RESULTS.md (for people,
with the command that made it). ``python bench/run.py [NAME ...]`` runs some or all of them; figures of
benchmarks not run this time are kept from the previous results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
CACHE = HERE / ".cache"
FIGURES = HERE / "figures.json"  # every figure with its unit, note and bench; the other two derive

Figures = dict[str, dict]  # key -> {"value", "unit", "command", "note"}


def _figure(value: float | int, unit: str, note: str = "") -> dict:
    return {"value": value, "unit": unit, "note": note}


def bench_synth() -> Figures:
    """Time of `visrec synth` at the demo's default scale and at 50k users x 10k items x 30 days."""
    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.store.lake import Lake

    out: Figures = {}
    for name, config in [
        ("default", ShopConfig()),
        ("large", ShopConfig(users=50_000, items=10_000, days=30)),
    ]:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            summary = generate_shop(config, Lake(Path(tmp).as_uri()))
            seconds = time.perf_counter() - started
        scale = f"{config.users} users x {config.items} items x {config.days} days"
        out[f"synth.{name}.seconds"] = _figure(round(seconds, 2), "s", scale)
        out[f"synth.{name}.events"] = _figure(summary.events, "events", scale)
        out[f"synth.{name}.events_per_s"] = _figure(round(summary.events / seconds), "events/s", scale)
    return out


HM_SAMPLE = Path(os.environ.get("VISREC_HM_SAMPLE", HERE.parent.parent / "shared" / "data" / "hm-sample"))


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


def bench_ingest() -> Figures:
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
        out["ingest.events.count"] = _figure(n_events, "events", shape)
        out["ingest.events.duckdb_reference_seconds"] = _figure(
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
            out[f"{prefix}.seconds"] = _figure(round(seconds, 2), "s", note)
            out[f"{prefix}.events_per_s"] = _figure(round(n_events / seconds), "events/s", note)
            out[f"{prefix}.over_duckdb" if name == "spark" else "ingest.events.over_duckdb"] = _figure(
                round(seconds / reference, 1),
                "x",
                "this job's time over DuckDB alone's on the same file (goal <= 5)",
            )
            started = time.perf_counter()
            rows = build_features(settings, lake, ds, engine, rebuild=True)
            out[f"ingest.features.{name}_seconds"] = _figure(
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
            out[f"ingest.interactions.{name}_engine_seconds"] = _figure(
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
        out["ingest.interactions.duckdb_seconds"] = _figure(
            round(duck_agg, 3), "s", "the same aggregation written by hand for DuckDB, from the Parquet file"
        )
        for name in engines:
            value = out[f"ingest.interactions.{name}_engine_seconds"]["value"] / duck_agg
            out[f"ingest.interactions.{name}_over_duckdb"] = _figure(
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
        out["ingest.images.count"] = _figure(counts.files, "images", note)
        out["ingest.images.images_per_s"] = _figure(round(counts.files / first), "images/s", note)
        out["ingest.images.unchanged_images_per_s"] = _figure(
            round(again.files / second), "images/s", "the next day, every image unchanged (hash check only)"
        )
    return out


def bench_backfill() -> Figures:
    """A new user's history: a synthetic shop of 213 days (about 100,000 events, 1,666 items with
    images, no uploads) ingested in one pass, as `visrec ingest --start --end` does; then the nightly
    ingestion step (events + incremental features) of days 200, 50 and 10 with all earlier days in
    place, and a full rebuild of day 200's features for contrast. Latest day first: re-ingesting a day
    makes every later snapshot stale (a late day), which would turn a later day's step into a rebuild.
    Then the step of a 10th and a 40th day with day 200's state (snapshot size and the night's
    events), to tell the days behind a step from the state it carries."""

    from visrec import pipeline
    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.ingest.features import build_features
    from visrec.settings import Settings
    from visrec.store.lake import Lake

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), error_budget=0.5)
        lake = Lake.from_settings(settings)
        config = ShopConfig(
            users=240, items=1666, days=213, seed=7, uploader_share=0.0, upload_only_share=0.0
        )
        shop = generate_shop(config, lake)
        days = _raw_event_days(lake)
        shape = f"{len(days)} days, {shop.events} events, {config.items} items with images"
        started = time.perf_counter()
        summary = pipeline.ingest_range(days, settings)
        seconds = time.perf_counter() - started
        out["backfill.days"] = _figure(len(days), "days", shape)
        out["backfill.events"] = _figure(summary["events"]["valid"], "events", shape)
        out["backfill.seconds"] = _figure(
            round(seconds, 1), "s", f"{shape}: `visrec ingest --start --end` in one pass (goal <= 60)"
        )
        steps = {}
        for n in (200, 50, 10):
            steps[n] = _nightly_step(settings, lake, days[n - 1])
            seconds, events, pairs = steps[n]
            out[f"backfill.nightly_day{n}_seconds"] = _figure(
                seconds,
                "s",
                f"the nightly step of day {n} ({n - 1} days before it), median of 5: {events} events "
                f"ingested, features from the day before: {pairs} (user, item) pairs in the snapshot",
            )
        started = time.perf_counter()
        build_features(settings, lake, days[199], rebuild=True)
        out["backfill.rebuild_day200_seconds"] = _figure(
            round(time.perf_counter() - started, 2), "s", "day 200's features rebuilt from the whole history"
        )
    # The same step with few days behind it and day 200's state: a busier shop reaches day 200's
    # snapshot size by its 10th (or 40th: the item statistics' 30-day window full) day, and its last
    # night's log is cut to day 200's number of events.
    _, events, pairs = steps[200]
    for users, n in ((2950, 10), (880, 40)):
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(home=Path(tmp), error_budget=0.5)
            lake = Lake.from_settings(settings)
            busy = ShopConfig(
                users=users, items=1666, days=n, seed=7, uploader_share=0.0, upload_only_share=0.0
            )
            generate_shop(busy, lake)
            days = _raw_event_days(lake)
            pipeline.ingest_range(days[:-1], settings)
            keys = lake.list_keys(f"raw/events/dt={days[-1]}")
            lines = [line for key in keys for line in lake.get_bytes(key).decode().splitlines()]
            for key in keys:
                lake.delete(key)
            lake.put_bytes(
                f"raw/events/dt={days[-1]}/events.jsonl", ("\n".join(lines[:events]) + "\n").encode()
            )
            seconds, busy_events, busy_pairs = _nightly_step(settings, lake, days[-1])
            out[f"backfill.nightly_day{n}_same_state_seconds"] = _figure(
                seconds,
                "s",
                f"the nightly step of day {n} of a shop of {users} users ({n - 1} days before it), median "
                f"of 5: {busy_events} events ingested (the night's log cut to day 200's), {busy_pairs} pairs "
                f"in the snapshot (day 200 of the 213-day shop: {pairs}); against "
                "backfill.nightly_day200_seconds",
            )
    return out


def _raw_event_days(lake) -> list[str]:
    """The days of the raw zone's event logs (``raw/events/dt=<day>/...``), sorted."""
    return sorted({k.split("dt=")[1].split("/")[0] for k in lake.list_keys("raw/events")})


def _nightly_step(settings, lake, ds: str) -> tuple[float, int, int]:
    """The nightly ingestion step of ``ds`` (its events, then incremental features), median seconds of
    five (a step takes a fifth of a second), the events it ingested and the pairs in its snapshot."""
    import numpy as np

    from visrec.ingest.events import ingest_events
    from visrec.ingest.features import build_features

    times = []
    for _ in range(5):
        started = time.perf_counter()
        counts, _ = ingest_events(settings, lake, ds)
        rows = build_features(settings, lake, ds)
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)), 3), counts.raw, rows["interactions"]


def bench_cnn() -> Figures:
    """The image model at default settings on hm-sample (held-out 20%): top-1 on product_type and on
    product_group (the group of the predicted type), training wall time, embedding throughput.
    Without hm-sample, the same on a synthetic shop of 5,000 items."""
    import csv

    import numpy as np

    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.ingest.catalog_images import ingest_images
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import load_staged_images
    from visrec.vision.embed import embed_pixels
    from visrec.vision.train import CNNConfig, train_cnn

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), error_budget=0.5)
        lake = Lake.from_settings(settings)
        if (HM_SAMPLE / "articles.csv").exists():
            from visrec.devdata.importer import import_hm

            import_hm(HM_SAMPLE, lake)
            prefix, source = "cnn.hm", "hm-sample"
        else:
            generate_shop(ShopConfig(users=100, items=5_000, days=1), lake)
            prefix, source = "cnn.synthetic", "synthetic shop"
        ds = "2026-11-01"
        ingest_images(settings, lake, ds)
        images = load_staged_images(lake, ds)
        config = CNNConfig(max_minutes=settings.cnn_max_minutes)
        result = train_cnn(settings, ds, lake=lake, config=config, images=images)
        m = result.metrics
        note = (
            f"{source}: {len(images.item_ids)} images at {settings.image_size}px, {len(result.class_names)} "
            f"classes, 20% held out, default CNNConfig (max {config.max_minutes} min), {os.cpu_count()} CPU cores"
        )
        out[f"{prefix}.product_type_top1"] = _figure(round(m["held_out_accuracy"], 4), "accuracy", note)
        out[f"{prefix}.product_type_top5"] = _figure(round(m["held_out_top5_accuracy"], 4), "accuracy", note)
        out[f"{prefix}.majority_class"] = _figure(round(m["majority_class_accuracy"], 4), "accuracy", note)
        out[f"{prefix}.train_minutes"] = _figure(
            round(m["train_seconds"] / 60, 2), "min", f"{m['epochs_run']:.0f} epochs"
        )
        if prefix == "cnn.hm":
            group_of = {}
            with open(HM_SAMPLE / "articles.csv", newline="") as f:
                for row in csv.DictReader(f):
                    group_of[row["article_id"]] = row["product_group_name"]
            type_to_group = {}
            for item, cat in zip(images.item_ids, images.categories, strict=True):
                type_to_group.setdefault(cat, group_of[item])
            held_items = [images.item_ids[i] for i in result.held_out]
            predicted_group = [type_to_group[result.class_names[p]] for p in result.predictions]
            acc = float(np.mean([group_of[i] == g for i, g in zip(held_items, predicted_group, strict=True)]))
            out[f"{prefix}.product_group_top1"] = _figure(
                round(acc, 4), "accuracy", "group of the predicted product_type"
            )
        started = time.perf_counter()
        embeddings = embed_pixels(result.model, images.pixels)
        seconds = time.perf_counter() - started
        if prefix == "cnn.hm":  # kept for the recommender and GAN benches on hm-sample (git-ignored)
            CACHE.mkdir(exist_ok=True)
            split = (
                result.model.features_dim if result.model.default_embedding == "both" else embeddings.shape[1]
            )
            np.savez(
                CACHE / "hm_embeddings.npz",
                item_ids=np.array(images.item_ids),
                embeddings=embeddings,
                classifier_dims=split,
            )
            np.savez(CACHE / "hm_pixels.npz", item_ids=np.array(images.item_ids), pixels=images.pixels)
            result.model.save(CACHE / "hm_cnn.keras")
        out[f"{prefix}.embed_images_per_s"] = _figure(
            round(len(images.pixels) / seconds), "images/s", f"batch 256, {os.cpu_count()} cores"
        )
    return out


def bench_mf() -> Figures:
    """Recommender quality on the demo-scale synthetic shop (last 2 days held out): every model's
    Recall@20 and cold-item recall beside an oracle that ranks by each user's true taste and a
    learner that knows the true item attributes but must learn the tastes; item embeddings from the
    image model trained on the shop's own images (3-minute budget). ``selected`` is what the nightly
    search picks; the ``*_true_attributes`` rows feed VBPR the true attributes instead of embeddings."""
    import dataclasses
    import json

    import numpy as np

    from visrec.devdata.synth import ShopConfig, generate_shop, write_events_table
    from visrec.ingest.catalog_images import ingest_images
    from visrec.recsys.baselines import ItemCF, Popularity, Recommender, SparkALS, SparkItemCF, VisualProfile
    from visrec.recsys.data import build_split
    from visrec.recsys.select import make_vbpr, select_vbpr
    from visrec.recsys.train import evaluate_model
    from visrec.recsys.vbpr import VBPRRecommender
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.spark import get_spark
    from visrec.vision.embed import embed_items
    from visrec.vision.train import CNNConfig, train_cnn

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), test_days=2, test_min_users=1)  # the bench's fixed split
        lake = Lake.from_settings(settings)
        config = ShopConfig()
        generate_shop(config, lake)
        last = config.days and f"2026-11-{config.days:02d}"
        ingest_images(settings, lake, last)
        cnn = train_cnn(settings, last, lake=lake, config=CNNConfig(max_minutes=3, register=False))
        embed_items(settings, last, lake, cnn.model, "bench")
        write_events_table(lake)
        split = build_split(settings, lake, last)

        users = {u["user_id"]: u for u in map(json.loads, lake.get_bytes("truth/users.jsonl").splitlines())}
        truth = {}
        for line in lake.get_bytes("truth/items.csv").decode().splitlines()[1:]:
            item, cat, colour, pattern, *_ = line.split(",")
            truth[item] = (cat, colour, pattern)

        class Oracle(Recommender):
            def fit(self, data):
                self.affinity = np.array(
                    [
                        [
                            users[u]["category"][truth[i][0]]
                            + users[u]["colour"][truth[i][1]]
                            + users[u]["pattern"][truth[i][2]]
                            for i in data.item_ids
                        ]
                        for u in data.user_ids
                    ],
                    np.float32,
                )
                return self

            def score(self, userids):
                return self.affinity[userids]

        class AttributeProfile(Recommender):
            """What a learner could reach if it knew every item's true category, colour and pattern
            (the image model only approximates them): each user's weights on the three are
            estimated from their own history (log of Laplace-smoothed counts), plus half the log
            popularity. The oracle knows the weights; this has to learn them from a few items."""

            def fit(self, data):
                seen = (data.user_items > 0).astype(np.float32).tocsr()
                scores = np.zeros(data.user_items.shape, np.float32)
                for k in range(3):
                    values = sorted({truth[i][k] for i in data.item_ids})
                    onehot = np.zeros((data.n_items, len(values)), np.float32)
                    onehot[np.arange(data.n_items), [values.index(truth[i][k]) for i in data.item_ids]] = 1
                    counts = np.asarray(seen @ onehot) + 1.0
                    scores += np.log(counts / counts.sum(1, keepdims=True)) @ onehot.T
                popularity = np.asarray(seen.sum(0)).ravel() + 1.0
                self.scores = scores + 0.5 * np.log(popularity / popularity.sum())[None, :]
                return self

            def score(self, userids):
                return self.scores[userids]

        spark = get_spark(settings, "bench-mf")
        models = {
            "oracle": Oracle(),
            "attribute_profile": AttributeProfile(),
            "popularity": Popularity(),
            "item_cf": ItemCF(),
            "spark_item_cf": SparkItemCF(spark),
            "visual_profile": VisualProfile(),
            "spark_als": SparkALS(spark),
            "mf": VBPRRecommender(visual_factors=0),
            "vbpr": VBPRRecommender(),
            # What the nightly training picks: a search on a validation window before the test window.
            "selected": make_vbpr(settings, select_vbpr(settings, split, last).params),
        }
        note = (
            f"synthetic shop {config.users} users x {config.items} items x {config.days} days, "
            f"test = clicks/carts/purchases in the last {settings.test_days} days, "
            f"{int(split.cold.sum())} cold items; CNN held-out accuracy {cnn.metrics['held_out_accuracy']:.3f}"
        )
        results = {name: evaluate_model(model, split) for name, model in models.items()}
        # The same recommender fed the items' true attributes (one-hot) instead of the image model's
        # embeddings: how far the embeddings, not the recommender, limit it.
        names = sorted({v for attrs in truth.values() for v in attrs})
        onehot = np.zeros((split.train.n_items, len(names)), np.float32)
        for row, item in enumerate(split.train.item_ids):
            onehot[row, [names.index(v) for v in truth[item]]] = 1.0
        onehot /= np.linalg.norm(onehot, axis=1, keepdims=True)
        told = dataclasses.replace(
            split, train=dataclasses.replace(split.train, item_features=onehot, classifier_dims=None)
        )
        results["vbpr_true_attributes"] = evaluate_model(VBPRRecommender(), told)
        results["selected_true_attributes"] = evaluate_model(
            make_vbpr(settings, select_vbpr(settings, told, last).params), told
        )
        # The item embeddings are the image model's classifier and retrieval embeddings side by side; VBPR
        # reads the classifier's part (classifier_dims), the visual profile all of it. Each fed the other
        # way (issue 24: which embedding each should use).
        both = dataclasses.replace(split, train=dataclasses.replace(split.train, classifier_dims=None))
        results["vbpr_both_embeddings"] = evaluate_model(VBPRRecommender(), both)
        part = split.train.item_features[:, : split.train.classifier_dims]
        part = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        fed = dataclasses.replace(
            split, train=dataclasses.replace(split.train, item_features=part, classifier_dims=None)
        )
        results["visual_profile_classifier_embedding"] = evaluate_model(VisualProfile(), fed)
        for name, metrics in results.items():
            for key in (
                "hits_at_20",
                "recall_at_20",
                "ndcg_at_20",
                "map_at_20",
                "cold_recall_at_20",
                "coverage",
                "intra_list_diversity",
                "novelty",
                "fit_seconds",
            ):
                out[f"mf.synthetic.{name}.{key}"] = _figure(round(metrics[key], 4), key, note)
        out["mf.synthetic.vbpr_over_oracle_recall_at_20"] = _figure(
            round(results["vbpr"]["recall_at_20"] / results["oracle"]["recall_at_20"], 3),
            "ratio",
            "goal >= 0.8",
        )
        out["mf.synthetic.selected_over_attribute_profile_recall_at_20"] = _figure(
            round(results["selected"]["recall_at_20"] / results["attribute_profile"]["recall_at_20"], 3),
            "ratio",
            "goal >= 0.9",
        )
        out["mf.synthetic.attribute_profile_over_oracle_recall_at_20"] = _figure(
            round(results["attribute_profile"]["recall_at_20"] / results["oracle"]["recall_at_20"], 3),
            "ratio",
            "how much of the oracle a learner that knows the true item attributes reaches from the histories",
        )
    return out


def _implicit(model):
    """``implicit``'s ALS or BPR behind visrec's batch interface (a bench-only dependency)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from visrec.recsys.baselines import FactorRecommender

    class Implicit(FactorRecommender):
        def fit(self, data):
            with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
                model.fit(data.user_items.tocsr().astype(np.float32), show_progress=False)
            self.user_vectors = np.asarray(model.user_factors, np.float32)
            self.item_vectors = np.asarray(model.item_factors, np.float32)
            return self

    return Implicit()


def bench_mf_speed() -> Figures:
    """The recommender's training cost: seconds per epoch per million interactions (each with the
    default four negatives), default settings, on a random matrix of 100k users x 20k items with a
    million interactions and 64-dimensional item features; the time of three epochs beyond the
    first (which also builds and compiles the model)."""
    import time

    import numpy as np
    import scipy.sparse as sp

    from visrec.recsys.data import TrainData
    from visrec.recsys.select import default_params, make_vbpr
    from visrec.settings import Settings

    rng = np.random.default_rng(0)
    users, items, n = 100_000, 20_000, 1_000_000
    matrix = sp.csr_matrix(
        (np.ones(n, np.float32), (rng.integers(0, users, n), rng.zipf(1.2, n) % items)), shape=(users, items)
    )
    matrix.sum_duplicates()
    data = TrainData(matrix, rng.normal(size=(items, 64)).astype(np.float32), None)
    settings = Settings()
    seconds = {}
    for epochs in (1, 4):
        started = time.perf_counter()
        make_vbpr(settings, {**default_params(settings), "epochs": epochs}).fit(data)
        seconds[epochs] = time.perf_counter() - started
    per_million = (seconds[4] - seconds[1]) / 3 / (matrix.nnz / 1e6)
    note = f"{matrix.nnz} interactions, batch {settings.mf_batch_size}, {os.cpu_count()} cores; goal <= 2"
    return {"mf.speed.epoch_seconds_per_million": _figure(round(per_million, 2), "s", note)}


def bench_mf_hm() -> Figures:
    """Recommenders on hm-sample's real purchases, the split of the recommender issue: train before
    2020-07-09, test = what users with a purchase before the cut bought on or after it (not bought
    before), candidates every imaged article; K = 12. Item embeddings from the cnn bench's model
    (run it first). Hits are reported beside every metric: a handful of them decides the rest."""
    import dataclasses
    from datetime import date

    import numpy as np

    from visrec.devdata.importer import import_hm
    from visrec.devdata.synth import write_events_table
    from visrec.recsys.baselines import ItemCF, Popularity, SparkALS, SparkItemCF, VisualProfile
    from visrec.recsys.data import build_split
    from visrec.recsys.select import make_vbpr, select_vbpr
    from visrec.recsys.train import evaluate_model
    from visrec.recsys.vbpr import VBPRRecommender
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.spark import get_spark
    from visrec.store.tables import embeddings_table

    cache = CACHE / "hm_embeddings.npz"
    if not (HM_SAMPLE / "articles.csv").exists() or not cache.exists():
        print("mf_hm: needs hm-sample and the cnn bench's embeddings; skipped", file=sys.stderr)
        return {}
    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        last, cut = "2020-09-22", date(2020, 7, 9)
        settings = Settings(
            home=Path(tmp), test_days=(date.fromisoformat(last) - cut).days + 1, test_min_users=1
        )
        lake = Lake.from_settings(settings)
        import_hm(HM_SAMPLE, lake)
        write_events_table(lake)
        z = np.load(cache)
        emb = z["embeddings"].astype(np.float32)
        # The served embedding (classifier's, then retrieval's); VBPR learns from the classifier's part.
        dims = int(z["classifier_dims"]) if "classifier_dims" in z else None
        lake.write_table(
            "item_embeddings", last, embeddings_table(z["item_ids"].tolist(), emb, "bench-cnn", dims)
        )
        split = build_split(settings, lake, last)
        history = np.asarray((split.train.user_items > 0).sum(axis=1)).ravel() > 0
        split = dataclasses.replace(
            split, relevant=[r if history[u] else set() for u, r in enumerate(split.relevant)]
        )
        spark = get_spark(settings, "bench-mf-hm")
        from implicit.als import AlternatingLeastSquares
        from implicit.bpr import BayesianPersonalizedRanking

        models = {
            "popularity": Popularity(),
            "item_cf": ItemCF(),
            "spark_item_cf": SparkItemCF(spark),
            "spark_als": SparkALS(spark),
            "visual_profile": VisualProfile(),
            "implicit_als": _implicit(AlternatingLeastSquares(factors=64, iterations=15, random_state=0)),
            "implicit_bpr": _implicit(
                BayesianPersonalizedRanking(factors=64, iterations=100, random_state=0)
            ),
            "mf": VBPRRecommender(visual_factors=0),
            "vbpr": VBPRRecommender(),
            "selected": make_vbpr(settings, select_vbpr(settings, split, last).params),
        }
        rel = [r for r in split.relevant if r]
        cold_pairs = sum(len({i for i in r if split.cold[i]}) for r in rel)
        note = (
            f"hm-sample: train before {cut}, test = {len(rel)} users with a purchase before it, "
            f"{sum(map(len, rel))} user-article pairs after it ({cold_pairs} of articles nobody bought "
            f"before), {split.train.n_items} candidate articles; embeddings of the cnn bench's model"
        )
        hits = {}
        for name, model in models.items():
            metrics = evaluate_model(model, split, k=12)
            hits[name] = metrics["hits_at_12"]
            for key in (
                "hits_at_12",
                "map_at_12",
                "recall_at_12",
                "ndcg_at_12",
                "cold_recall_at_12",
                "coverage",
                "fit_seconds",
            ):
                out[f"mf.hm.{name}.{key}"] = _figure(round(metrics[key], 4), key, note)
        best = max((h, n) for n, h in hits.items() if n not in ("mf", "vbpr", "selected"))
        out["mf.hm.selected_hits_over_best_baseline"] = _figure(
            round(hits["selected"] / max(best[0], 1), 2),
            "ratio",
            f"best baseline: {best[1]} ({best[0]:.0f} hits); goal >= 1",
        )
        out["mf.hm.vbpr_hits_over_best_baseline"] = _figure(
            round(hits["vbpr"] / max(best[0], 1), 2),
            "ratio",
            f"best baseline: {best[1]} ({best[0]:.0f} hits); goal >= 2",
        )
    return out


def bench_photos() -> Figures:
    """User photos on the demo-scale synthetic shop: ingestion and recognition throughput, how often a
    shopper's photo of an item finds that item (and an item of the same category, colour and pattern)
    in the top 5 by photo search as served (also with the image model's contrastive weight at 0.2 and
    0.5) and by each embedding on the whole photo and in crops, and Recall@20 of
    upload-only users (against 10 items each would buy, drawn from their true taste) for photo-based
    ranking, popularity and an oracle that ranks by true taste."""
    import json

    import numpy as np

    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.ingest.catalog_images import ingest_images
    from visrec.ingest.user_photos import ingest_user_photos
    from visrec.models.topk import topk_best_of, topk_scores
    from visrec.recsys.score import PhotoBlend
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import (
        decode_pngs,
        embeddings_matrix,
        item_embeddings,
        load_staged_images,
        photo_profiles,
    )
    from visrec.vision.embed import catalog_embeddings, embed_items, embed_kinds
    from visrec.vision.photos import recognise_user_photos
    from visrec.vision.search import PHOTO_CROPS, match_photos, photo_embedding, photo_views
    from visrec.vision.train import CNNConfig, train_cnn

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        lake = Lake.from_settings(settings)
        config = ShopConfig(corrupt_rate=0.01)
        shop = generate_shop(config, lake)
        days = sorted(d[3:] for d in lake.list_dirs("raw/user_images"))
        last = shop.last_ds
        started = time.perf_counter()
        for ds in days:
            ingest_user_photos(settings, lake, ds)
        ingest_seconds = time.perf_counter() - started
        ingest_images(settings, lake, last)
        cnn = train_cnn(settings, last, lake=lake, config=CNNConfig(max_minutes=3, register=False))
        embed_items(settings, last, lake, cnn.model, "bench")
        started = time.perf_counter()
        photos, _ = recognise_user_photos(settings, lake, last, cnn.model, "bench")
        recognise_seconds = time.perf_counter() - started
        note = (
            f"synthetic shop {config.users} users x {config.items} items x {config.days} days, "
            f"{shop.photos} uploads ({shop.bad_photos} corrupt); CNN held-out accuracy "
            f"{cnn.metrics['held_out_accuracy']:.3f} (3-minute budget)"
        )
        out["photos.synthetic.ingest_photos_per_s"] = _figure(
            round(shop.photos / ingest_seconds, 1), "photos/s", note
        )
        out["photos.synthetic.recognise_photos_per_s"] = _figure(
            round(photos.num_rows / recognise_seconds, 1),
            "photos/s",
            note + "; includes nearest items of the day's photos",
        )
        truth = {
            (t["user_id"], t["photo_id"]): t
            for t in map(json.loads, lake.get_bytes("truth/user_photos.jsonl").decode().splitlines())
        }
        items_table = lake.read_table("item_embeddings", last)
        ids = items_table.column("item_id").to_pylist()
        attrs = {}
        for line in lake.get_bytes("truth/items.csv").decode().splitlines()[1:]:
            item, cat, colour, pattern, *_ = line.split(",")
            attrs[item] = (cat, colour, pattern)
        keys = list(
            zip(photos.column("user_id").to_pylist(), photos.column("photo_id").to_pylist(), strict=True)
        )
        # Photo search as served (the photo whole and in crops, with visrec.vision.search's embedding),
        # and each embedding on the whole photo alone and in crops, from the same model on the same
        # catalog and photos, for issue 24's comparison.
        catalog_pixels = load_staged_images(lake, last)
        assert catalog_pixels.item_ids == ids
        photo_pixels = decode_pngs([lake.get_bytes(k) for k in photos.column("image_key").to_pylist()])
        views = np.stack([photo_views(p, cnn.model.image_size) for p in photo_pixels])
        size = cnn.model.image_size

        def top5(found: np.ndarray) -> tuple[float, float]:
            """Share of photos with their item, and with an item of its attributes, among ``found``."""
            exact = [truth[k]["item_id"] in {ids[j] for j in found[n]} for n, k in enumerate(keys)]
            same = [
                any(attrs[ids[j]] == attrs[truth[k]["item_id"]] for j in found[n]) for n, k in enumerate(keys)
            ]
            return round(float(np.mean(exact)), 3), round(float(np.mean(same)), 3)

        served = f"{note}; photo search as served ({photo_embedding(cnn.model)} embedding, whole and cropped)"
        exact, same = top5(match_photos(cnn.model, views, items_table, 5)[0])
        out["photos.synthetic.item_in_top5"] = _figure(exact, "rate", served)
        out["photos.synthetic.same_attributes_in_top5"] = _figure(same, "rate", served)
        items_by_kind = embed_kinds(cnn.model, catalog_pixels.pixels)
        views_by_kind = embed_kinds(cnn.model, views.reshape(-1, size, size, 3))
        assert np.allclose(items_by_kind["both"], embeddings_matrix(items_table), atol=1e-5)
        for kind in items_by_kind:
            vectors = views_by_kind[kind].reshape(len(views), len(PHOTO_CROPS), -1)
            for how, used in (("single_view", vectors[:, :1]), ("views", vectors)):
                exact, same = top5(topk_best_of(items_by_kind[kind], used, 5)[0])
                says = f"{note}; {kind} embedding, {how.replace('_', ' ')}"
                out[f"photos.synthetic.item_in_top5_{how}_{kind}"] = _figure(exact, "rate", says)
                out[f"photos.synthetic.same_attributes_in_top5_{how}_{kind}"] = _figure(same, "rate", says)
        # The same shop and photos with the contrastive loss at other weights than the default's.
        for weight in (0.2, 0.5):
            config = CNNConfig(max_minutes=3, register=False, contrastive_weight=weight)
            other = train_cnn(settings, last, lake=lake, config=config).model
            table = catalog_embeddings(other, ids, catalog_pixels.pixels, "bench")
            exact, same = top5(match_photos(other, views, table, 5)[0])
            key, says = str(weight).replace(".", "_"), f"{served}, contrastive weight {weight}"
            out[f"photos.synthetic.weight_{key}.item_in_top5"] = _figure(exact, "rate", says)
            out[f"photos.synthetic.weight_{key}.same_attributes_in_top5"] = _figure(same, "rate", says)
        top1 = [
            r["top_categories"][0]["category"] == truth[(r["user_id"], r["photo_id"])]["category"]
            for r in photos.to_pylist()
        ]
        out["photos.synthetic.category_top1"] = _figure(round(float(np.mean(top1)), 3), "accuracy", note)

        users, vectors, _ = photo_profiles(lake, last)
        item_ids, features, _ = item_embeddings(lake, last)
        only = {
            t["user_id"]: t
            for t in map(json.loads, lake.get_bytes("truth/upload_only_users.jsonl").decode().splitlines())
        }
        rows = [k for k, u in enumerate(users) if u in only]
        blend = PhotoBlend(None, vectors, np.ones(len(users), bool), features, settings.photo_weight)
        ranked, _ = topk_scores(blend.score(np.array(rows)), 20)
        counts: dict[str, int] = {}
        for key in lake.list_keys("raw/events"):
            for line in lake.get_bytes(key).decode().splitlines():
                try:
                    item = json.loads(line)["item_id"]
                except (ValueError, KeyError):
                    continue
                counts[item] = counts.get(item, 0) + 1
        popular = sorted(counts, key=lambda i: -counts[i])[:20]

        def recall(lists: list[list[str]]) -> float:
            return float(
                np.mean(
                    [
                        len(set(top) & set(only[users[r]]["would_buy"])) / len(only[users[r]]["would_buy"])
                        for top, r in zip(lists, rows, strict=True)
                    ]
                )
            )

        only_note = f"{len(rows)} upload-only users, 10 would-buy items each drawn from their true taste"
        out["photos.synthetic.upload_only.photo_recall_at_20"] = _figure(
            round(recall([[item_ids[j] for j in r] for r in ranked]), 4), "recall@20", only_note
        )
        out["photos.synthetic.upload_only.popularity_recall_at_20"] = _figure(
            round(recall([popular] * len(rows)), 4), "recall@20", only_note
        )
        out["photos.synthetic.upload_only.oracle_recall_at_20"] = _figure(
            round(recall([only[users[r]]["taste_rank"][:20] for r in rows]), 4), "recall@20", only_note
        )
    return out


def bench_contrastive() -> Figures:
    """The image model's contrastive weight (``CNNConfig.contrastive_weight``) on small catalogs, where
    it competes hardest with the category loss: two 400-item synthetic shops (seed 5, the tests'
    catalog, and seed 11), 30 epochs (the nightly default), weights 0.2, 0.35 (the default) and 0.5:
    held-out category accuracy, and how often a shopper's photo of one of 120 items finds that item
    first among the catalog (both embeddings, as similar items compare them, on the whole photo)."""
    import numpy as np

    from visrec.devdata.synth import ShopConfig, generate_shop, shopper_photos
    from visrec.ingest.catalog_images import ingest_images
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import load_staged_images
    from visrec.vision.embed import embed_pixels
    from visrec.vision.train import CNNConfig, train_cnn

    out: Figures = {}
    for seed in (5, 11):
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(home=Path(tmp))
            lake = Lake.from_settings(settings)
            shop = generate_shop(ShopConfig(users=20, items=400, days=1, seed=seed), lake)
            ingest_images(settings, lake, shop.last_ds)
            images = load_staged_images(lake, shop.last_ds)
            for weight in (0.2, 0.35, 0.5):
                config = CNNConfig(epochs=30, patience=30, contrastive_weight=weight, register=False)
                result = train_cnn(settings, shop.last_ds, lake=lake, config=config)
                photos = shopper_photos(images.pixels[:120], result.model.image_size, seed=3)
                catalog = embed_pixels(result.model, images.pixels)
                first = (embed_pixels(result.model, photos) @ catalog.T).argmax(1) == np.arange(120)
                key = f"contrastive.shop{seed}.weight_{str(weight).replace('.', '_')}"
                note = f"400-item shop (seed {seed}), 30 epochs, contrastive weight {weight}"
                out[f"{key}.held_out_accuracy"] = _figure(
                    round(result.metrics["held_out_accuracy"], 3), "accuracy", note
                )
                out[f"{key}.photo_first_hit"] = _figure(
                    round(float(first.mean()), 3), "rate", note + "; 120 shopper photos, item found first"
                )
    return out


SCORING_SHAPE = (100_000, 20_000, 64, 20)  # users, items, dims, K


def _scoring_worker(chunk: int, generic: bool) -> dict:
    """Top-20 for every user of a random factor model (20 already-seen items each, filtered), in a
    fresh process so that its peak RSS is the scoring's own; also numpy's matmul peak on one chunk."""
    import resource

    import numpy as np
    import scipy.sparse as sp

    from visrec.recsys.baselines import FactorRecommender, Recommender

    users, items, dim, k = SCORING_SHAPE
    rng = np.random.default_rng(0)
    model = FactorRecommender()
    model.user_vectors = rng.standard_normal((users, dim), dtype=np.float32)
    model.item_vectors = rng.standard_normal((items, dim), dtype=np.float32)
    model.item_biases = rng.standard_normal(items).astype(np.float32)
    model.chunk_size = chunk
    cols = rng.integers(0, items, users * 20)
    seen = sp.csr_matrix(
        (np.ones(len(cols), np.float32), (np.repeat(np.arange(users), 20), cols)), shape=(users, items)
    )
    block = model.user_vectors[:4096]
    peak = 0.0
    for _ in range(5):
        started = time.perf_counter()
        np.matmul(block, model.item_vectors.T)
        peak = max(peak, 2 * block.shape[0] * items * dim / (time.perf_counter() - started))
    recommend = Recommender.recommend if generic else FactorRecommender.recommend
    recommend(model, np.arange(chunk), seen, N=k)  # warm-up: traces the graph
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    started = time.perf_counter()
    ids, _ = recommend(model, np.arange(users), seen, N=k)
    seconds = time.perf_counter() - started
    assert (ids >= 0).all()
    return {
        "seconds": seconds,
        "flops": 2 * users * items * dim / seconds,
        "peak": peak,
        "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "rss_before_gb": rss_before,
    }


def bench_scoring() -> Figures:
    """Batch scoring throughput: top-20 of 100,000 users x 20,000 items x 64 dims (users x items x dims
    x 2 flops per second) against numpy's float32 matmul peak measured in the same process, with the
    process's peak memory; the fused two-stage path at two chunk sizes and the generic path."""
    import multiprocessing

    users, items, dim, k = SCORING_SHAPE
    out: Figures = {}
    spawn = multiprocessing.get_context("spawn")
    for name, chunk, generic in (
        ("fused", 4096, False),
        ("fused_chunk8192", 8192, False),
        ("generic", 4096, True),
    ):
        with spawn.Pool(1) as pool:
            r = pool.apply(_scoring_worker, (chunk, generic))
        path = (
            "numpy scores + tf.math.top_k (Recommender.recommend)"
            if generic
            else "FactorRecommender.recommend"
        )
        note = (
            f"{users:,} users x {items:,} items x {dim} dims, top {k}, 20 seen items filtered per user, "
            f"chunk {chunk}, {path}, {os.cpu_count()} cores; numpy matmul peak {r['peak'] / 1e9:.0f} GFLOP/s"
        )
        out[f"scoring.{name}.gflops"] = _figure(round(r["flops"] / 1e9, 1), "GFLOP/s", note)
        out[f"scoring.{name}.over_numpy_peak"] = _figure(
            round(r["flops"] / r["peak"], 3), "ratio", note + "; goal >= 0.5"
        )
        out[f"scoring.{name}.seconds"] = _figure(round(r["seconds"], 2), "s", note)
        out[f"scoring.{name}.peak_rss_gb"] = _figure(
            round(r["rss_gb"], 2),
            "GB",
            note + f"; inputs and process before scoring: {r['rss_before_gb']:.2f} GB",
        )
    return out


SCALE_SIZES = (1, 4, 16)
SCALE_BASE = dict(users=6_000, items=300, days=10)  # 1x: about 130k events; 16x: about 2M


def _scale_worker(size: int, home: str) -> dict:
    """Every stage of one size of the scaling benchmark, in a fresh process (its peak RSS its own):
    returns each stage's seconds and the work it did. Leaves in ``home`` a lake with the shop's events,
    features and item embeddings, and a random factor model of its users (``factors.npz``): what
    distributed scoring reads."""
    import resource

    import numpy as np
    import pyarrow as pa
    import scipy.sparse as sp

    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.ingest.catalog_images import ingest_images
    from visrec.ingest.events import ingest_event_days
    from visrec.ingest.features import build_features
    from visrec.models.cnn import ImageClassifier
    from visrec.recsys.baselines import FactorRecommender
    from visrec.recsys.data import TrainData
    from visrec.recsys.select import default_params, make_vbpr
    from visrec.recsys.train import FactorScorer
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import embeddings_table, load_staged_images
    from visrec.vision.embed import embed_pixels

    out: dict = {}

    def timed(stage: str, work: float, unit: str, run):
        started = time.perf_counter()
        result = run()
        out[stage] = {"seconds": time.perf_counter() - started, "work": work, "unit": unit}
        return result

    if True:  # the lake stays in ``home`` for _scale_score_distributed
        settings = Settings(home=Path(home), error_budget=0.5)
        lake = Lake.from_settings(settings)
        config = ShopConfig(
            users=SCALE_BASE["users"] * size,
            items=SCALE_BASE["items"] * size,
            days=SCALE_BASE["days"],
            seed=3,
            uploader_share=0.0,
            upload_only_share=0.0,
        )
        shop = generate_shop(config, lake)
        days = _raw_event_days(lake)
        last = days[-1]
        counts = timed("ingest", shop.events, "events", lambda: ingest_event_days(settings, lake, days))
        valid = sum(c.valid for c, _ in counts.values())
        rows = timed("features", valid, "events", lambda: build_features(settings, lake, last, rebuild=True))
        timed("image_ingest", config.items, "images", lambda: ingest_images(settings, lake, last))
        images = load_staged_images(lake, last)
        model = ImageClassifier(sorted(set(images.categories)))
        embed_pixels(model, images.pixels[:256])  # builds and traces the model
        vectors = timed("embed", len(images.pixels), "images", lambda: embed_pixels(model, images.pixels))
        lake.write_table("item_embeddings", last, embeddings_table(images.item_ids, vectors, "random"))
        # The recommender's training: one epoch beyond the first (which also compiles), default settings.
        pairs = lake.read_table("interactions", last)
        users = {u: n for n, u in enumerate(sorted(set(pairs.column("user_id").to_pylist())))}
        items = {i: n for n, i in enumerate(images.item_ids)}
        keep = [i in items for i in pairs.column("item_id").to_pylist()]
        pairs = pairs.filter(pa.array(keep))
        matrix = sp.csr_matrix(
            (
                pairs.column("confidence").to_numpy(),
                (
                    [users[u] for u in pairs.column("user_id").to_pylist()],
                    [items[i] for i in pairs.column("item_id").to_pylist()],
                ),
            ),
            shape=(len(users), len(items)),
        )
        data = TrainData(matrix, vectors, None)
        # The recommender's epoch: (5 epochs - 1 epoch) / 4, default settings (the first fit's compile
        # and a one-epoch run's noise are as long as a small shop's epoch).
        timed(
            "train_mf_1",
            matrix.nnz,
            "interactions",
            lambda: make_vbpr(settings, {**default_params(settings), "epochs": 1}).fit(data),
        )
        timed(
            "train_mf_5",
            matrix.nnz,
            "interactions",
            lambda: make_vbpr(settings, {**default_params(settings), "epochs": 5}).fit(data),
        )
        out["train_mf_epoch"] = {
            "seconds": (out.pop("train_mf_5")["seconds"] - out.pop("train_mf_1")["seconds"]) / 4,
            "work": matrix.nnz,
            "unit": "interactions",
        }
        # Scoring every user: a factor model of the shop's size (64 dims), top 20, seen items filtered.
        rng = np.random.default_rng(0)
        scorer = FactorRecommender()
        scorer.user_vectors = rng.standard_normal((len(users), 64), dtype=np.float32)
        scorer.item_vectors = rng.standard_normal((len(items), 64), dtype=np.float32)
        scorer.item_biases = np.zeros(len(items), np.float32)
        scorer.recommend(np.arange(min(4096, len(users))), matrix, N=20)  # warm-up
        FactorScorer(
            list(users), images.item_ids, scorer.user_vectors, scorer.item_vectors, scorer.item_biases
        ).save(Path(home) / "factors.npz")
        timed(
            "score",
            len(users) * len(items),
            "user-item scores",
            lambda: scorer.recommend(np.arange(len(users)), matrix, N=20),
        )
        out["_rows"] = rows
        out["_users"], out["_items"] = len(users), len(items)
    out["_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def _scale_score_distributed(size: int, home: str, master: str = "local[2]") -> dict:
    """Distributed scoring (Spark ``master``, 8 shards) of every user of one size's shop (the lake
    ``_scale_worker`` left in ``home``) with its random factor model, in a fresh process: seconds and
    the driver's peak RSS (the Python driver: the tasks read the events, profiles and model
    themselves), then the same users scored in this process, for the comparison."""
    import resource

    from visrec.devdata.trial import differing_tables
    from visrec.recsys.score import ScorerRef, score_users
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.spark import get_spark

    settings = Settings(home=Path(home), error_budget=0.5, spark_master=master, spark_cores=2)
    lake = Lake.from_settings(settings)
    last = lake.partitions("events")[-1]
    model = ScorerRef(version="random", path=str(Path(home) / "factors.npz"))
    spark = get_spark(settings, "bench-scale")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    started = time.perf_counter()
    summary = score_users(settings, last, lake=lake, scorer=model, spark=spark, shards=8)
    seconds = time.perf_counter() - started
    parts = lake.manifest("recommendations", last).files
    spark.stop()
    driver_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    # The same users scored in this process: the same lists (scores to float rounding).
    keys = [("user_id", "ascending"), ("rank", "ascending")]
    written = lake.read_table("recommendations", last).sort_by(keys)
    single_summary = score_users(settings, last, lake=lake, scorer=model)
    single = lake.read_table("recommendations", last).sort_by(keys)
    identical = (
        summary == single_summary
        and differing_tables({"recommendations": written}, {"recommendations": single}) == []
    )
    items = len(lake.read_table("item_embeddings", last))
    return {
        "seconds": seconds,
        "rows": summary.rows,
        "users": summary.users,
        "work": summary.users * items,
        "driver_rss_gb": driver_rss,
        "driver_rss_before_gb": before,
        "collected_bytes": summary.collected_bytes,
        "parts": len(parts),
        "identical": identical,
    }


def bench_scale() -> Figures:
    """The synthetic shop at 1x, 4x and 16x (users, items and events scaled together, 10 days), every
    stage timed on one machine (DuckDB, in-process models), each in a fresh process: events ingested
    (all days in one pass), features (rebuilt from history), image ingestion, embedding (the image
    model), the recommender's training per epoch, scoring every user; and distributed scoring on Spark
    local[2] and on the twin's Spark standalone cluster (a master and two 1-core workers), with the
    driver's peak RSS. Each stage's cost exponent is fitted against its own work
    (events, images, interactions, user x item scores) over the three sizes; a PNG plot in bench/."""
    import multiprocessing

    import numpy as np

    from visrec.app.cluster import LocalCluster

    out: Figures = {}
    spawn = multiprocessing.get_context("spawn")
    runs, distributed, standalone = {}, {}, {}
    with tempfile.TemporaryDirectory() as cluster_root:
        # The twin's Spark standalone cluster alone: a master and two 1-core workers on 127.0.0.1.
        cluster = LocalCluster(Path(cluster_root))
        cluster.start_spark()
        master = f"spark://127.0.0.1:{cluster.ports.spark_master}"
        try:
            for size in SCALE_SIZES:
                with tempfile.TemporaryDirectory() as home:
                    with spawn.Pool(1) as pool:
                        runs[size] = pool.apply(_scale_worker, (size, home))
                    with spawn.Pool(1) as pool:
                        distributed[size] = pool.apply(_scale_score_distributed, (size, home))
                    with spawn.Pool(1) as pool:
                        standalone[size] = pool.apply(_scale_score_distributed, (size, home, master))
        finally:
            cluster.down()
    stages = [k for k in runs[SCALE_SIZES[0]] if not k.startswith("_")]
    for size in SCALE_SIZES:
        r = runs[size]
        shape = f"{size}x: {r['_users']} users x {r['_items']} items, {r['ingest']['work']} events"
        for stage in stages:
            s = r[stage]
            out[f"scale.{stage}.{size}x.seconds"] = _figure(round(s["seconds"], 3), "s", shape)
            out[f"scale.{stage}.{size}x.per_s"] = _figure(
                round(s["work"] / s["seconds"]), f"{s['unit']}/s", shape
            )
        out[f"scale.peak_rss_gb.{size}x"] = _figure(
            round(r["_peak_rss_gb"], 2), "GB", shape + ", one machine"
        )
        d = distributed[size]
        note = f"{size}x: {d['users']} users, {d['rows']} rows written by the tasks, Spark local[2], 8 shards"
        out[f"scale.score_distributed.{size}x.seconds"] = _figure(round(d["seconds"], 2), "s", note)
        out[f"scale.score_distributed.{size}x.users_per_s"] = _figure(
            round(d["users"] / d["seconds"]), "users/s", note
        )
        out[f"scale.score_distributed.{size}x.driver_peak_rss_gb"] = _figure(
            round(d["driver_rss_gb"], 3), "GB", note + f"; {d['driver_rss_before_gb']:.3f} GB before scoring"
        )
        out[f"scale.score_distributed.{size}x.collected_bytes"] = _figure(
            d["collected_bytes"],
            "bytes",
            "what the tasks send back to the driver: each shard's popularity counts (items x segments), "
            "its part's name and summary",
        )
        c = standalone[size]
        note = f"{size}x: {c['users']} users, the twin's Spark standalone cluster (a master, 2 workers of 1 core), 8 shards"
        out[f"scale.score_standalone.{size}x.seconds"] = _figure(round(c["seconds"], 2), "s", note)
        out[f"scale.score_standalone.{size}x.driver_peak_rss_gb"] = _figure(
            round(c["driver_rss_gb"], 3), "GB", note + f"; {c['driver_rss_before_gb']:.3f} GB before scoring"
        )
    fits = {}
    for stage in stages:
        work = [runs[z][stage]["work"] for z in SCALE_SIZES]
        seconds = [runs[z][stage]["seconds"] for z in SCALE_SIZES]
        fits[stage] = (work, seconds, runs[SCALE_SIZES[0]][stage]["unit"])
    for name, measured in (("score_distributed", distributed), ("score_standalone", standalone)):
        fits[name] = (
            [measured[z]["work"] for z in SCALE_SIZES],
            [measured[z]["seconds"] for z in SCALE_SIZES],
            "user-item scores",
        )
    for stage, (work, seconds, unit) in fits.items():
        slope = np.polyfit(np.log(work), np.log(seconds), 1)[0]
        out[f"scale.{stage}.exponent"] = _figure(
            round(float(slope), 2),
            "exponent",
            f"log(seconds) against log({unit}) over 1x, 4x, 16x; goal <= 1.15",
        )
    same = all(distributed[z]["identical"] and standalone[z]["identical"] for z in SCALE_SIZES)
    out["scale.score.identical"] = _figure(
        int(same),
        "bool",
        "distributed scoring's table (local[2] and the standalone cluster) against the same users scored "
        "in one process, every size: the same users, ranks and items, scores to float rounding (rel 1e-5)",
    )
    for name, measured in (("score_distributed", distributed), ("score_standalone", standalone)):
        rss = [measured[z]["driver_rss_gb"] for z in SCALE_SIZES]
        out[f"scale.{name}.driver_rss_growth"] = _figure(
            round(rss[-1] / rss[0], 2),
            "x",
            "the driver's peak RSS at 16x over 1x in distributed scoring; goal <= 1.2",
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stage, (_, seconds, _) in fits.items():
        ax.plot(
            SCALE_SIZES, seconds, marker="o", label=f"{stage} ({out[f'scale.{stage}.exponent']['value']})"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(SCALE_SIZES, [f"{z}x" for z in SCALE_SIZES])
    ax.set_xlabel("shop size")
    ax.set_ylabel("seconds")
    ax.set_title("visrec stages vs size (exponent against each stage's work)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "scale.png", dpi=110)
    return out


GAN_SEEDS = (42, 1, 2, 3)


def bench_gan() -> Figures:
    """The conditional GAN on the demo-scale synthetic shop at the demo's settings (64x64, the demo's
    GAN budget), trained once per seed in GAN_SEEDS (a single short GAN run is a noisy draw) and judged
    by one image model trained on the same images (3-minute budget): the Frechet ratio (generated vs
    real over real vs real) and class consistency beside the image model's accuracy on real images,
    as the mean over the seeds, with the lowest consistency ratio. The first seed's sample grid is
    kept as bench/gan_synthetic.png."""
    from visrec.app.demo import DEMO_GAN_MINUTES
    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.generation.train import GANConfig, sample_grid, train_gan
    from visrec.ingest.catalog_images import ingest_images
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.vision.train import CNNConfig, train_cnn

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        lake = Lake.from_settings(settings)
        shop = generate_shop(ShopConfig(), lake)
        ingest_images(settings, lake, shop.last_ds)
        cnn = train_cnn(settings, shop.last_ds, lake=lake, config=CNNConfig(max_minutes=3, register=False))
        runs = []
        for seed in GAN_SEEDS:
            gan = train_gan(
                Settings(home=Path(tmp), seed=seed),
                shop.last_ds,
                lake=lake,
                cnn=cnn.model,
                config=GANConfig(max_minutes=DEMO_GAN_MINUTES, register=False),
            )
            if not runs:
                (Path(__file__).parent / "gan_synthetic.png").write_bytes(sample_grid(gan.model))
            runs.append(gan.metrics)
            print(
                f"gan seed {seed}: " + " ".join(f"{k}={v:.4g}" for k, v in gan.metrics.items()),
                file=sys.stderr,
            )
        ratios = [m["consistency_over_real_accuracy"] for m in runs]
        note = (
            f"synthetic shop {shop.items} items, 64x64, {DEMO_GAN_MINUTES:g}-minute budget, mean of "
            f"{len(runs)} seeds ({GAN_SEEDS}); "
            f"consistency/real accuracy per seed {[round(r, 3) for r in ratios]}; categories recognised "
            f"in fewer than half their images per seed {[int(m['classes_mostly_missed']) for m in runs]}; "
            f"epochs {[int(m['epochs_run']) for m in runs]}; samples (first seed): bench/gan_synthetic.png"
        )
        for key in (
            "frechet_ratio",
            "frechet_distance",
            "frechet_real_vs_real",
            "class_consistency",
            "cnn_accuracy_on_real",
            "consistency_over_real_accuracy",
            "classes_mostly_missed",
            "train_seconds",
        ):
            out[f"gan.synthetic.{key}"] = _figure(round(sum(m[key] for m in runs) / len(runs), 4), key, note)
        out["gan.synthetic.consistency_over_real_accuracy_min"] = _figure(
            round(min(ratios), 4), "lowest consistency_over_real_accuracy over the seeds", note
        )
    return out


def bench_gan_hm() -> Figures:
    """The conditional GAN on hm-sample's product photos (64x64, 20-minute budget), judged by the cnn
    bench's image model (run it first): the Frechet ratio, class consistency over the product types
    beside the image model's accuracy on the real photos, wall time. Samples of the 12 most common
    product types are kept as bench/gan_hm.png."""
    from collections import Counter

    import keras

    import visrec.models.cnn  # noqa: F401  (registers the image model's classes with Keras)
    from visrec.devdata.importer import import_hm
    from visrec.generation.train import GANConfig, sample_grid, train_gan
    from visrec.ingest.catalog_images import ingest_images
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import load_staged_images

    judge = CACHE / "hm_cnn.keras"
    if not (HM_SAMPLE / "articles.csv").exists() or not judge.exists():
        print("gan_hm: needs hm-sample and the cnn bench's image model; skipped", file=sys.stderr)
        return {}
    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), error_budget=0.5)
        lake = Lake.from_settings(settings)
        import_hm(HM_SAMPLE, lake)
        ds = "2026-11-01"
        ingest_images(settings, lake, ds)
        cnn = keras.models.load_model(judge)
        config = GANConfig(max_minutes=20, register=False)
        gan = train_gan(settings, ds, lake=lake, cnn=cnn, config=config)
        common = [name for name, _ in Counter(load_staged_images(lake, ds).categories).most_common(12)]
        grid = sample_grid(gan.model, classes=[gan.class_names.index(c) for c in common])
        (HERE / "gan_hm.png").write_bytes(grid)
        note = (
            f"hm-sample, {len(gan.class_names)} product types, 64x64, {gan.metrics['epochs_run']:.0f} epochs "
            f"in {gan.metrics['train_seconds'] / 60:.1f} min; judge: the cnn bench's model; rows of "
            f"bench/gan_hm.png: {', '.join(common)}"
        )
        for key in (
            "frechet_ratio",
            "frechet_distance",
            "frechet_real_vs_real",
            "class_consistency",
            "cnn_accuracy_on_real",
            "consistency_over_real_accuracy",
            "train_seconds",
        ):
            out[f"gan.hm.{key}"] = _figure(round(gan.metrics[key], 4), key, note)
    return out


def bench_vision() -> Figures:
    """Retrieval on hm-sample with the image model's embeddings (issue 24), from the model the cnn
    bench leaves in bench/.cache.
    Look-alikes: for 2,000 random articles, the share of their 10 nearest catalog neighbours (itself
    left out) with the same product type, colour group and graphical appearance (look-alike
    precision@10), with what similar items serve (both embeddings concatenated; no suffix), the
    retrieval embedding alone (``_retrieval``) and the classifier's (``_classifier``: the penultimate
    layer), same model, same run; and with the article's true product type (``_given_type``), and its
    graphical appearance too (``_given_type_and_appearance``), handed to the search: what the images
    leave to find.
    Shopper photos: for 1,000 of them, recall@1 and @5 of the article from a strongly augmented copy of
    its own photo (zoomed out, turned, relit, cropped, on clutter; then JPEG quality 60): photo search
    as served (no suffix: the photo whole and in crops, ``visrec.vision.search``), and each embedding
    on the whole photo alone (``_single_view_<kind>``) and in crops (``_views_<kind>``)."""
    import csv
    import io

    import keras
    import numpy as np
    from PIL import Image

    import visrec.models.cnn  # noqa: F401  (registers the model class)
    from visrec.devdata.synth import shopper_photo
    from visrec.ingest.images import decode_image, fit_square, to_rgb
    from visrec.store.tables import embeddings_table
    from visrec.vision.embed import embed_kinds
    from visrec.vision.search import PHOTO_CROPS, match_photos, photo_embedding, photo_views

    cached = CACHE / "hm_pixels.npz"
    if not (HM_SAMPLE / "articles.csv").exists() or not cached.exists():
        print("  vision: needs hm-sample and `python bench/run.py cnn` first; skipped", file=sys.stderr)
        return {}
    data = np.load(cached)
    item_ids, pixels = [str(i) for i in data["item_ids"]], data["pixels"]
    with open(HM_SAMPLE / "articles.csv", newline="") as f:
        rows = {r["article_id"]: r for r in csv.DictReader(f)}
    columns = ("product_type_name", "colour_group_name", "graphical_appearance_name")
    look = np.array(["|".join(rows[i][k] for k in columns) for i in item_ids])
    kind_of = np.array([rows[i]["product_type_name"] for i in item_ids])
    model = keras.models.load_model(CACHE / "hm_cnn.keras")
    size = model.image_size
    rng = np.random.default_rng(0)
    queries = rng.choice(len(item_ids), 2000, replace=False)
    n_photos = 1000
    views = []
    for q in queries[:n_photos]:
        image = np.asarray(
            fit_square(to_rgb(decode_image((HM_SAMPLE / "images" / f"{item_ids[q]}.jpg").read_bytes())), size)
        )
        buffer = io.BytesIO()
        Image.fromarray(shopper_photo(image, rng)).save(buffer, "JPEG", quality=60)
        views.append(photo_views(Image.open(io.BytesIO(buffer.getvalue())), size))
    views = np.stack(views)  # (photos, views, size, size, 3); view 0 is the whole photo
    note = f"hm-sample, the cnn bench's model (bench/.cache), {len(item_ids)} articles"
    # What a perfect look-alike search could reach: some articles have fewer than 10 look-alikes.
    others = {v: c - 1 for v, c in zip(*np.unique(look, return_counts=True), strict=True)}
    ceiling = float(np.mean([min(10, others[v]) / 10 for v in look[queries]]))
    out: Figures = {
        "vision.hm.lookalike_precision_at_10_ceiling": _figure(
            round(ceiling, 4), "share", f"{note}; the same queries, every look-alike first"
        )
    }

    def neighbours(catalog: np.ndarray) -> np.ndarray:
        sims = catalog[queries] @ catalog.T
        sims[np.arange(len(queries)), queries] = -np.inf
        return np.argpartition(-sims, 10, axis=1)[:, :10]

    def ranks(photo_vectors: np.ndarray, catalog: np.ndarray) -> np.ndarray:
        """Rank of each photo's article when an item scores its best view: (photos, views, d)."""
        found = np.max(photo_vectors @ catalog.T, axis=1)
        return (found > found[np.arange(n_photos), queries[:n_photos]][:, None]).sum(1)

    catalog_by_kind = embed_kinds(model, pixels)
    views_by_kind = embed_kinds(model, views.reshape(-1, size, size, 3))
    for kind, catalog in catalog_by_kind.items():
        suffix = "" if kind == "both" else f"_{kind}"
        top10 = neighbours(catalog)
        photo_vectors = views_by_kind[kind].reshape(n_photos, len(PHOTO_CROPS), -1)
        single, cropped = ranks(photo_vectors[:, :1], catalog), ranks(photo_vectors, catalog)
        figures = {
            f"lookalike_precision_at_10{suffix}": (np.mean(look[top10] == look[queries][:, None]), "share"),
            f"same_type_at_10{suffix}": (np.mean(kind_of[top10] == kind_of[queries][:, None]), "share"),
            f"augmented_recall_at_1_single_view_{kind}": (np.mean(single < 1), "recall"),
            f"augmented_recall_at_5_single_view_{kind}": (np.mean(single < 5), "recall"),
            f"augmented_recall_at_1_views_{kind}": (np.mean(cropped < 1), "recall"),
            f"augmented_recall_at_5_views_{kind}": (np.mean(cropped < 5), "recall"),
        }
        for name, (value, unit) in figures.items():
            out[f"vision.hm.{name}"] = _figure(round(float(value), 4), unit, f"{note}; {kind} embedding")

    # How far look-alike search can go from these images: the served embedding handed each article's
    # true product type (and graphical appearance), as one-hot parts weighted to dominate a cosine, so
    # that only the rest (appearance and colour, or colour) is left to the images.
    def told(column: str) -> np.ndarray:
        codes = np.unique(np.array([rows[i][column] for i in item_ids]), return_inverse=True)[1]
        return 3.0 * np.eye(codes.max() + 1, dtype=np.float32)[codes]

    for name, given in (
        ("type", [columns[0]]),
        ("type_and_appearance", [columns[0], columns[2]]),
    ):
        top10 = neighbours(np.concatenate([*map(told, given), catalog_by_kind["both"]], 1))
        out[f"vision.hm.lookalike_precision_at_10_given_{name}"] = _figure(
            round(float(np.mean(look[top10] == look[queries][:, None])), 4),
            "share",
            f"{note}; the served embedding beside the true {' and '.join(given)}",
        )
    # Photo search as served: the catalog as the nightly item_embeddings table holds it.
    # The table embed_items writes, from the embeddings made above.
    table = embeddings_table(item_ids, catalog_by_kind["both"], "bench", model.features_dim)
    found, _ = match_photos(model, views, table, 5)
    hit = found == queries[:n_photos, None]
    served = f"{note}; photo search as served ({photo_embedding(model)} embedding, {len(PHOTO_CROPS)} views)"
    out["vision.hm.augmented_recall_at_1"] = _figure(round(float(hit[:, 0].mean()), 4), "recall", served)
    out["vision.hm.augmented_recall_at_5"] = _figure(round(float(hit.any(1).mean()), 4), "recall", served)
    return out


def bench_cluster() -> Figures:
    """Cluster mode beside the in-process default on the same data (visrec.devdata.trial: a small shop,
    its first day ingested as history, the nightly DAG for the second): the DAG through the scheduler and
    two Celery workers of `visrec cluster up` (Postgres, Redis, S3, MLflow server, Spark standalone)
    against `visrec run` (`airflow dags test`, one process, local Spark, SQLite); and whether both
    published the same tables."""
    import subprocess

    from visrec.app.cluster import LocalCluster, Ports
    from visrec.devdata.trial import (
        HISTORY,
        NIGHT,
        SETTINGS,
        SHOP_ARGS,
        differing_tables,
        in_process_env,
        read_outputs,
    )
    from visrec.publish import OUTPUT_TABLES
    from visrec.settings import Settings
    from visrec.store.lake import Lake

    visrec = str(Path(sys.executable).with_name("visrec"))

    def call(env: dict, *args: str) -> float:
        started = time.perf_counter()
        subprocess.run([visrec, *args], env=env, check=True, capture_output=True)
        return time.perf_counter() - started

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", Ports(47500))
        started = time.perf_counter()
        try:
            cluster.up({"visrec_spark": 1, "visrec_training": 1}, SETTINGS)
            out["cluster.up_seconds"] = _figure(round(time.perf_counter() - started, 1), "s", "12 processes")
            env = cluster.env()
            call(env, "synth", *SHOP_ARGS)
            out["cluster.history_ingest_seconds"] = _figure(
                round(call(env, "ingest", "--ds", HISTORY), 1), "s", "visrec ingest: Spark cluster, S3 lake"
            )
            started = time.perf_counter()
            state = cluster.wait(cluster.trigger(NIGHT), timeout=1800)
            out["cluster.dag_seconds"] = _figure(
                round(time.perf_counter() - started, 1),
                "s",
                f"trigger to {state}: scheduler, 2 Celery workers",
            )
            os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
            on_cluster = read_outputs(Lake.from_settings(Settings.from_env(env)), NIGHT, OUTPUT_TABLES)
        finally:
            cluster.down()
        home = Path(tmp) / "in-process"
        env = in_process_env(home)
        call(env, "synth", *SHOP_ARGS)
        call(env, "ingest", "--ds", HISTORY)
        out["cluster.in_process_dag_seconds"] = _figure(
            round(call(env, "run", "--ds", NIGHT), 1), "s", "visrec run: airflow dags test, local[2], SQLite"
        )
        differ = differing_tables(
            on_cluster, read_outputs(Lake.from_settings(Settings(home=home)), NIGHT, OUTPUT_TABLES)
        )
        out["cluster.tables_identical"] = _figure(
            int(not differ),
            "bool",
            f"{len(on_cluster)} output tables: the same rows, scores to float rounding (rel 1e-5); differing: {differ}",
        )
    return out


BENCHES: dict[str, Callable[[], Figures]] = {
    "synth": bench_synth,
    "ingest": bench_ingest,
    "backfill": bench_backfill,
    "cnn": bench_cnn,
    "mf": bench_mf,
    "mf_speed": bench_mf_speed,
    "mf_hm": bench_mf_hm,
    "photos": bench_photos,
    "contrastive": bench_contrastive,
    "gan": bench_gan,
    "gan_hm": bench_gan_hm,
    "scoring": bench_scoring,
    "scale": bench_scale,
    "vision": bench_vision,
    "cluster": bench_cluster,
}


def _write(results: dict) -> None:
    RESULTS_JSON.write_text(json.dumps({k: v["value"] for k, v in sorted(results.items())}, indent=1) + "\n")
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python bench/run.py`); each figure names the bench that measured it.",
        "Machine of the last run: " + results.get("_machine", {}).get("note", "?"),
        "",
        "| key | value | unit | bench (command) | measured | notes |",
        "|---|---|---|---|---|---|",
    ]
    for key, fig in sorted(results.items()):
        if key.startswith("_"):
            continue
        cmd = f"`python bench/run.py {fig['bench']}`"
        lines.append(f"| {key} | {fig['value']} | {fig['unit']} | {cmd} | {fig['at']} | {fig['note']} |")
    RESULTS_MD.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHES], help="benchmarks (default all)")
    args = parser.parse_args()
    names = args.names or list(BENCHES)
    from visrec.logs import setup_logging

    setup_logging()
    results: dict = {}
    if FIGURES.exists():
        results = json.loads(FIGURES.read_text())
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results["_machine"] = {"value": machine, "note": machine}
    for name in names:
        print(f"bench {name} ...", file=sys.stderr, flush=True)
        at = datetime.now(UTC).strftime("%Y-%m-%d")
        figures = BENCHES[name]()
        # A bench run replaces every figure that bench wrote before (a renamed figure does not linger).
        results = {k: v for k, v in results.items() if v.get("bench") != name}
        for key, fig in figures.items():
            results[key] = {**fig, "bench": name, "at": at}
            print(f"  {key} = {fig['value']} {fig['unit']}", file=sys.stderr)
    FIGURES.write_text(json.dumps(results, indent=1) + "\n")
    _write(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

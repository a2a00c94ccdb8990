"""The scale bench: `python bench/run.py scale`. See :func:`run`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import HERE, Figures, figure, raw_event_days

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
        days = raw_event_days(lake)
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


def run() -> Figures:
    """The synthetic shop at 1x, 4x and 16x (users, items and events scaled together, 10 days), every
    stage timed on one machine (DuckDB, in-process models), each in a fresh process: events ingested
    (all days in one pass), features (rebuilt from history), image ingestion, embedding (the image
    model), the recommender's training per epoch, scoring every user; and distributed scoring on Spark
    local[2] and on the twin's Spark standalone cluster (a master and two 1-core workers), with the
    driver's peak RSS. Each stage's cost exponent is fitted against its own work
    (events, images, interactions, user x item scores) over the three sizes; a PNG plot in bench/."""
    import multiprocessing

    import numpy as np

    out: Figures = {}
    spawn = multiprocessing.get_context("spawn")
    runs, distributed, standalone = {}, {}, {}
    with tempfile.TemporaryDirectory() as cluster_root:
        # The twin's Spark standalone cluster alone: a master and two 1-core workers on 127.0.0.1.
        visrec = str(Path(sys.executable).with_name("visrec"))
        where = ["--dir", cluster_root]
        started = subprocess.run(
            [visrec, "cluster", "spark", *where], check=True, capture_output=True, text=True
        )
        master = started.stdout.split("spark master: ", 1)[1].split()[0]
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
            subprocess.run([visrec, "cluster", "down", *where], check=True, capture_output=True)
    stages = [k for k in runs[SCALE_SIZES[0]] if not k.startswith("_")]
    for size in SCALE_SIZES:
        r = runs[size]
        shape = f"{size}x: {r['_users']} users x {r['_items']} items, {r['ingest']['work']} events"
        for stage in stages:
            s = r[stage]
            out[f"scale.{stage}.{size}x.seconds"] = figure(round(s["seconds"], 3), "s", shape)
            out[f"scale.{stage}.{size}x.per_s"] = figure(
                round(s["work"] / s["seconds"]), f"{s['unit']}/s", shape
            )
        out[f"scale.peak_rss_gb.{size}x"] = figure(round(r["_peak_rss_gb"], 2), "GB", shape + ", one machine")
        d = distributed[size]
        note = f"{size}x: {d['users']} users, {d['rows']} rows written by the tasks, Spark local[2], 8 shards"
        out[f"scale.score_distributed.{size}x.seconds"] = figure(round(d["seconds"], 2), "s", note)
        out[f"scale.score_distributed.{size}x.users_per_s"] = figure(
            round(d["users"] / d["seconds"]), "users/s", note
        )
        out[f"scale.score_distributed.{size}x.driver_peak_rss_gb"] = figure(
            round(d["driver_rss_gb"], 3), "GB", note + f"; {d['driver_rss_before_gb']:.3f} GB before scoring"
        )
        out[f"scale.score_distributed.{size}x.collected_bytes"] = figure(
            d["collected_bytes"],
            "bytes",
            "what the tasks send back to the driver: each shard's popularity counts (items x segments), "
            "its part's name and summary",
        )
        c = standalone[size]
        note = f"{size}x: {c['users']} users, the twin's Spark standalone cluster (a master, 2 workers of 1 core), 8 shards"
        out[f"scale.score_standalone.{size}x.seconds"] = figure(round(c["seconds"], 2), "s", note)
        out[f"scale.score_standalone.{size}x.driver_peak_rss_gb"] = figure(
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
        out[f"scale.{stage}.exponent"] = figure(
            round(float(slope), 2),
            "exponent",
            f"log(seconds) against log({unit}) over 1x, 4x, 16x; goal <= 1.15",
        )
    same = all(distributed[z]["identical"] and standalone[z]["identical"] for z in SCALE_SIZES)
    out["scale.score.identical"] = figure(
        int(same),
        "bool",
        "distributed scoring's table (local[2] and the standalone cluster) against the same users scored "
        "in one process, every size: the same users, ranks and items, scores to float rounding (rel 1e-5)",
    )
    for name, measured in (("score_distributed", distributed), ("score_standalone", standalone)):
        rss = [measured[z]["driver_rss_gb"] for z in SCALE_SIZES]
        out[f"scale.{name}.driver_rss_growth"] = figure(
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

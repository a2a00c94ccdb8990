"""``make demo``: the nightly pipeline on the embedded default, one day after another.

Generates the synthetic shop, then for each day ingests it (Spark, Great Expectations), and on the
last day trains the image model, embeds the catalog, trains and registers the recommender, and scores
every user; it ends with a summary of the tables, the models' metrics and where everything is.
(The Airflow DAG that schedules the same steps nightly is the next piece of work.)
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--corrupt-rate", type=float, default=0.01)
    parser.add_argument("--cnn-minutes", type=float, default=3.0, help="time budget of the image model")
    args = parser.parse_args(argv)

    from visrec.cli import setup_logging

    setup_logging()
    from visrec.errors import VisrecError
    from visrec.ingest import ingest_day
    from visrec.lake import Lake
    from visrec.recsys import MFConfig, score_users, train_mf
    from visrec.settings import Settings
    from visrec.spark import get_spark
    from visrec.synth import ShopConfig, generate_shop
    from visrec.vision import CNNConfig, build_similar_items, embed_items, load_cnn, train_cnn

    started = time.perf_counter()
    try:
        settings = Settings.from_env()
        lake = Lake.from_settings(settings)
        shop = generate_shop(
            ShopConfig(users=args.users, items=args.items, days=args.days, seed=settings.seed,
                       corrupt_rate=args.corrupt_rate), lake)  # fmt: skip
        print(
            f"[demo] synthetic shop: {shop.items} items, {shop.users} users, {shop.events} events, {shop.days} days"
        )
        spark = get_spark(settings, "visrec-demo")
        first = date.fromisoformat(shop.first_ds)
        days = [(first + timedelta(days=d)).isoformat() for d in range(shop.days)]
        for ds in days:
            report = ingest_day(settings, ds, lake=lake, spark=spark)
            print(f"[demo] ingested {ds}: {report.events.valid} events, {report.events.quarantined} quarantined, "
                  f"{report.images.accepted} images")  # fmt: skip
        last = days[-1]
        cnn = train_cnn(settings, last, lake=lake, config=CNNConfig(max_minutes=args.cnn_minutes))
        model, version = load_cnn()
        embed_items(settings, last, lake, model, version)
        build_similar_items(lake, last)
        mf = train_mf(settings, last, lake=lake)
        recs = score_users(settings, last, lake=lake, config=MFConfig())
    except VisrecError as exc:
        print(f"visrec demo: error: {exc}", file=sys.stderr)
        return 1

    print("\n=== visrec demo: summary ===")
    print(f"lake:          {lake.uri}")
    print("tables (last day, rows):")
    for table in ("events", "interactions", "user_profiles", "item_stats", "staging_images", "item_embeddings",
                  "similar_items", "recommendations"):  # fmt: skip
        manifest = lake.manifest(table, last)
        print(f"  {table:<16} {manifest.rows if manifest else 0:>8}")
    print(f"image model:   {cnn.version} held-out accuracy {cnn.metrics['held_out_accuracy']:.3f} "
          f"({len(cnn.class_names)} categories); {cnn.reason}")  # fmt: skip
    for name, metrics in mf.metrics.items():
        print(f"recommender:   {name:<10} recall@20 {metrics['recall_at_20']:.3f}  ndcg@20 {metrics['ndcg_at_20']:.3f}  "
              f"cold recall@20 {metrics['cold_recall_at_20']:.3f}  coverage {metrics['coverage']:.3f}")  # fmt: skip
    print(f"               {mf.version}: {mf.reason}")
    print(f"recommendations: {recs.num_rows} rows for {len(set(recs.column('user_id').to_pylist()))} users")
    print(f"data docs:     {lake.url(f'validation/ds={last}/data_docs/index.html')}")
    print(f"MLflow UI:     .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
    print(
        f"try:           .venv/bin/visrec similar {lake.path('raw/images/i000001.jpg')} --html similar.html"
    )
    print(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make demo``: the nightly pipeline on the embedded default, through Airflow, several days in a row.

Generates the synthetic shop; ingests its first days as history in one pass (events, features and
images, as `visrec ingest --start --end` does, then each day's user photos; in this process, to save
Airflow's per-run start-up); then runs the ``visrec_nightly`` DAG
with ``airflow dags test`` for each of the last ``--dag-days`` days (ingest, features, image model,
embeddings, recommender behind its promotion gate, scoring, validated publishing, report). Ends with
a summary read back from the DuckDB warehouse: tables and row counts, the models' metrics, where the
report is, and the commands that open the MLflow and Airflow UIs.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta

import duckdb

from visrec.app.orchestrate import airflow_env, run_dates
from visrec.devdata.synth import ShopConfig, generate_shop
from visrec.devdata.trial import DEMO
from visrec.errors import VisrecError
from visrec.ingest.day import ingest_days
from visrec.ingest.user_photos import ingest_user_photos
from visrec.logs import setup_logging
from visrec.pipeline import steps
from visrec.publish import OUTPUT_TABLES
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.runs import RunLog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--days", type=int, default=10, help="days of synthetic events (default 10)")
    parser.add_argument("--dag-days", type=int, default=2, help="run the DAG for the last N days (default 2)")
    parser.add_argument("--corrupt-rate", type=float, default=0.01)
    parser.add_argument(
        "--cnn-minutes",
        type=float,
        help=f"image model budget per run (default {DEMO['cnn_max_minutes']:g}, or VISREC_CNN_MINUTES)",
    )
    parser.add_argument(
        "--gan-minutes",
        type=float,
        help=f"GAN budget when it trains (default {DEMO['gan_max_minutes']:g}, or VISREC_GAN_MINUTES)",
    )
    parser.add_argument(
        "--mf-minutes",
        type=float,
        help=f"the recommender's settings search budget per run (default {DEMO['mf_minutes']:g}: about five "
        "trials here, or VISREC_MF_MINUTES)",
    )
    parser.add_argument("--no-airflow", action="store_true", help="run the DAG's steps in this process")
    args = parser.parse_args(argv)
    setup_logging()

    started = time.perf_counter()
    try:
        # The demo's budgets where the environment sets none, the flags over both; Airflow's tasks
        # get these settings through their environment (see orchestrate.airflow_env).
        settings = (
            Settings.from_env()
            .with_profile(DEMO)
            .with_overrides(
                cnn_max_minutes=args.cnn_minutes, gan_max_minutes=args.gan_minutes, mf_minutes=args.mf_minutes
            )
        )
        lake = Lake.from_settings(settings)
        shop = generate_shop(
            ShopConfig(
                users=args.users,
                items=args.items,
                days=args.days,
                seed=settings.seed,
                corrupt_rate=args.corrupt_rate,
            ),
            lake,
        )
        print(
            f"[demo] synthetic shop: {shop.items} items, {shop.users} users, {shop.events} events, "
            f"{shop.days} days"
        )
        first = date.fromisoformat(shop.first_ds)
        days = [(first + timedelta(days=d)).isoformat() for d in range(shop.days)]
        dag_days = days[-max(1, min(args.dag_days, len(days))) :]
        history = [d for d in days if d not in dag_days]
        if history:
            # The history in one pass, as `visrec ingest --start --end` does.
            reports = ingest_days(settings, history, lake=lake)
            for report in reports:
                photos, _ = ingest_user_photos(settings, lake, report.ds)
                print(
                    f"[demo] history {report.ds}: {report.events.valid} events, {report.events.quarantined} "
                    f"quarantined, {photos.accepted} user photos"
                    + (f", {report.images.accepted} images" if report.images else "")
                )
        print(
            f"[demo] running the visrec_nightly DAG for {', '.join(dag_days)}"
            + (" in this process" if args.no_airflow else " with `airflow dags test`")
        )
        runs = run_dates(dag_days, settings, airflow=not args.no_airflow)
    except VisrecError as exc:
        print(f"visrec demo: error: {exc}", file=sys.stderr)
        return 1

    last = dag_days[-1]
    runs_log = RunLog(lake)
    summaries = runs_log.night(last)
    print("\n=== visrec demo: summary ===")
    print(f"lake:       {lake.uri}")
    print(f"warehouse:  {settings.warehouse_path}  (DuckDB views over the published Parquet)")
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    for table in (*OUTPUT_TABLES, "recommendations_latest"):
        rows, dates = con.execute(f"SELECT count(*), count(DISTINCT ds) FROM {table}").fetchall()[0]
        print(f"  {table:<24} {rows:>8} rows over {dates} date(s)")
    con.close()
    for run in runs:
        tasks = ", ".join(f"{name} {sec:.0f}s" for name, sec in run.task_seconds.items())
        print(f"DAG run {run.ds}: {run.seconds:.0f}s ({tasks})")
    cnn = summaries.get(steps.train_cnn.__name__, {})
    if cnn:
        m = cnn["metrics"]
        print(
            f"image model:  {cnn['version']} held-out accuracy {m['held_out_accuracy']:.3f} "
            f"(majority class {m['majority_class_accuracy']:.3f}); {cnn['reason']}"
        )
        if cnn.get("start"):
            print(f"              {cnn['start']}")
    mf = summaries.get(steps.train_mf.__name__, {})
    for name, m in mf.get("metrics", {}).items():
        print(
            f"recommender:  {name:<10} recall@20 {m['recall_at_20']:.3f}  ndcg@20 {m['ndcg_at_20']:.3f}  "
            f"cold recall@20 {m['cold_recall_at_20']:.3f}  coverage {m['coverage']:.3f}"
        )
    if mf:
        print(f"              {mf['version']}: {mf['reason']}")
        if "selected" in mf:
            print(f"              selected settings: {mf['selected']}")
        served = "the champion's lists" if mf.get("serving") == "model" else "popularity-by-segment lists"
        print(f"              scoring serves {served}")
    ranker = summaries.get(steps.train_ranker.__name__, {})
    if ranker.get("trained"):
        metrics = ranker["metrics"]  # handed over as JSON: its keys come back sorted
        gate = next(key for key in metrics if key.startswith("recall_at_"))
        recalls = ", ".join(f"{name} {value:.3f}" for name, value in metrics[gate].items())
        leading = sorted(metrics["importance"].items(), key=lambda kv: -kv[1])[:3]
        print(f"ranker:       {gate} {recalls}")
        print(
            f"              leading features (share of gain): {', '.join(f'{n} {v:.2f}' for n, v in leading)}"
        )
        print(f"              {ranker['reason']}")
    elif ranker:
        print(f"ranker:       not trained: {ranker['reason']}")
    gans = [runs_log.get(d, steps.train_gan.__name__) for d in dag_days]
    gan = next((g for g in reversed(gans) if g and g.get("trained")), None)
    if gan:
        m = gan["metrics"]
        print(
            f"GAN:          {gan['version']} Frechet ratio {m['frechet_ratio']:.2f} (generated vs real / real vs real), "
            f"class consistency {m['class_consistency']:.3f} vs the image model's {m['cnn_accuracy_on_real']:.3f} on "
            f"real images; trained {sum(bool(g and g.get('trained')) for g in gans)} of {len(dag_days)} nights"
        )
    photos = summaries.get(steps.recognise_user_photos.__name__, {})
    if photos:
        print(
            f"user photos:  {photos['user_photos']} recognised, {photos['photo_recommendations']} photo recommendations"
        )
    print(f"report:       {summaries.get(steps.report.__name__, {}).get('report')}")
    print(f"data docs:    {lake.url(f'validation/ds={last}')}/<step>/data_docs/index.html")
    print("MLflow UI:    mlflow/ui.sh   (then open http://127.0.0.1:5000)")
    home = airflow_env(settings)["AIRFLOW_HOME"]
    print(
        f"Airflow UI:   AIRFLOW_HOME={home} AIRFLOW__CORE__DAGS_FOLDER=$PWD/dags .venv/bin/airflow standalone"
    )
    print(f"try:          .venv/bin/visrec similar {lake.path('raw/images/i000001.jpg')} --html similar.html")
    print(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

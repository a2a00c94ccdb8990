"""The ``visrec`` command line: one verb per step of the data flow.

Errors the user can fix (bad arguments, missing input, unreachable store) end with a one-line
``visrec: error: ...`` on stderr and a non-zero exit status, never a stack trace.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from visrec import __version__
from visrec.errors import VisrecError
from visrec.settings import Settings

log = logging.getLogger("visrec")


def setup_logging(verbose: bool = False) -> None:
    """visrec's messages at INFO (DEBUG with -v); the chatty libraries only when they warn."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("py4j", "great_expectations", "mlflow", "alembic", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _progress(enabled: bool) -> Callable[[str, int, int], None]:
    """A progress callback that keeps one tqdm bar per stage on stderr."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def tick(stage: str, done: int, total: int) -> None:
        if not enabled:
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="", leave=True, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return tick


def _lake(uri: str | None, settings: Settings):
    from visrec.lake import Lake

    return Lake(uri or settings.lake_uri, s3_endpoint=settings.s3_endpoint, s3_region=settings.s3_region)


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.synth import ShopConfig, generate_shop

    config = ShopConfig(
        users=args.users,
        items=args.items,
        days=args.days,
        seed=settings.seed if args.seed is None else args.seed,
        corrupt_rate=args.corrupt_rate,
        start_date=args.start_date,
        image_size=args.image_size,
    )
    out = _lake(args.out, settings)
    started = time.perf_counter()
    summary = generate_shop(config, out, progress=_progress(not args.quiet))
    elapsed = time.perf_counter() - started
    print(
        f"synthetic shop: {summary.items} items, {summary.users} users, {summary.events} events "
        f"over {summary.days} days ({summary.first_ds} .. {summary.last_ds}); "
        f"{summary.bad_images} bad images and {summary.bad_event_lines} bad event lines injected; "
        f"{elapsed:.1f}s"
    )
    print(f"raw data:     {out.url('raw')}")
    print(f"ground truth: {out.url('truth')}")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.importer import import_hm

    source = Path(args.source)
    if not source.is_dir():
        raise VisrecError(f"source folder {source} does not exist")
    out = _lake(args.out, settings)
    summary = import_hm(source, out, progress=_progress(not args.quiet))
    print(
        f"imported {args.layout}: {summary.items} items with images, {summary.users} users, "
        f"{summary.events} events over {summary.days} days ({summary.first_ds} .. {summary.last_ds})"
    )
    print(f"raw data: {out.url('raw')}")
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.ingest import ingest_day
    from visrec.lake import check_ds

    lake = _lake(None, settings)
    dss = [check_ds(ds) for ds in args.ds]
    for ds in dss:
        report = ingest_day(settings, ds, lake=lake, progress=_progress(not args.quiet))
        ev, im = report.events, report.images
        print(
            f"ingested {ds}: events {ev.raw} raw -> {ev.valid} valid, {ev.quarantined} quarantined, "
            f"{ev.duplicates} duplicates dropped; images {im.files} files -> {im.accepted} accepted "
            f"({im.reused} unchanged), {im.quarantined} quarantined; {report.rows}"
        )
        for source, reasons in report.quarantine_reasons.items():
            if reasons:
                print(f"  quarantined {source}: {reasons}")
        print(f"  data docs: {report.data_docs}")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.lake import check_ds

    ds = check_ds(args.ds)
    lake = _lake(None, settings)
    if args.model == "mf":
        return _train_mf(args, settings, ds, lake)
    if args.model == "gan":
        return _train_gan(args, settings, ds, lake)
    return _train_cnn(args, settings, ds, lake)


def _train_gan(args: argparse.Namespace, settings: Settings, ds: str, lake) -> int:
    from visrec.generation import GANConfig, train_gan

    config = GANConfig(epochs=args.epochs or GANConfig.epochs, max_minutes=args.max_minutes)
    result = train_gan(settings, ds, lake=lake, config=config)
    m = result.metrics
    print(f"gan {ds}: Frechet ratio {m['frechet_ratio']:.2f} (generated vs real {m['frechet_distance']:.4f}, "
          f"real vs real {m['frechet_real_vs_real']:.4f}); class consistency {m['class_consistency']:.3f} vs the "
          f"image model's {m['cnn_accuracy_on_real']:.3f} on real images; {m['epochs_run']:.0f} epochs in "
          f"{m['train_seconds']:.0f}s")  # fmt: skip
    print(f"registered {result.version}: {result.reason}")
    return 0


def _train_mf(args: argparse.Namespace, settings: Settings, ds: str, lake) -> int:
    from visrec.recsys import MFConfig, train_mf

    result = train_mf(settings, ds, lake=lake, config=MFConfig(epochs=args.epochs or 20))
    keys = [
        "recall_at_20",
        "ndcg_at_20",
        "map_at_20",
        "cold_recall_at_20",
        "coverage",
        "intra_list_diversity",
        "novelty",
    ]
    print(f"mf {ds}, evaluated on the last {settings.test_days} days:")
    print(f"{'model':<12}" + "".join(f"{k:>22}" for k in keys))
    for name, metrics in result.metrics.items():
        print(f"{name:<12}" + "".join(f"{metrics.get(k, float('nan')):>22.4f}" for k in keys))
    print(f"registered {result.version}: {result.reason}")
    return 0


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.lake import check_ds
    from visrec.recsys import MFConfig, score_users

    ds = check_ds(args.ds)
    exclude = Path(args.exclude).read_text().split() if args.exclude else None
    table = score_users(settings, ds, lake=_lake(None, settings), config=MFConfig(k=args.k), exclude=exclude)
    from collections import Counter

    sources = dict(Counter(table.column("source").to_pylist()))
    print(
        f"recommendations {ds}: {table.num_rows} rows for {len(set(table.column('user_id').to_pylist()))} users; by source {sources}"
    )
    return 0


def _train_cnn(args: argparse.Namespace, settings: Settings, ds: str, lake) -> int:
    from visrec.vision import CNNConfig, build_similar_items, embed_items, load_cnn, train_cnn

    config = CNNConfig(
        epochs=args.epochs or 30,
        max_minutes=args.max_minutes,
        fine_tune=not args.from_scratch,
        backbone=args.backbone,
        backbone_weights=args.backbone_weights,
        mixed_precision=args.mixed_precision,
    )
    result = train_cnn(settings, ds, lake=lake, config=config, progress=_progress(not args.quiet))
    m = result.metrics
    print(
        f"cnn {ds}: held-out accuracy {m['held_out_accuracy']:.4f} (top-5 {m['held_out_top5_accuracy']:.4f}, "
        f"majority class {m['majority_class_accuracy']:.4f}) over {len(result.class_names)} categories, "
        f"{m['epochs_run']:.0f} epochs in {m['train_seconds']:.0f}s"
        + (f", fine-tuned from {result.fine_tuned_from}" if result.fine_tuned_from else "")
    )
    print(f"registered {result.version}: {result.reason}")
    model, version = load_cnn()
    embeddings = embed_items(settings, ds, lake, model, version)
    similar = build_similar_items(lake, ds, k=args.k)
    print(
        f"item_embeddings {ds}: {embeddings.num_rows} items with {version}; similar_items: {similar.num_rows} rows"
    )
    return 0


def _dates(args: argparse.Namespace) -> list[str]:
    from datetime import date, timedelta

    from visrec.lake import check_ds

    if args.ds:
        return [check_ds(d) for d in args.ds]
    first, last = date.fromisoformat(check_ds(args.start)), date.fromisoformat(check_ds(args.end))
    if last < first:
        raise VisrecError(f"--end {args.end} is before --start {args.start}")
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.orchestrate import run_dates

    if not args.ds and not (args.start and args.end):
        raise VisrecError("give --ds DATE [DATE ...] or --start DATE --end DATE")
    for run in run_dates(_dates(args), settings, airflow=not args.no_airflow):
        tasks = ", ".join(f"{name} {sec:.0f}s" for name, sec in run.task_seconds.items())
        print(f"{run.ds}: done in {run.seconds:.0f}s ({tasks})" + (f"; log {run.log}" if run.log else ""))
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.pipeline import publish

    summary = publish(args.ds, settings)
    print(f"published {args.ds}: {summary['rows']}; warehouse {summary['warehouse']}")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.report import build_report

    print(build_report(settings, args.ds, lake=_lake(None, settings)))
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.forget import forget_user

    report = forget_user(settings, args.user_id, lake=_lake(None, settings))
    rows = ", ".join(f"{t} {n}" for t, n in sorted(report.rows_removed.items())) or "none"
    print(
        f"forgot {report.user_id}: {report.raw_files_deleted} uploaded files and {report.raw_lines_removed} "
        f"raw event lines deleted; rows removed: {rows}; later runs drop this user's events and uploads"
    )
    return 0


def cmd_similar(args: argparse.Namespace, settings: Settings) -> int:
    import html as html_lib

    from visrec.html import data_uri, figure, page
    from visrec.vision import find_similar_to_photo

    photo = Path(args.photo)
    if not photo.is_file():
        raise VisrecError(f"photo {photo} not found")
    lake = _lake(None, settings)
    matches, context = find_similar_to_photo(
        settings, photo.read_bytes(), photo.name, k=args.k, lake=lake, ds=args.ds, user=args.user
    )
    guesses = ", ".join(f"{c} {p:.0%}" for c, p in context["categories"])
    print(f"{photo.name}: looks like {guesses} ({context['model_version']}, catalog of {context['ds']})")
    if context["reranked_by"]:
        print(f"re-ranked for user {args.user} with {context['reranked_by']} (score = visual similarity)")
    print(f"{'rank':>4}  {'item_id':<14} {'score':>6}  category")
    for rank, m in enumerate(matches, 1):
        print(f"{rank:>4}  {m.item_id:<14} {m.score:6.3f}  {m.category}")
    if args.html:
        staged = lake.read_table("staging_images", context["ds"])
        pngs = dict(
            zip(staged.column("item_id").to_pylist(), staged.column("image_png").to_pylist(), strict=True)
        )
        mime = "image/" + (photo.suffix.lstrip(".").lower().replace("jpg", "jpeg") or "png")
        body = (
            "<h2>Your photo</h2><div class=grid>"
            + figure(data_uri(photo.read_bytes(), mime), guesses)
            + "</div>"
        )
        body += "<h2>Products like it</h2><div class=grid>"
        for rank, m in enumerate(matches, 1):
            src = data_uri(pngs[m.item_id]) if m.item_id in pngs else ""
            body += figure(src, f"#{rank} {m.item_id} ({m.score:.2f}) {m.category}")
        body += f"</div><p>{html_lib.escape(context['model_version'])}, catalog of {context['ds']}</p>"
        Path(args.html).write_text(page(f"Products like {photo.name}", body))
        print(f"html: {Path(args.html).resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visrec",
        description="Nightly batch platform for visual recommendation. "
        "Settings come from VISREC_* environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"visrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    synth = sub.add_parser(
        "synth",
        help="generate a synthetic shop into the raw zone",
        description="Generate a synthetic shop (catalog, rendered product images, event logs) in "
        "the raw layout, plus its ground truth under truth/. Deterministic per seed.",
    )
    synth.add_argument("--users", type=int, default=2000, help="number of users (default 2000)")
    synth.add_argument("--items", type=int, default=1000, help="number of items (default 1000)")
    synth.add_argument("--days", type=int, default=10, help="days of events (default 10)")
    synth.add_argument("--seed", type=int, default=None, help="random seed (default VISREC_SEED)")
    synth.add_argument(
        "--corrupt-rate",
        type=float,
        default=0.0,
        help="share of bad records to inject into images and event logs (default 0)",
    )
    synth.add_argument("--start-date", default="2026-11-01", help="first day (default 2026-11-01)")
    synth.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--out", default=None, help="output root URI (default: the lake)")
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    synth.set_defaults(func=cmd_synth)

    imp = sub.add_parser(
        "import",
        help="map an external layout onto the raw contract",
        description="Map an external data layout onto visrec's raw contract. Layouts: hm "
        "(articles.csv, transactions.csv, images/<article_id>.jpg).",
    )
    imp.add_argument("layout", choices=["hm"], help="the source layout")
    imp.add_argument("source", help="the source folder")
    imp.add_argument("--out", default=None, help="output root URI (default: the lake)")
    imp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    imp.set_defaults(func=cmd_import)

    ing = sub.add_parser(
        "ingest",
        help="the ingestion jobs for a date: events, features, images, validation",
        description="Ingest one or more dates: the day's event logs (Spark) into clean events and "
        "quarantine, interactions / user profiles / item statistics as of that day, the catalog "
        "images into staging/images, each table checked with Great Expectations.",
    )
    ing.add_argument("--ds", required=True, nargs="+", help="the date(s), YYYY-MM-DD")
    ing.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ing.set_defaults(func=cmd_ingest)

    train = sub.add_parser(
        "train",
        help="train one model for a date: cnn | mf | gan",
        description="Train a model on a date's tables, track it in MLflow and register it. cnn: the "
        "image classifier / embedder on staging_images (fine-tunes the champion when the categories "
        "are unchanged), then embeds the catalog with the champion and builds similar_items. mf: the "
        "visual recommender (VBPR), compared with popularity and the champion on a time split, "
        "refit on all data and registered (champion only if it beats the champion). gan: the "
        "category-conditioned image generator, judged by the champion image model (Frechet distance "
        "in its embedding space, class consistency) and registered behind a Frechet-ratio gate.",
    )
    train.add_argument("model", choices=["cnn", "mf", "gan"], help="which model")
    train.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    train.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs (default: cnn 30, mf 20, gan 60)"
    )
    train.add_argument(
        "--max-minutes", type=float, default=20.0, help="training time budget (default 20 min)"
    )
    train.add_argument("--from-scratch", action="store_true", help="do not fine-tune the champion")
    train.add_argument("--backbone", default="compact", help="compact (default) or a keras.applications name")
    train.add_argument("--backbone-weights", default=None, help="local weights file for --backbone")
    train.add_argument("--mixed-precision", action="store_true", help="float16 compute (for GPUs)")
    train.add_argument("-k", type=int, default=10, help="neighbours per item in similar_items (default 10)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_train)

    score = sub.add_parser(
        "score",
        help="score all users for a date into the recommendations table",
        description="Top-K recommendations for every user with the champion recommender: already "
        "bought items and an optional exclude list filtered, at most 8 items of one category per "
        "list; users the champion does not know get what is popular.",
    )
    score.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    score.add_argument("-k", type=int, default=20, help="recommendations per user (default 20)")
    score.add_argument("--exclude", default=None, help="file of item ids never to recommend (one per line)")
    score.set_defaults(func=cmd_score)

    pub = sub.add_parser(
        "publish",
        help="validate a date's output tables and publish them atomically",
        description="Validate the date's output tables (Great Expectations, ranks 1..K, scores "
        "non-increasing, nothing already bought, every item in the catalog), then switch the release "
        "and refresh the DuckDB warehouse's views in one step. On failure nothing readers see changes.",
    )
    pub.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    pub.set_defaults(func=cmd_publish)

    rep = sub.add_parser("report", help="build the HTML report of a run",
                         description="Write reports/ds=<ds>/index.html into the lake and log it to MLflow.")  # fmt: skip
    rep.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    rep.set_defaults(func=cmd_report)

    fgt = sub.add_parser(
        "forget",
        help="remove one user's photos, events and derived rows",
        description="Remove a user from the lake and the warehouse: uploaded and stored photos, their "
        "lines in the raw event logs, every table row that mentions them (old versions included), and "
        "keep them out of every later run. Models drop them at their next training.",
    )
    fgt.add_argument("user_id", help="the user's id")
    fgt.set_defaults(func=cmd_forget)

    run = sub.add_parser(
        "run",
        help="the whole nightly DAG for one or more dates (through Airflow)",
        description="Run the visrec_nightly DAG for each date in order with `airflow dags test` "
        "(metadata in SQLite under VISREC_HOME/airflow, logs under VISREC_HOME/logs). Stops at the "
        "first failed date; yesterday's published tables stay as they were.",
    )
    run.add_argument("--ds", nargs="+", default=None, help="the date(s), YYYY-MM-DD")
    run.add_argument("--start", default=None, help="first date of a range")
    run.add_argument("--end", default=None, help="last date of a range")
    run.add_argument("--no-airflow", action="store_true", help="run the same steps in this process")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser(
        "similar",
        help='"find products like this photo"',
        description="Embed a photo (any common format and size) with the champion image model and "
        "list the nearest catalog items.",
    )
    sim.add_argument("photo", help="path of the photo")
    sim.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    sim.add_argument("--user", default=None, help="re-rank the look-alikes by this user's taste (visrec-mf)")
    sim.add_argument("--ds", default=None, help="use the catalog embeddings of this date (default latest)")
    sim.add_argument("--html", default=None, metavar="OUT", help="also write an HTML page with the images")
    sim.set_defaults(func=cmd_similar)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``visrec`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        settings = Settings.from_env()
        return args.func(args, settings)
    except (VisrecError, ValueError, OSError) as exc:
        if args.verbose:
            log.exception("failed")
        print(f"visrec: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("visrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

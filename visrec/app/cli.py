"""The ``visrec`` command line: one verb per step of the data flow, each a call into :mod:`visrec.pipeline`.

Flags that tune a run (``--max-minutes``, ``-k``) override the matching ``VISREC_*`` setting through
:meth:`Settings.with_overrides`, so a default lives in one place. Errors the user can fix (bad
arguments, missing input, unreachable store) end with a one-line ``visrec: error: ...`` on stderr and a
non-zero exit status, never a stack trace.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from visrec import __version__
from visrec.errors import VisrecError
from visrec.logs import setup_logging
from visrec.settings import Settings

log = logging.getLogger("visrec")

# Step names, for `visrec step` (kept here so that `--help` does not import the pipeline's libraries).
STEP_NAMES = (
    "ingest_images",
    "ingest_events",
    "build_features",
    "ingest_user_photos",
    "train_cnn",
    "embed_items",
    "recognise_user_photos",
    "train_mf",
    "train_gan",
    "generate_looks",
    "score",
    "publish",
    "report",
)


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def share(text: str) -> float:
    """argparse type: a number within [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


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
    from visrec.store.lake import Lake

    return Lake(uri or settings.lake_uri, s3_endpoint=settings.s3_endpoint, s3_region=settings.s3_region)


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The flags among ``names`` that the user gave (argparse leaves the others None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.devdata.synth import ShopConfig, generate_shop

    given = _given(args, "users", "items", "days", "corrupt_rate", "start_date", "image_size")
    config = ShopConfig(seed=settings.seed if args.seed is None else args.seed, **given)
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
    from visrec.devdata.importer import import_events, import_hm

    if args.layout == "events":
        if not (args.catalog and args.images):
            raise VisrecError("import events needs --catalog CSV and --images DIR")
        out = _lake(args.out, settings)
        done = import_events(
            Path(args.source),
            Path(args.catalog),
            Path(args.images),
            out,
            user_col=args.user_col,
            item_col=args.item_col,
            time_col=args.time_col,
            event_col=args.event_col,
            default_event=args.default_event,
            id_col=args.id_col,
            category_col=args.category_col,
            progress=_progress(not args.quiet),
        )
        print(
            f"imported events: {done.events} interactions over {done.days} days ({done.first_ds} .. "
            f"{done.last_ds}), {done.items} catalog items, {done.images} images"
        )
        if done.unparsed_times or done.items_without_image:
            print(
                f"  left for ingestion to quarantine with a reason: {done.unparsed_times} rows whose time "
                f"does not parse (in {done.first_ds}'s log), {done.items_without_image} items without an image"
            )
        print(f"raw data: {out.url('raw')}")
        print(f"next:     visrec ingest --start {done.first_ds} --end {done.last_ds}")
        return 0
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
    from visrec import pipeline

    if not args.ds and not (args.start and args.end):
        raise VisrecError("give --ds DATE [DATE ...] or --start DATE --end DATE")
    if not args.ds:
        done = pipeline.ingest_range(_dates(args), settings, rebuild=args.rebuild)
        ev, im = done["events"], done["images"]
        print(
            f"ingested {args.start} .. {args.end} ({done['days']} days) in one pass in {done['seconds']:.1f}s: "
            f"events {ev['raw']} raw -> {ev['valid']} valid, {ev['quarantined']} quarantined, "
            f"{ev['duplicates']} duplicates dropped; images (as of {args.end}) {im['files']} files -> "
            f"{im['accepted']} accepted ({im['reused']} unchanged), {im['quarantined']} quarantined; "
            f"features of {args.end}: {done['rows']}"
        )
        for ds, reasons in done["quarantine_reasons"].items():
            print(f"  quarantined events of {ds}: {reasons}")
        if im["reasons"]:
            print(f"  quarantined images: {im['reasons']}")
        print(f"  data docs: {done['data_docs']}")
        return 0
    for ds in _dates(args):
        done = pipeline.ingest(ds, settings, rebuild=args.rebuild)
        ev, im, ph = done["ingest_events"], done["ingest_images"], done["ingest_user_photos"]
        print(
            f"ingested {ds}: events {ev['raw']} raw -> {ev['valid']} valid, {ev['quarantined']} quarantined, "
            f"{ev['duplicates']} duplicates dropped; images {im['files']} files -> {im['accepted']} accepted "
            f"({im['reused']} unchanged), {im['quarantined']} quarantined; user photos {ph['accepted']} "
            f"accepted, {ph['quarantined']} quarantined; {done['build_features']['rows']}"
        )
        for step in ("ingest_events", "ingest_images", "ingest_user_photos"):
            if done[step]["reasons"]:
                print(f"  quarantined by {step}: {done[step]['reasons']}")
        if im.get("warnings"):
            print(f"  accepted with warnings: {im['warnings']}")
        print(f"  data docs: {_lake(None, settings).url(f'validation/ds={ds}')}/<step>/data_docs/index.html")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from visrec import pipeline
    from visrec.store.lake import check_ds

    ds = check_ds(args.ds)
    budget = {"cnn": "cnn_max_minutes", "gan": "gan_max_minutes", "mf": "mf_minutes"}[args.model]
    flags = {budget: "--max-minutes", "similar_k": "-k", "mf_epochs": "--epochs", "mf_trials": "--trials"}
    settings = settings.with_overrides(flags=flags, **{budget: args.max_minutes}, similar_k=args.k)
    if args.trials is not None and args.model != "mf":
        raise VisrecError("--trials applies to mf (the recommender's settings search)")
    if args.retrieval_dim is not None and args.model != "cnn":
        raise VisrecError("--retrieval-dim applies to cnn (the image model's retrieval embedding)")
    settings = settings.with_overrides(retrain=True)  # asked for by hand: a new model, never a reused one
    if args.model == "mf":
        settings = settings.with_overrides(flags=flags, mf_epochs=args.epochs, mf_trials=args.trials)
        return _print_mf(ds, pipeline.train_mf(ds, settings))
    config = _given(args, "epochs", "backbone", "backbone_weights")
    if args.model == "gan":
        summary = pipeline.train_gan(ds, settings, config=config)
        m = summary["metrics"]
        print(
            f"gan {ds}: Frechet ratio {m['frechet_ratio']:.2f} (generated vs real {m['frechet_distance']:.4f}, "
            f"real vs real {m['frechet_real_vs_real']:.4f}); class consistency {m['class_consistency']:.3f} vs the "
            f"image model's {m['cnn_accuracy_on_real']:.3f} on real images; {m['epochs_run']:.0f} epochs in "
            f"{m['train_seconds']:.0f}s"
        )
        print(f"registered {summary['version']}: {summary['reason']}")
        return 0
    config.update({"fine_tune": False} if args.from_scratch else {})
    config.update({"mixed_precision": True} if args.mixed_precision else {})
    config.update(_given(args, "retrieval_dim"))
    if not args.force:  # training ends by re-embedding the date's catalog: refuse before hours of work
        pipeline.check_unpublished(_lake(None, settings), "train cnn", ds)
    cnn = pipeline.train_cnn(ds, settings, config=config)
    m = cnn["metrics"]
    print(
        f"cnn {ds}: held-out accuracy {m['held_out_accuracy']:.4f} (top-5 {m['held_out_top5_accuracy']:.4f}, "
        f"majority class {m['majority_class_accuracy']:.4f}), {m['epochs_run']:.0f} epochs in "
        f"{m['train_seconds']:.0f}s"
        + (f", fine-tuned from {cnn['fine_tuned_from']}" if cnn["fine_tuned_from"] else "")
    )
    print(f"registered {cnn['version']}: {cnn['reason']}")
    embedded = pipeline.embed_items(ds, settings, cnn, force=args.force)
    print(
        f"item_embeddings {ds}: {embedded['item_embeddings']} items with {embedded['model_version']}; "
        f"similar_items: {embedded['similar_items']} rows"
    )
    return 0


def _print_mf(ds: str, summary: dict) -> int:
    keys = [
        "recall_at_20",
        "ndcg_at_20",
        "map_at_20",
        "cold_recall_at_20",
        "coverage",
        "intra_list_diversity",
        "novelty",
    ]
    users = int(summary["metrics"]["popularity"].get("test_users", 0))
    # The window starts at VISREC_TEST_DAYS and grows back until it holds VISREC_TEST_MIN_USERS users.
    print(f"mf {ds}, evaluated on the test window before it ({users} users with something to find):")
    print(f"{'model':<12}" + "".join(f"{k:>22}" for k in keys))
    for name, metrics in summary["metrics"].items():
        print(f"{name:<12}" + "".join(f"{metrics.get(k, float('nan')):>22.4f}" for k in keys))
    print(f"selected settings: {summary['selected']}")
    print(f"registered {summary['version']}: {summary['reason']}")
    print(
        f"scoring serves: {'the champion' if summary['serving'] == 'model' else 'popularity-by-segment lists'}"
    )
    return 0


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from visrec import pipeline

    exclude = Path(args.exclude).read_text().split() if args.exclude else None
    settings = settings.with_overrides(top_k=args.k, flags={"top_k": "-k"})
    summary = pipeline.score(
        args.ds, settings, exclude=exclude, force=args.force, latest_features=args.latest_features
    )
    print(
        f"recommendations {args.ds}: {summary['rows']} rows for {summary['users']} users "
        f"(K={summary['k']}, features of {summary['features_ds']}); by source {summary['sources']}"
    )
    return 0


def cmd_step(args: argparse.Namespace, settings: Settings) -> int:
    from visrec import pipeline

    summary = pipeline.run_step(args.name, args.ds, settings, force=args.force)
    print(f"{args.name} {args.ds}: {summary}")
    return 0


def _dates(args: argparse.Namespace) -> list[str]:
    from datetime import date, timedelta

    from visrec.store.lake import check_ds

    if args.ds:
        return [check_ds(d) for d in args.ds]
    first, last = date.fromisoformat(check_ds(args.start)), date.fromisoformat(check_ds(args.end))
    if last < first:
        raise VisrecError(f"--end {args.end} is before --start {args.start}")
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.app.orchestrate import run_dates

    if not args.ds and not (args.start and args.end):
        raise VisrecError("give --ds DATE [DATE ...] or --start DATE --end DATE")
    for run in run_dates(_dates(args), settings, airflow=not args.no_airflow):
        tasks = ", ".join(f"{name} {sec:.0f}s" for name, sec in run.task_seconds.items())
        print(f"{run.ds}: done in {run.seconds:.0f}s ({tasks})" + (f"; log {run.log}" if run.log else ""))
    return 0


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from visrec.app.cluster import LocalCluster, Ports
    from visrec.app.orchestrate import pool_slots

    root = Path(args.dir) if args.dir else settings.home / "cluster"
    cluster = LocalCluster(root, Ports(args.port_base) if args.port_base else None)
    if args.action == "up":
        # The VISREC_* settings of this shell are what every task will run with.
        cluster.up(pool_slots(settings), {k: v for k, v in os.environ.items() if k.startswith("VISREC_")})
        print(
            f"cluster up: Airflow http://127.0.0.1:{cluster.ports.airflow_api}, MLflow "
            f"http://127.0.0.1:{cluster.ports.mlflow}, Spark http://127.0.0.1:{cluster.ports.spark_ui}"
        )
        print(f"its settings: set -a; . {cluster.env_file()}; set +a")
    elif args.action == "down":
        stopped = cluster.down()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    elif args.action == "status":
        for name, state in (cluster.status() or {"cluster": "never started here"}).items():
            print(f"{name:14} {state}")
    elif args.action == "env":
        print(cluster.env_file().read_text() if cluster.env_file().exists() else "", end="")
    else:  # run
        for ds in _dates(args):
            run_id = cluster.trigger(ds)
            print(
                f"{ds}: triggered {run_id}; waiting (Airflow UI: http://127.0.0.1:{cluster.ports.airflow_api})"
            )
            state = cluster.wait(run_id)
            print(f"{ds}: {state}")
            if state != "success":
                raise VisrecError(f"the run for {ds} {state}; its task logs are in the Airflow UI")
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from visrec import pipeline

    summary = pipeline.publish(args.ds, settings, force=args.force)
    print(f"published {args.ds}: {summary['rows']}; warehouse {summary['warehouse']}")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from visrec import pipeline

    print(pipeline.report(args.ds, settings)["report"])
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from visrec import pipeline

    report = pipeline.forget(args.user_id, settings)
    rows = ", ".join(f"{t} {n}" for t, n in sorted(report.rows_removed.items())) or "none"
    print(
        f"forgot {report.user_id}: {report.raw_files_deleted} uploaded files and {report.raw_lines_removed} "
        f"raw event lines deleted; rows removed: {rows}; later runs drop this user's events and uploads"
    )
    return 0


def cmd_similar(args: argparse.Namespace, settings: Settings) -> int:
    from visrec import pipeline

    photo = Path(args.photo)
    if not photo.is_file():
        raise VisrecError(f"photo {photo} not found")
    lake = _lake(None, settings)
    matches, context = pipeline.find_similar(
        settings, photo.read_bytes(), photo.name, k=args.k, ds=args.ds, user=args.user, lake=lake
    )
    guesses = ", ".join(f"{c} {p:.0%}" for c, p in context["categories"])
    print(f"{photo.name}: looks like {guesses} ({context['model_version']}, catalog of {context['ds']})")
    if context["reranked_by"]:
        print(f"re-ranked for user {args.user} with {context['reranked_by']} (score = visual similarity)")
    print(f"{'rank':>4}  {'item_id':<14} {'score':>6}  category")
    for rank, m in enumerate(matches, 1):
        print(f"{rank:>4}  {m.item_id:<14} {m.score:6.3f}  {m.category}")
    if args.html:
        from visrec.report.html import similar_page

        staged = lake.read_table("staging_images", context["ds"])
        pngs = dict(
            zip(staged.column("item_id").to_pylist(), staged.column("image_png").to_pylist(), strict=True)
        )
        Path(args.html).write_text(
            similar_page(photo.name, photo.read_bytes(), guesses, matches, pngs, context)
        )
        print(f"html: {Path(args.html).resolve()}")
    return 0


def _mf_settings_help() -> str:
    """The recommender's settings and search space (``VISREC_MF_*``), for ``visrec train mf --help``."""
    lines = ["mf settings (environment variables; the search tries the *_SEARCH_* choices and ranges):"]
    for name, field in Settings.model_fields.items():
        if name.startswith("mf_"):
            lines.append(f"  {Settings.env_name(name):<32} {field.default!s:<12} {field.description}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visrec",
        description="Nightly batch platform for visual recommendation. "
        "Settings come from VISREC_* environment variables (see README); flags override them.",
    )
    parser.add_argument("--version", action="version", version=f"visrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, func, help: str, description: str, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        formatter = argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter
        p = sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=formatter)
        p.set_defaults(func=func)
        return p

    synth = command(
        "synth",
        cmd_synth,
        "generate a synthetic shop into the raw zone",
        "Generate a synthetic shop (catalog, rendered product images, event logs, user photos) in "
        "the raw layout, plus its ground truth under truth/. Deterministic per seed. Omitted "
        "flags take visrec.devdata.synth.ShopConfig's defaults (the demo's scale).",
    )
    synth.add_argument("--users", type=positive_int, help="number of users (default 2000)")
    synth.add_argument("--items", type=positive_int, help="number of items (default 1000)")
    synth.add_argument("--days", type=positive_int, help="days of events (default 10)")
    synth.add_argument("--seed", type=int, help="random seed (default VISREC_SEED)")
    synth.add_argument("--corrupt-rate", type=share, help="share of bad records to inject (default 0)")
    synth.add_argument("--start-date", help="first day (default 2026-11-01)")
    synth.add_argument("--image-size", type=positive_int, help="image side in pixels (default 64)")
    synth.add_argument("--out", help="output root URI (default: the lake)")
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    imp = command(
        "import",
        cmd_import,
        "map an external layout onto the raw contract",
        "Map external data onto visrec's raw contract, one events log per day. Layouts: events (your "
        "own: SOURCE is a CSV or Parquet file of interactions with user, item and time columns; "
        "--catalog a CSV with an id and a category column, other columns kept as attributes; --images "
        "a folder of <item_id>.<ext>; times ISO-8601 or unix seconds/milliseconds; bad rows are kept "
        "for ingestion to quarantine with a reason), hm (SOURCE is a folder with articles.csv, "
        "transactions.csv, images/<article_id>.jpg).",
    )
    imp.add_argument("layout", choices=["events", "hm"], help="the source layout")
    imp.add_argument("source", help="events: the interactions file; hm: the source folder")
    imp.add_argument("--out", help="output root URI (default: the lake)")
    imp.add_argument("--catalog", help="events: the catalog CSV")
    imp.add_argument("--images", help="events: the folder of images named by item id")
    imp.add_argument("--user-col", default="user_id", help="events: the user column (default user_id)")
    imp.add_argument("--item-col", default="item_id", help="events: the item column (default item_id)")
    imp.add_argument("--time-col", default="ts", help="events: the time column (default ts)")
    imp.add_argument(
        "--event-col", help="events: the event-type column (default: every row is --default-event)"
    )
    imp.add_argument("--default-event", default="purchase", help="events: the event type without --event-col")
    imp.add_argument("--id-col", default="item_id", help="events: the catalog's id column (default item_id)")
    imp.add_argument("--category-col", default="category", help="events: the catalog's category column")
    imp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    ing = command(
        "ingest",
        cmd_ingest,
        "the ingestion steps for a date: images, events, features, user photos",
        "Ingest one or more dates: catalog images into staging/images, the day's event logs into "
        "clean events and quarantine (DuckDB here, Spark on a cluster), interactions / user profiles "
        "/ item statistics as of that day (from the previous day's snapshot), the day's user photos; "
        "each table checked with Great Expectations. --start/--end ingests the range in one pass "
        "(a backfill: every log parsed in one job, images checked once, for the last day).",
    )
    ing.add_argument("--ds", nargs="+", help="the date(s), YYYY-MM-DD")
    ing.add_argument("--start", help="first date of a range (with --end)")
    ing.add_argument("--end", help="last date of a range")
    ing.add_argument(
        "--rebuild", action="store_true", help="features from the whole event history, not the previous day's"
    )
    ing.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    train = command(
        "train",
        cmd_train,
        "train one model for a date: cnn | mf | gan",
        "Train a model on a date's tables, track it in MLflow and register it (champion only if "
        "it passes the promotion gate). cnn: the image classifier / embedder (fine-tunes the "
        "champion when the categories are unchanged), then embeds the catalog with the champion "
        "and builds similar_items. mf: the visual recommender (VBPR), compared with popularity "
        "and the champion on a time split. gan: the category-conditioned image generator, judged "
        "by the champion image model.",
        _mf_settings_help(),
    )
    train.add_argument("model", choices=["cnn", "mf", "gan"], help="which model")
    train.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    train.add_argument(
        "--max-minutes",
        type=float,
        help="training budget (default VISREC_CNN_MINUTES / VISREC_GAN_MINUTES; mf: the search's, VISREC_MF_MINUTES)",
    )
    train.add_argument(
        "--trials", type=int, help="mf: settings the search tries (default VISREC_MF_TRIALS; 0: the defaults)"
    )
    train.add_argument(
        "-k", type=positive_int, help="neighbours per item in similar_items (default VISREC_SIMILAR_K)"
    )
    train.add_argument(
        "--epochs",
        type=positive_int,
        help="maximum epochs (default: cnn 30, gan 60, mf VISREC_MF_EPOCHS; mf stops early on validation)",
    )
    train.add_argument("--from-scratch", action="store_true", help="cnn: do not fine-tune the champion")
    train.add_argument("--backbone", help="cnn: compact (default) or a keras.applications name")
    train.add_argument("--backbone-weights", help="cnn: local weights file for --backbone")
    train.add_argument("--mixed-precision", action="store_true", help="cnn: float16 compute (for GPUs)")
    train.add_argument(
        "--retrieval-dim",
        type=int,
        help="cnn: width of the retrieval embedding that similar items and photo search use "
        "(default 64; 0: the classifier's embedding only)",
    )
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.add_argument("--force", action="store_true", help="cnn: re-embed a date that is already published")

    score = command(
        "score",
        cmd_score,
        "score all users for a date into the recommendations table",
        "Top-K recommendations for every user with the champion recommender: already bought "
        "items and an optional exclude list filtered, at most 8 items of one category per list; "
        "users the champion does not know get what is popular.",
    )
    score.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    score.add_argument("-k", type=positive_int, help="recommendations per user (default VISREC_TOP_K)")
    score.add_argument("--exclude", help="file of item ids never to recommend (one per line)")
    score.add_argument("--force", action="store_true", help="rescore a date that is already published")
    score.add_argument(
        "--latest-features",
        action="store_true",
        help="score a date without its own features with the newest ones before it (recorded)",
    )

    pub = command(
        "publish",
        cmd_publish,
        "validate a date's output tables and publish them atomically",
        "Validate the date's output tables (Great Expectations, ranks 1..K with the K that score "
        "used, scores non-increasing, nothing already bought, every item in the catalog), then "
        "switch the release and refresh the DuckDB warehouse's views in one step. On failure "
        "nothing readers see changes.",
    )
    pub.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    pub.add_argument("--force", action="store_true", help="publish again a date that is already published")

    rep = command(
        "report",
        cmd_report,
        "build the HTML report of a run",
        "Write reports/ds=<ds>/index.html into the lake and log it to MLflow.",
    )
    rep.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")

    step = command(
        "step",
        cmd_step,
        "run any single step of the nightly DAG for a date",
        "Run one step of the nightly DAG for a date, as its Airflow task does (upstream results "
        "come from the registry's champions and the date's run records). Steps: "
        + ", ".join(STEP_NAMES)
        + ".",
    )
    step.add_argument("name", choices=STEP_NAMES, metavar="NAME", help="the step")
    step.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    step.add_argument(
        "--force", action="store_true", help="let the step change a date that is already published"
    )

    fgt = command(
        "forget",
        cmd_forget,
        "remove one user's photos, events and derived rows",
        "Remove a user from the lake and the warehouse: uploaded and stored photos, their lines in "
        "the raw event logs, every table row that mentions them (old versions included), and keep "
        "them out of every later run. Models drop them at their next training.",
    )
    fgt.add_argument("user_id", help="the user's id")

    run = command(
        "run",
        cmd_run,
        "the whole nightly DAG for one or more dates (through Airflow)",
        "Run the visrec_nightly DAG for each date in order with `airflow dags test` (metadata in "
        "SQLite under VISREC_HOME/airflow, logs under VISREC_HOME/logs). More than one date: their "
        "events and features are ingested first in one pass, and each run reuses them. Stops at the "
        "first failed date; yesterday's published tables stay as they were.",
    )
    run.add_argument("--ds", nargs="+", help="the date(s), YYYY-MM-DD")
    run.add_argument("--start", help="first date of a range")
    run.add_argument("--end", help="last date of a range")
    run.add_argument("--no-airflow", action="store_true", help="run the same steps in this process")

    clu = command(
        "cluster",
        cmd_cluster,
        "cluster mode on this machine: start, stop or use the local services",
        "The docker/ stack's topology as local processes on 127.0.0.1: PostgreSQL, Redis, an S3 "
        "server (moto), the MLflow tracking server, a Spark master with two workers, and Airflow "
        "(api-server, scheduler, dag-processor, two Celery workers). `up` starts them and writes the "
        "settings that point visrec at them to <dir>/cluster.env; `run` triggers the nightly DAG "
        "through the scheduler and waits; `down` stops everything `up` started.",
    )
    clu.add_argument("action", choices=("up", "down", "status", "env", "run"), help="what to do")
    clu.add_argument("--dir", help="the cluster's folder (default VISREC_HOME/cluster)")
    clu.add_argument("--port-base", type=positive_int, help="first of the 12 ports it uses (default 47100)")
    clu.add_argument("--ds", nargs="+", help="run: the date(s), YYYY-MM-DD")
    clu.add_argument("--start", help="run: first date of a range")
    clu.add_argument("--end", help="run: last date of a range")

    sim = command(
        "similar",
        cmd_similar,
        '"find products like this photo"',
        "Embed a photo (any common format and size) with the champion image model and list the "
        "nearest catalog items; with --user, re-rank them by that user's taste (VISREC_PHOTO_WEIGHT "
        "weighs the photo beside the recommender, as in scoring).",
    )
    sim.add_argument("photo", help="path of the photo")
    sim.add_argument("-k", type=positive_int, default=10, help="how many items (default 10)")
    sim.add_argument("--user", help="re-rank the look-alikes by this user's taste (visrec-mf)")
    sim.add_argument("--ds", help="use the catalog embeddings of this date (default latest)")
    sim.add_argument("--html", metavar="OUT", help="also write an HTML page with the images")
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

"""The ``visrec`` command line: one verb per step of the data flow, each a call into :mod:`visrec.pipeline`.

Flags that tune a run (``--max-minutes``, ``-k``) override the matching ``VISREC_*`` setting through
:meth:`Settings.with_overrides`, so a default lives in one place. Errors the user can fix (bad
arguments, missing input, unreachable store) end with a one-line ``visrec: error: ...`` on stderr and a
non-zero exit status, never a stack trace.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from visrec import __version__
from visrec.errors import VisrecError
from visrec.logs import setup_logging
from visrec.pipeline import NAMES, STEPS
from visrec.settings import Settings

log = logging.getLogger("visrec")


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
        "Settings come from VISREC_* environment variables (see docs/reference/settings.md); flags override them.",
    )
    parser.add_argument("--version", action="version", version=f"visrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
        formatter = argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter
        return sub.add_parser(
            name, help=help, description=description, epilog=epilog, formatter_class=formatter
        )

    synth = command(
        "synth",
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
    train.add_argument(
        "--precision",
        choices=["float32", "bfloat16", "float16"],
        help="cnn: compute precision (default VISREC_CNN_PRECISION, float32; float16 is for GPUs)",
    )
    train.add_argument(
        "--mixed-precision", action="store_true", help="cnn: float16 compute (--precision float16)"
    )
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
        "build the HTML report of a run",
        "Write reports/ds=<ds>/index.html into the lake and log it to MLflow.",
    )
    rep.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")

    step = command(
        "step",
        "run any single step of the nightly DAG for a date",
        "Run one step of the nightly DAG for a date, as its Airflow task does (upstream results "
        "come from the registry's champions and the date's run records).",
        "steps, in the DAG's order:\n" + "\n".join(f"  {s.name:<22} {s.doc}" for s in STEPS),
    )
    step.add_argument("name", choices=NAMES, metavar="NAME", help="the step (listed below)")
    step.add_argument("--ds", required=True, help="the date, YYYY-MM-DD")
    step.add_argument(
        "--force", action="store_true", help="let the step change a date that is already published"
    )

    fgt = command(
        "forget",
        "remove one user's photos, events and derived rows",
        "Remove a user from the lake and the warehouse: uploaded and stored photos, their lines in "
        "the raw event logs, every table row that mentions them (old versions included), and keep "
        "them out of every later run. Models drop them at their next training.",
    )
    fgt.add_argument("user_id", help="the user's id")

    exp = command(
        "export",
        "copy the published recommendations into the serving store",
        "Copy the published recommendations of a date (default the newest) into VISREC_SERVING_URI "
        "(a SQLite file by default, PostgreSQL on a cluster), swapped atomically: readers see the old "
        "release or the new one, never a mix. What the visrec_serving_export DAG runs when the nightly "
        "run publishes. Exporting what is served does nothing; an older date needs --force.",
    )
    exp.add_argument("--ds", help="the published date (default the newest)")
    exp.add_argument("--force", action="store_true", help="serve this date even if a newer one is served")

    rbk = command(
        "rollback",
        "make an earlier model version the champion again",
        "Move the `champion` alias of a registered model (cnn: visrec-cnn, mf: visrec-mf, gan: "
        "visrec-gan) to VERSION, and keep who, when, from which version and why as a tag of that "
        "version (MLflow's UI shows it). The next `visrec score` (and the next night's promotion gate) "
        "uses it. `visrec champions` lists the history.",
    )
    rbk.add_argument("model", choices=("cnn", "mf", "gan"), help="which model")
    rbk.add_argument("--to", required=True, type=positive_int, metavar="VERSION", help="the version number")
    rbk.add_argument("--reason", required=True, help="why (kept with the version)")

    command(
        "champions",
        "which model version was champion, night by night",
        "Each night of the run records with the champion its trainings left (image model, "
        "recommender, GAN), then every champion moved by hand (`visrec rollback`).",
    )

    run = command(
        "run",
        "the whole nightly DAG for one or more dates (through Airflow)",
        "Run the visrec_nightly DAG for each date in order with `airflow dags test` (metadata in "
        "SQLite under VISREC_HOME/airflow, logs under VISREC_HOME/logs). More than one date: their "
        "events and features are ingested first in one pass, and each run reuses them. Stops at the "
        "first failed date; yesterday's published tables stay as they were. With a `visrec cluster` "
        "running (its cluster.env sourced), its scheduler runs them instead: `visrec cluster run` (a "
        "range becomes an Airflow backfill when the DAG has a schedule).",
    )
    run.add_argument("--ds", nargs="+", help="the date(s), YYYY-MM-DD")
    run.add_argument("--start", help="first date of a range")
    run.add_argument("--end", help="last date of a range")
    run.add_argument("--no-airflow", action="store_true", help="run the same steps in this process")

    clu = command(
        "cluster",
        "cluster mode on this machine: start, stop or use the local services",
        "The docker/ stack's topology as local processes on 127.0.0.1: PostgreSQL, Redis, an S3 "
        "server (moto), the MLflow tracking server, a Spark master with two workers, and Airflow "
        "(api-server with a user and password, scheduler, dag-processor, triggerer, two Celery workers), "
        "each Airflow component with its own AIRFLOW_HOME and task logs in S3. `up` starts what is not "
        "running (a dead component is restarted) and writes the settings and secrets that point visrec "
        "at them to <dir>/cluster.env; `run` triggers the nightly DAG through the scheduler and waits; "
        "`down` ends every process of the cluster.",
    )
    clu.add_argument(
        "action",
        choices=("up", "down", "status", "env", "run", "spark"),
        help="what to do (spark: start the Spark standalone cluster alone, a master and two workers)",
    )
    clu.add_argument("--dir", help="the cluster's folder (default VISREC_CLUSTER_DIR: VISREC_HOME/cluster)")
    clu.add_argument("--port-base", type=positive_int, help="first of the 13 ports it uses (default 27100)")
    clu.add_argument("--ds", nargs="+", help="run: the date(s), YYYY-MM-DD")
    clu.add_argument("--start", help="run: first date of a range")
    clu.add_argument("--end", help="run: last date of a range")

    sim = command(
        "similar",
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
        # Imported once the command line is parsed: the commands load the pipeline's libraries
        # (about 1 s and 140 MB), which `visrec --help` and a usage error must not pay.
        from visrec.app import commands

        return getattr(commands, f"cmd_{args.command}")(args, settings)
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

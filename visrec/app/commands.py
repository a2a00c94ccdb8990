"""The ``visrec`` commands: one ``cmd_<name>(args, settings) -> exit code`` per verb of
:mod:`visrec.app.cli`, which parses the command line and imports this module only then (so ``visrec
--help`` stays fast)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from tqdm import tqdm

from visrec import serving
from visrec.app import cluster as cluster_mode
from visrec.app import orchestrate
from visrec.devdata import importer, synth
from visrec.errors import VisrecError
from visrec.mlops import tracking
from visrec.pipeline import champions, steps
from visrec.report import html
from visrec.settings import Settings
from visrec.store.lake import Lake, check_ds


def _progress(enabled: bool) -> Callable[[str, int, int], None]:
    """A progress callback that keeps one tqdm bar per stage on stderr."""
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
    return Lake(uri or settings.lake_uri, s3_endpoint=settings.s3_endpoint, s3_region=settings.s3_region)


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The flags among ``names`` that the user gave (argparse leaves the others None)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    given = _given(args, "users", "items", "days", "corrupt_rate", "start_date", "image_size")
    config = synth.ShopConfig(seed=settings.seed if args.seed is None else args.seed, **given)
    out = _lake(args.out, settings)
    started = time.perf_counter()
    summary = synth.generate_shop(config, out, progress=_progress(not args.quiet))
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
    if args.layout == "events":
        if not (args.catalog and args.images):
            raise VisrecError("import events needs --catalog CSV and --images DIR")
        out = _lake(args.out, settings)
        done = importer.import_events(
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
    summary = importer.import_hm(source, out, progress=_progress(not args.quiet))
    print(
        f"imported {args.layout}: {summary.items} items with images, {summary.users} users, "
        f"{summary.events} events over {summary.days} days ({summary.first_ds} .. {summary.last_ds})"
    )
    print(f"raw data: {out.url('raw')}")
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    if not args.ds and not (args.start and args.end):
        raise VisrecError("give --ds DATE [DATE ...] or --start DATE --end DATE")
    if not args.ds:
        done = steps.ingest_range(_dates(args), settings, rebuild=args.rebuild)
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
        done = steps.ingest(ds, settings, rebuild=args.rebuild)
        ev, im, ph = done.events, done.images, done.user_photos
        print(
            f"ingested {ds}: events {ev['raw']} raw -> {ev['valid']} valid, {ev['quarantined']} quarantined, "
            f"{ev['duplicates']} duplicates dropped; images {im['files']} files -> {im['accepted']} accepted "
            f"({im['reused']} unchanged), {im['quarantined']} quarantined; user photos {ph['accepted']} "
            f"accepted, {ph['quarantined']} quarantined; {done.features['rows']}"
        )
        for what, summary in (("events", ev), ("images", im), ("user photos", ph)):
            if summary["reasons"]:
                print(f"  quarantined {what}: {summary['reasons']}")
        if im.get("warnings"):
            print(f"  accepted with warnings: {im['warnings']}")
        print(f"  data docs: {_lake(None, settings).url(f'validation/ds={ds}')}/<step>/data_docs/index.html")
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
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
        return _print_mf(ds, steps.train_mf(ds, settings))
    config = _given(args, "epochs", "backbone", "backbone_weights")
    if args.model == "gan":
        summary = steps.train_gan(ds, settings, config=config)
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
    config.update({"precision": "float16"} if args.mixed_precision else _given(args, "precision"))
    config.update(_given(args, "retrieval_dim"))
    if not args.force:  # training ends by re-embedding the date's catalog: refuse before hours of work
        steps.check_unpublished(_lake(None, settings), "train cnn", ds)
    cnn = steps.train_cnn(ds, settings, config=config)
    m = cnn["metrics"]
    print(
        f"cnn {ds}: held-out accuracy {m['held_out_accuracy']:.4f} (top-5 {m['held_out_top5_accuracy']:.4f}, "
        f"majority class {m['majority_class_accuracy']:.4f}), {m['epochs_run']:.0f} epochs in "
        f"{m['train_seconds']:.0f}s"
        + (f", fine-tuned from {cnn['fine_tuned_from']}" if cnn["fine_tuned_from"] else "")
    )
    print(f"cnn {ds}: {cnn['start']}")
    print(f"registered {cnn['version']}: {cnn['reason']}")
    embedded = steps.embed_items(ds, settings, cnn=cnn, force=args.force)
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
    exclude = Path(args.exclude).read_text().split() if args.exclude else None
    settings = settings.with_overrides(top_k=args.k, flags={"top_k": "-k"})
    summary = steps.score(
        args.ds, settings, exclude=exclude, force=args.force, latest_features=args.latest_features
    )
    print(
        f"recommendations {args.ds}: {summary['rows']} rows for {summary['users']} users "
        f"(K={summary['k']}, features of {summary['features_ds']}); by source {summary['sources']}"
    )
    return 0


def cmd_step(args: argparse.Namespace, settings: Settings) -> int:
    summary = steps.run_step(args.name, args.ds, settings, force=args.force)
    print(f"{args.name} {args.ds}: {summary}")
    return 0


def _dates(args: argparse.Namespace) -> list[str]:
    if args.ds:
        return [check_ds(d) for d in args.ds]
    first, last = date.fromisoformat(check_ds(args.start)), date.fromisoformat(check_ds(args.end))
    if last < first:
        raise VisrecError(f"--end {args.end} is before --start {args.start}")
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.ds and not (args.start and args.end):
        raise VisrecError("give --ds DATE [DATE ...] or --start DATE --end DATE")
    twin = cluster_mode.LocalCluster(settings.cluster_dir)
    if not args.no_airflow and all(twin.alive(name) for name in ("api-server", "scheduler")):
        # A running Airflow (this shell sourced its cluster.env): its scheduler runs the dates.
        print(f"Airflow runs at http://127.0.0.1:{twin.ports.airflow_api} (cluster {twin.root}): using it")
        args.action, args.dir, args.port_base = "run", str(twin.root), None
        return cmd_cluster(args, settings)
    for run in orchestrate.run_dates(_dates(args), settings, airflow=not args.no_airflow):
        tasks = ", ".join(f"{name} {sec:.0f}s" for name, sec in run.task_seconds.items())
        print(f"{run.ds}: done in {run.seconds:.0f}s ({tasks})" + (f"; log {run.log}" if run.log else ""))
    return 0


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.dir) if args.dir else settings.cluster_dir
    cluster = cluster_mode.LocalCluster(root, cluster_mode.Ports(args.port_base) if args.port_base else None)
    if args.action == "up":
        # The VISREC_* settings of this shell are what every task will run with.
        started = cluster.up(
            orchestrate.pool_slots(settings), {k: v for k, v in os.environ.items() if k.startswith("VISREC_")}
        )
        print(f"started: {', '.join(started) or 'nothing (every component was running)'}")
        print(
            f"cluster up: Airflow http://127.0.0.1:{cluster.ports.airflow_api} (user {cluster_mode.ADMIN}, "
            f"password: AIRFLOW_ADMIN_PASSWORD in cluster.env), MLflow http://127.0.0.1:{cluster.ports.mlflow}, "
            f"Spark http://127.0.0.1:{cluster.ports.spark_ui}"
        )
        print(f"its settings: set -a; . {cluster.env_file()}; set +a")
    elif args.action == "spark":
        cluster.start_spark()
        print(
            f"spark master: spark://127.0.0.1:{cluster.ports.spark_master} (UI http://127.0.0.1:{cluster.ports.spark_ui})"
        )
    elif args.action == "down":
        left = len(cluster.processes())
        stopped = cluster.down()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'} ({left} processes ended)")
    elif args.action == "status":
        if not cluster.pids and not cluster.state_file.exists():
            print(f"cluster: never started under {root}")
        status = cluster.status()
        for name, state in status.items():
            print(f"{name:14} {state}")
        dead = [name for name, state in status.items() if state == "stopped"]
        if dead and len(dead) < len(cluster.pids):
            print(f"{', '.join(dead)} stopped: `visrec cluster up` restarts them")
    elif args.action == "env":
        print(cluster.env_file().read_text() if cluster.env_file().exists() else "", end="")
    else:  # run
        down = [name for name in ("api-server", "scheduler") if not cluster.alive(name)]
        if down:
            raise VisrecError(
                f"the cluster under {root} has no running {' or '.join(down)}; start it with `visrec cluster up` "
                "(with the same --dir)"
            )
        dates = _dates(args)
        schedule = cluster.env().get("VISREC_DAG_SCHEDULE", "none")
        if len(dates) > 1 and schedule.lower() != "none":
            return _cluster_backfill(cluster, dates)
        if len(dates) > 1:
            print(
                f"the cluster's DAG has no schedule (VISREC_DAG_SCHEDULE=none), and Airflow backfills need "
                f"one: triggering the {len(dates)} dates one by one"
            )
        for ds in dates:
            run_id = cluster.trigger(ds)
            print(
                f"{ds}: triggered {run_id}; waiting (Airflow UI: http://127.0.0.1:{cluster.ports.airflow_api})"
            )
            state = cluster.wait(run_id)
            print(f"{ds}: {state}")
            if state != "success":
                raise VisrecError(f"the run for {ds} {state}; its task logs are in the Airflow UI")
    return 0


def _cluster_backfill(cluster: cluster_mode.LocalCluster, dates: list[str]) -> int:
    """A date range on a running Airflow: the one-pass ingestion of its events and features, then an
    Airflow backfill whose runs reuse them; wait for it and report each date."""
    done = steps.ingest_range(dates, Settings.from_env(cluster.env()))
    print(f"ingested {len(dates)} days in one pass in {done['seconds']:.0f}s")
    backfill = cluster.backfill(dates[0], dates[-1], {"ingested": True})
    print(
        f"backfill {backfill['id']} of {orchestrate.DAG_ID} {dates[0]}..{dates[-1]} created in Airflow "
        f"(UI: http://127.0.0.1:{cluster.ports.airflow_api}/dags/{orchestrate.DAG_ID}); waiting"
    )
    states = cluster.wait_backfill(backfill["id"], len(dates))
    failures = cluster.backfill_failures(backfill["id"])
    for ds, state in states.items():
        print(f"{ds}: {state}" + (f" ({', '.join(failures[ds])} failed)" if ds in failures else ""))
    failed = [ds for ds, state in states.items() if state != "success"]
    if failed:
        raise VisrecError(
            f"backfill {backfill['id']}: {', '.join(failed)} failed; their task logs are in the Airflow UI"
        )
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    summary = steps.publish(args.ds, settings, force=args.force)
    print(f"published {args.ds}: {summary['rows']}; warehouse {summary['warehouse']}")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    print(steps.report(args.ds, settings)["report"])
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    report = steps.forget(args.user_id, settings)
    rows = ", ".join(f"{t} {n}" for t, n in sorted(report.rows_removed.items())) or "none"
    print(
        f"forgot {report.user_id}: {report.raw_files_deleted} uploaded files and {report.raw_lines_removed} "
        f"raw event lines deleted; rows removed: {rows}; later runs drop this user's events and uploads"
    )
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    done = serving.export_recommendations(settings, args.ds, force=args.force)
    if done.skipped:
        print(f"serving unchanged ({done.uri}): {done.skipped}")
    else:
        print(f"serving {done.ds}: {done.rows} recommendations in {done.uri}")
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    tracking.use_tracking(settings)
    done = champions.rollback(args.model, args.to, args.reason)
    print(
        f"{champions.MODELS[done.model]}: champion is now version {done.version} (was {done.previous or 'none'}); "
        f"by {done.by} at {done.at}: {done.reason}"
    )
    return 0


def cmd_champions(args: argparse.Namespace, settings: Settings) -> int:
    tracking.use_tracking(settings)
    nights = champions.nightly_champions(_lake(None, settings))
    models = list(champions.MODELS)
    print("night       " + "  ".join(f"{m:>4}" for m in models))
    for ds, by_model in nights:
        print(f"{ds}  " + "  ".join(f"{by_model[m] or '-':>4}" for m in models))
    if not nights:
        print("(no nightly run recorded yet)")
    moved = champions.rollbacks()
    if moved:
        print("moved by hand:")
    for r in moved:
        print(f"  {r.at}  {r.model}: {r.previous or 'none'} -> {r.version} by {r.by}: {r.reason}")
    return 0


def cmd_similar(args: argparse.Namespace, settings: Settings) -> int:
    photo = Path(args.photo)
    if not photo.is_file():
        what = "is a folder, not a photo" if photo.is_dir() else "not found"
        raise VisrecError(f"photo {photo} {what}")
    lake = _lake(None, settings)
    matches, context = steps.find_similar(
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
        staged = lake.read_table("staging_images", context["ds"])
        pngs = dict(
            zip(staged.column("item_id").to_pylist(), staged.column("image_png").to_pylist(), strict=True)
        )
        Path(args.html).write_text(
            html.similar_page(photo.name, photo.read_bytes(), guesses, matches, pngs, context)
        )
        print(f"html: {Path(args.html).resolve()}")
    return 0

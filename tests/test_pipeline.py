"""The nightly DAG end to end through Airflow, publishing, the warehouse, the report, and faults."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, _free_port, make_bucket
from visrec.devdata.synth import ShopConfig, generate_shop
from visrec.mlops.validation import ValidationFailed
from visrec.pipeline import BY_NAME, NAMES, STEPS
from visrec.publish import OUTPUT_TABLES, publish
from visrec.settings import Settings
from visrec.store.catalog import CATALOG_KEY
from visrec.store.lake import RELEASE_KEY, Lake, LakeError, read_release
from visrec.store.runs import RunLog

D1, D2, D3, D4, D5, D6 = (f"2026-11-0{d}" for d in range(1, 7))
K = 20


def _warehouse(settings: Settings, sql: str):
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _copy_outputs(lake: Lake, src: str, dst: str) -> None:
    """Make ``dst`` a valid, unpublished date: the output partitions of ``src`` written again."""
    for table in OUTPUT_TABLES:
        if lake.manifest(table, src) is not None:
            lake.write_table(table, dst, lake.read_table(table, src).drop_columns(["ds"]))


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    """A tiny shop: day 1 ingested as history, then the DAG run for days 2 and 3 by Airflow (their events
    and features ingested first in one pass, as any run of more than one date does). One or two
    days of history cannot tell the recommender from popularity (measured: 200 to 800 users, the gate's
    interval always straddled zero), so every new model is promoted here (``VISREC_MF_PROMOTION=always``)
    to run the model's paths: its lists, photo blending and generated looks. The image model and the GAN
    get seconds (an epoch or two): these tests check the DAG's paths, not the models' quality (the
    image-model and GAN tests train one that has learned)."""
    from visrec.app.orchestrate import run_dates
    from visrec.ingest.day import ingest_day

    home = tmp_path_factory.mktemp("nightly")
    settings = Settings(
        home=home,
        cnn_max_minutes=0.05,
        gan_max_minutes=0.02,
        report_users=3,
        test_days=1,
        mf_trials=2,
        mf_promotion="always",
    )
    lake = Lake.from_settings(settings)
    generate_shop(
        ShopConfig(
            users=200,
            items=120,
            days=3,
            seed=5,
            corrupt_rate=0.01,
            uploader_share=0.1,
            upload_only_share=0.05,
        ),
        lake,
    )
    ingest_day(settings, D1, lake=lake)
    from visrec.ingest.user_photos import ingest_user_photos

    ingest_user_photos(settings, lake, D1)
    runs = run_dates([D2, D3], settings)
    return settings, lake, runs


def test_dag_parses_cheaply_with_the_expected_shape(tmp_path):
    # Parse in a clean interpreter: the scheduler must not pay for TensorFlow or Spark.
    script = tmp_path / "parse.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / "dags")!r})
        dag = bag.dags["visrec_nightly"]
        print(json.dumps({{
            "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
            "tasks": {{t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}},
            "pools": {{t.task_id: t.pool for t in dag.tasks}},
            "queues": {{t.task_id: t.queue for t in dag.tasks}},
            "retries": min(t.retries for t in dag.tasks if t.task_id != "wait_for_events"),
            "on_failure": sorted({{f"{{cb.__module__}}.{{cb.__qualname__}}" for t in dag.tasks
                                   for cb in (t.on_failure_callback if isinstance(t.on_failure_callback, list)
                                              else [t.on_failure_callback]) if cb}}),
            "max_active_runs": dag.max_active_runs, "catchup": dag.catchup,
            "heavy": sorted(m for m in ("tensorflow", "keras", "pyspark", "mlflow", "pyarrow", "pandas",
                                        "visrec.pipeline.steps") if m in sys.modules),
            "visrec": sorted(m for m in sys.modules if m.startswith("visrec")),
            "outlets": {{t.task_id: sorted(a.name for a in t.outlets) for t in dag.tasks if t.outlets}},
            "consumer": sorted(a.name for a in bag.dags["visrec_serving_export"].timetable.asset_condition.objects),
        }}))
    """)
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert info["heavy"] == []
    # The DAG file imports visrec.pipeline only; the package's light top brings settings along.
    assert "visrec.pipeline" in info["visrec"] and "visrec.store.lake" not in info["visrec"]
    # The parsed DAG is the declared step graph: every edge, queue and pool.
    # (and first, the sensor that waits for the day's raw events, before every root step)
    wait = ["wait_for_events"]
    assert info["tasks"] == {"wait_for_events": [], **{s.name: list(s.upstream) or wait for s in STEPS}}
    assert info["queues"] == {"wait_for_events": "default", **{step.name: step.queue for step in STEPS}}
    assert info["pools"] == {
        "wait_for_events": "default_pool",
        **{s.name: s.pool or "default_pool" for s in STEPS},
    }
    # And the declaration says what the DAG's operators need: a few edges a reader can check.
    assert BY_NAME["build_features"].upstream == ("ingest_events",)
    assert BY_NAME["score"].upstream == (
        "generate_looks",
        "recognise_user_photos",
        "train_mf",
        "train_ranker",
    )
    assert set(BY_NAME["report"].upstream) == set(NAMES) - {"report"}
    assert {s.name for s in STEPS if s.queue == "training"} == {
        "train_cnn",
        "train_mf",
        "train_ranker",
        "train_gan",
    }
    assert info["retries"] >= 1 and info["max_active_runs"] == 1 and info["catchup"] is False
    assert info["on_failure"] == ["visrec.pipeline.alerts.task_failed"]
    # publish emits an Asset per published table; the serving export is scheduled on recommendations'.
    assert info["outlets"] == {"publish": sorted(f"visrec.{t}" for t in OUTPUT_TABLES)}
    assert info["consumer"] == ["visrec.recommendations"]


def test_dag_runs_end_to_end_and_publishes(nightly):
    settings, lake, runs = nightly
    assert [r.ds for r in runs] == [D2, D3]
    assert set(runs[-1].task_seconds) >= {
        "ingest_events",
        "train_cnn",
        "train_mf",
        "score",
        "publish",
        "report",
    }
    assert read_release(lake)["ds"] == D3
    # Two dates: their events and features were ingested first in one pass, and each DAG run's
    # ingest_events and build_features tasks reused that (the DAG's `ingested` parameter).
    for ds in (D2, D3):
        for step in ("ingest_events", "build_features"):
            assert json.loads(lake.get_bytes(f"runs/ds={ds}/{step}.json"))["backfill"] == f"{D2}..{D3}"
        assert lake.manifest("interactions", ds) is not None
    # Tasks use what their upstream tasks returned (through XCom): the catalog is embedded with the
    # image model train_cnn left as champion, and scoring uses the recommender train_mf left as champion.
    records = {
        step: json.loads(lake.get_bytes(f"runs/ds={D3}/{step}.json"))
        for step in ("train_cnn", "embed_items", "train_mf", "score")
    }
    assert records["embed_items"]["model_version"] == records["train_cnn"]["champion"]
    assert records["train_mf"]["champion"] in records["score"]["model_versions"]
    assert records["train_mf"]["serving"] == records["score"]["serving"] == "model"
    assert (
        "VISREC_MF_PROMOTION=always" in records["train_mf"]["reason"]
        and "vs popularity" in records["train_mf"]["reason"]
    )
    assert records["score"]["k"] == K
    dates = _warehouse(
        settings, "SELECT ds, count(DISTINCT user_id), count(*) FROM recommendations GROUP BY ds ORDER BY ds"
    )
    assert [d for d, _, _ in dates] == [D2, D3]
    assert all(rows == users * K for _, users, rows in dates)  # K per user, every date
    assert _warehouse(settings, "SELECT DISTINCT ds FROM recommendations_latest") == [(D3,)]
    for table in (
        "similar_items",
        "item_embeddings",
        "user_profiles",
        "user_photos",
        "photo_recommendations",
        "generated_looks",
    ):
        assert _warehouse(settings, f"SELECT count(*) FROM {table} WHERE ds = '{D3}'")[0][0] > 0
    # Users whose only signal is their uploads get personal recommendations from their photos.
    only = {
        json.loads(x)["user_id"]
        for x in lake.get_bytes("truth/upload_only_users.jsonl").decode().splitlines()
    }
    by_source = _warehouse(
        settings, f"SELECT DISTINCT user_id, source FROM recommendations WHERE ds = '{D3}'"
    )
    photo_users = {u for u, source in by_source if source == "photo"}
    with_photos = {
        u for (u,) in _warehouse(settings, f"SELECT DISTINCT user_id FROM user_photos WHERE ds = '{D3}'")
    }
    assert only & with_photos and only & with_photos <= photo_users <= with_photos
    # Users with generated looks get real items nearest their looks in their lists.
    generated = _warehouse(
        settings, f"SELECT DISTINCT user_id FROM recommendations WHERE ds = '{D3}' AND source = 'generated'"
    )
    assert generated
    strays = f"""SELECT count(*) FROM recommendations r WHERE r.ds = '{D3}' AND r.source = 'generated'
                 AND NOT EXISTS (SELECT 1 FROM generated_looks g WHERE g.ds = '{D3}' AND g.user_id = r.user_id
                                 AND list_contains(g.nearest_item_ids, r.item_id))"""
    assert _warehouse(settings, strays) == [(0,)]
    report = lake.get_bytes(f"reports/ds={D3}/index.html").decode()
    assert report.count("<img") >= 10 and "previous run (2026-11-02)" in report
    assert "recommender, new VBPR: Recall@20" in report and "train_mf.vbpr" not in report  # people's labels
    assert all(isinstance(records[step].get("seconds"), float) for step in records)  # the report's task times


def test_rerunning_a_date_gives_identical_tables(nightly):
    from visrec.app.orchestrate import run_dates

    settings, lake, _ = nightly
    query = f"SELECT user_id, rank, item_id, score, source, model_version FROM recommendations WHERE ds = '{D3}' ORDER BY 1, 2"
    before = _warehouse(settings, query)
    similar_before = _warehouse(
        settings, f"SELECT * EXCLUDE (ds) FROM similar_items WHERE ds = '{D3}' ORDER BY 1, 2"
    )
    run_dates([D3], settings)
    assert _warehouse(settings, query) == before
    assert (
        _warehouse(settings, f"SELECT * EXCLUDE (ds) FROM similar_items WHERE ds = '{D3}' ORDER BY 1, 2")
        == similar_before
    )
    summary = json.loads(lake.get_bytes(f"runs/ds={D3}/publish.json"))
    assert summary["rows"]["recommendations"] == len(before)


def test_report_images_and_charts_render_in_a_real_browser(nightly, tmp_path):
    """The night's page and the index open in headless Chromium: every image decodes, every chart is
    an SVG with data marks, and a screenshot is taken."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium when it can)")
    import re

    _, lake, _ = nightly
    site = tmp_path / "reports"
    for key in lake.list_keys("reports"):
        (site / key.removeprefix("reports/")).parent.mkdir(parents=True, exist_ok=True)
        (site / key.removeprefix("reports/")).write_bytes(lake.get_bytes(key))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    page = (site / f"ds={D3}" / "index.html").as_uri()
    out = subprocess.run(
        [chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = re.search(r"<body ([^>]*)>", out.stdout)
    assert body, f"the report's self-check did not run: {out.stderr[-500:]}"
    marks = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body.group(1)))
    assert int(marks["images-total"]) >= 10 and marks["images-loaded"] == marks["images-total"]
    assert int(marks["charts-total"]) >= 5 and marks["charts-drawn"] == marks["charts-total"]
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1280,2000", f"--screenshot={shot}", page],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 20_000  # a page with pictures and charts, not a blank one
    index = (site / "index.html").read_text()
    assert f'href="ds={D3}/index.html"' in index and f'href="ds={D2}/index.html"' in index


def test_publish_refuses_bad_outputs_and_changes_nothing(nightly):
    settings, lake, _ = nightly
    release = lake.get_bytes(RELEASE_KEY)
    views = _warehouse(settings, "SELECT count(*) FROM recommendations")
    _copy_outputs(lake, D3, D5)
    recs = lake.read_table("recommendations", D5).drop_columns(["ds"]).to_pandas()
    bought = lake.read_table("events", D2).to_pandas().query("event_type == 'purchase'").iloc[0]
    recs.loc[recs["user_id"] == recs["user_id"].iloc[0], "rank"] = 1  # duplicate ranks
    recs.loc[1, ["user_id", "item_id"]] = [bought["user_id"], bought["item_id"]]  # already bought
    recs.loc[2, "item_id"] = "not-in-catalog"
    import pyarrow as pa

    lake.write_table("recommendations", D5, pa.Table.from_pandas(recs, preserve_index=False))
    with pytest.raises(ValidationFailed) as err:
        publish(settings, D5, lake=lake, k=K)
    message = str(err.value)
    assert "ranks are not 1..n" in message and "already bought" in message and "not in the catalog" in message
    assert lake.get_bytes(RELEASE_KEY) == release
    assert _warehouse(settings, "SELECT count(*) FROM recommendations") == views


def test_publish_on_s3_and_a_store_outage_publishes_nothing_half(nightly, tmp_path, monkeypatch):
    """The nightly lake copied to S3 (a moto server on 127.0.0.1): a date publishes there and the
    warehouse reads it; the store going away mid-publish leaves the release and the warehouse as they
    were, and the retry publishes. (The whole DAG with its lake on S3 runs in ``make cluster-test``.)"""
    from moto.server import ThreadedMotoServer

    from visrec.pipeline.steps import publish as publish_step

    settings, lake, _ = nightly
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        on_s3 = Settings(
            home=tmp_path / "home", lake_uri=f"s3://{make_bucket(endpoint)}/lake", s3_endpoint=endpoint
        )
        remote = Lake.from_settings(on_s3)
        for top in sorted(p.name for p in Path(lake.root).iterdir()):  # the nightly lake is a folder
            if top not in ("raw", "private", "reports"):  # photos and pages: not what publish reads
                for key in lake.list_keys(top):
                    remote.put_bytes(key, lake.get_bytes(key))
        remote.put_bytes(CATALOG_KEY, lake.get_bytes(CATALOG_KEY))
        publish(on_s3, D3, lake=remote, k=K)
        rows = _warehouse(on_s3, "SELECT count(*) FROM recommendations")[0][0]
        assert rows > 0 and _warehouse(on_s3, "SELECT DISTINCT ds FROM recommendations_latest") == [
            (read_release(remote)["ds"],)
        ]

        _copy_outputs(remote, D3, D6)
        release = remote.get_bytes(RELEASE_KEY)
        server.stop()  # the store goes away mid-run
        with pytest.raises(LakeError):
            publish_step(D6, on_s3)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()  # moto keeps its buckets in this process: the store comes back as it was
        assert remote.get_bytes(RELEASE_KEY) == release
        assert _warehouse(on_s3, "SELECT count(*) FROM recommendations")[0][0] == rows
        publish_step(D6, on_s3)  # what Airflow's retry does
        assert read_release(remote)["ds"] == D6
        assert _warehouse(on_s3, "SELECT max(ds) FROM recommendations") == [(D6,)]
    finally:
        server.stop()


def _whole_release_and_warehouse(settings: Settings, lake: Lake) -> str:
    release = read_release(lake)  # parseable: never half-written
    for parts in release["tables"].values():
        for keys in parts.values():
            assert all(lake.exists(k) for k in keys)
    # The warehouse shows one whole release: every date it lists has K rows per user.
    for _, users, rows in _warehouse(
        settings, "SELECT ds, count(DISTINCT user_id), count(*) FROM recommendations GROUP BY ds"
    ):
        assert rows == users * K
    return release["ds"]


@pytest.mark.parametrize("point, ds", [("before_switch", D4), ("before_warehouse", D5)])
def test_sigkill_mid_publish_leaves_a_complete_release(nightly, tmp_path, point, ds):
    """A publish killed at each of its two critical points (publish.HOOKS pauses it there, so the kill
    lands exactly there) leaves a whole release and a whole warehouse; publishing again finishes."""
    settings, lake, _ = nightly
    _copy_outputs(lake, D3, ds)
    before = _whole_release_and_warehouse(settings, lake)
    marker = tmp_path / f"at-{point}"
    script = tmp_path / "publish.py"
    script.write_text(
        textwrap.dedent(f"""
        import pathlib, time
        from visrec import publish
        from visrec.settings import Settings
        def pause():
            pathlib.Path({str(marker)!r}).write_text("here")
            time.sleep(120)
        publish.HOOKS[{point!r}] = pause
        publish.publish(Settings.from_env(), {ds!r}, k={K})
    """)
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env={**os.environ, **settings.to_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, f"publish ended before {point}: {proc.stderr.read().decode()[-1000:]}"
        assert time.monotonic() < deadline, f"publish never reached {point}"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Killed before the switch: the old release; after it: the new one, the warehouse still whole.
    assert _whole_release_and_warehouse(settings, lake) == (before if point == "before_switch" else ds)
    publish(settings, ds, lake=lake, k=K)
    assert _whole_release_and_warehouse(settings, lake) == ds
    assert _warehouse(settings, "SELECT max(ds) FROM recommendations") == [(ds,)]


def test_score_with_k_then_publish_from_the_command_line(nightly):
    """`visrec score -k 10` then `visrec publish`: publish checks lists against the K score used (the
    date is published already, so both need --force)."""
    settings, lake, _ = nightly
    env = {**os.environ, **settings.to_env()}
    for args in (["score", "--ds", D3, "-k", "10", "--force"], ["publish", "--ds", D3, "--force"]):
        result = subprocess.run(
            [sys.executable, "-m", "visrec", *args], env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-2000:]
    counts = _warehouse(
        settings, f"SELECT count(DISTINCT user_id), count(*) FROM recommendations WHERE ds = '{D3}'"
    )
    assert counts[0][1] == 10 * counts[0][0] > 0


def test_a_published_date_is_changed_only_with_force_and_old_features_only_on_request(nightly):
    from visrec.pipeline.steps import AlreadyPublished, InputMissing, score

    settings, lake, _ = nightly
    version = lake.manifest("recommendations", D3).version
    with pytest.raises(AlreadyPublished, match=f"{D3} is already published.*--force"):
        score(D3, settings)
    assert lake.manifest("recommendations", D3).version == version  # refused before any work
    with pytest.raises(InputMissing, match="no events for 2030-01-01; run `visrec step ingest_events"):
        score("2030-01-01", settings)
    summary = score("2030-01-01", settings, latest_features=True)
    assert summary["features_ds"] == D3 and summary["rows"] > 0  # D4, D5 hold copied outputs, no events
    assert "2030-01-01" not in {d for parts in read_release(lake)["tables"].values() for d in parts}


def test_forget_removes_a_user_everywhere_and_for_good(nightly):
    from visrec.forget import all_specs, forget_user
    from visrec.pipeline.steps import ingest_events, ingest_user_photos
    from visrec.store.forgotten import file_mentions

    settings, lake, _ = nightly
    photos = [json.loads(x) for x in lake.get_bytes("truth/user_photos.jsonl").decode().splitlines()]
    events = lake.read_table("events").to_pandas()
    user = next(p["user_id"] for p in photos if p["user_id"] in set(events["user_id"]))  # events and photos

    def leftovers() -> list[str]:
        found = [
            key
            for spec in all_specs()
            for key in lake.list_keys(spec.path)
            if key.endswith(".parquet") and file_mentions(lake, key, user)
        ]
        found += [k for k in lake.list_keys("raw/events") if f'"{user}"'.encode() in lake.get_bytes(k)]
        found += [
            k for k in lake.list_keys("raw/user_images") + lake.list_keys("private") if f"/{user}/" in k
        ]
        for table in ("recommendations", "user_photos", "photo_recommendations", "user_profiles"):
            if _warehouse(settings, f"SELECT count(*) FROM {table} WHERE user_id = '{user}'")[0][0]:
                found.append(f"warehouse:{table}")
        return found

    assert leftovers()  # the user is really there before
    report = forget_user(settings, user, lake=lake)
    assert report.raw_lines_removed > 0 and report.raw_files_deleted > 0
    assert {"events", "interactions", "recommendations"} <= set(report.rows_removed)
    assert leftovers() == []
    # Later runs do not bring the user back, even when a day's log mentions them again.
    lake.put_bytes(
        f"raw/events/dt={D2}/late.jsonl",
        (
            json.dumps(
                {
                    "user_id": user,
                    "item_id": events["item_id"].iloc[0],
                    "event_type": "view",
                    "ts": f"{D2}T12:00:00Z",
                    "event_id": "late-1",
                }
            )
            + "\n"
        ).encode(),
    )
    assert ingest_events(D2, settings)["valid"] > 0
    ingest_user_photos(D2, settings)
    assert leftovers() == [f"raw/events/dt={D2}/late.jsonl"]  # only the new upstream file itself


def test_rollback_then_score_serves_the_earlier_version_and_champions_show_it(nightly):
    """`visrec champions` lists each night's champions from the run records; `visrec rollback mf --to 1`
    moves the alias with who/why; the next `visrec score` serves version 1; an unknown version is
    refused in one line."""
    settings, lake, _ = nightly
    env = {**os.environ, **settings.to_env()}

    def visrec(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "visrec", *args], env=env, capture_output=True, text=True, timeout=600
        )

    history = visrec("champions")
    assert history.returncode == 0, history.stderr[-2000:]
    nights = {line.split()[0]: line.split()[1:] for line in history.stdout.splitlines() if line[:2] == "20"}
    assert nights[D2][1] == "1" and nights[D3][1] == "2", history.stdout  # mf: promoted each night here
    refused = visrec("rollback", "mf", "--to", "9", "--reason", "x")
    assert refused.returncode == 1 and "visrec-mf has no version 9 (registered: 1, 2" in refused.stderr
    moved = visrec("rollback", "mf", "--to", "1", "--reason", "v2 lists looked wrong")
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert "champion is now version 1 (was 2)" in moved.stdout
    try:
        scored = visrec("score", "--ds", "2030-01-02", "--latest-features")
        assert scored.returncode == 0, scored.stderr[-2000:]
        served = RunLog(lake).get("2030-01-02", "score")["model_versions"]
        assert "visrec-mf/1" in served and "visrec-mf/2" not in served, (
            served
        )  # (and popularity for cold users)
        history = visrec("champions").stdout
        assert re.search(r"mf: 2 -> 1 by \S+: v2 lists looked wrong", history), history
        assert visrec("report", "--ds", D3).returncode == 0  # the report's index lists the move
        index = lake.get_bytes("reports/index.html").decode()
        assert "Champions moved by hand" in index and "v2 lists looked wrong" in index
    finally:
        assert visrec("rollback", "mf", "--to", "2", "--reason", "test done").returncode == 0


def test_the_serving_export_dag_serves_the_published_release(nightly):
    """The consumer DAG through `airflow dags test` (its Airflow metadata is the nightly run's): the
    newest published release lands in the SQLite serving store, row for row."""
    import sqlite3

    from visrec.app.orchestrate import airflow_env

    settings, lake, _ = nightly
    result = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "dags", "test", "visrec_serving_export"],
        env=airflow_env(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    con = sqlite3.connect(settings.serving_uri.removeprefix("sqlite:///"))
    served = con.execute("SELECT ds, count(*) FROM recommendations GROUP BY ds").fetchall()
    newest = max(read_release(lake)["tables"]["recommendations"])  # (tests before may publish more dates)
    published = _warehouse(settings, f"SELECT count(*) FROM recommendations WHERE ds = '{newest}'")[0][0]
    assert served == [(newest, published)] and published > 0


def test_a_day_whose_events_never_arrive_fails_at_the_sensor(nightly):
    """`visrec run` for a date without raw events: the first task waits (deferred: `airflow dags test`
    runs its trigger), then fails with one line naming the missing folder; no other task runs and
    nothing is published."""
    settings, lake, _ = nightly
    day = "2026-11-09"
    env = {**os.environ, **settings.to_env(), "VISREC_EVENTS_WAIT_MINUTES": "0.05"}
    result = subprocess.run(
        [sys.executable, "-m", "visrec", "run", "--ds", day],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    assert (
        f"no raw events for {day} after 0.05 minutes: nothing under {lake.url(f'raw/events/dt={day}')}"
        in (result.stdout + result.stderr)
    ), (result.stdout + result.stderr)[-3000:]
    assert RunLog(lake).night(day) == {}  # no step ran
    assert day not in {d for parts in read_release(lake)["tables"].values() for d in parts}

"""The backfill bench: `python bench/run.py backfill`. See :func:`run`."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchkit import Figures, figure, nightly_step, raw_event_days


def run() -> Figures:
    """A new user's history: a synthetic shop of 213 days (about 100,000 events, 1,666 items with
    images, no uploads) ingested in one pass, as `visrec ingest --start --end` does; then the nightly
    ingestion step (events + incremental features) of days 200, 50 and 10 with all earlier days in
    place, and a full rebuild of day 200's features for contrast. Latest day first: re-ingesting a day
    makes every later snapshot stale (a late day), which would turn a later day's step into a rebuild.
    Then the step of a 10th and a 40th day with day 200's state (snapshot size and the night's
    events), to tell the days behind a step from the state it carries."""

    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.ingest.features import build_features
    from visrec.pipeline import steps as pipeline_steps
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
        days = raw_event_days(lake)
        shape = f"{len(days)} days, {shop.events} events, {config.items} items with images"
        started = time.perf_counter()
        summary = pipeline_steps.ingest_range(days, settings)
        seconds = time.perf_counter() - started
        out["backfill.days"] = figure(len(days), "days", shape)
        out["backfill.events"] = figure(summary["events"]["valid"], "events", shape)
        out["backfill.seconds"] = figure(
            round(seconds, 1), "s", f"{shape}: `visrec ingest --start --end` in one pass (goal <= 60)"
        )
        steps = {}
        for n in (200, 50, 10):
            steps[n] = nightly_step(settings, lake, days[n - 1])
            seconds, events, pairs = steps[n]
            out[f"backfill.nightly_day{n}_seconds"] = figure(
                seconds,
                "s",
                f"the nightly step of day {n} ({n - 1} days before it), median of 5: {events} events "
                f"ingested, features from the day before: {pairs} (user, item) pairs in the snapshot",
            )
        started = time.perf_counter()
        build_features(settings, lake, days[199], rebuild=True)
        out["backfill.rebuild_day200_seconds"] = figure(
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
            days = raw_event_days(lake)
            pipeline_steps.ingest_range(days[:-1], settings)
            keys = lake.list_keys(f"raw/events/dt={days[-1]}")
            lines = [line for key in keys for line in lake.get_bytes(key).decode().splitlines()]
            for key in keys:
                lake.delete(key)
            lake.put_bytes(
                f"raw/events/dt={days[-1]}/events.jsonl", ("\n".join(lines[:events]) + "\n").encode()
            )
            seconds, busy_events, busy_pairs = nightly_step(settings, lake, days[-1])
            out[f"backfill.nightly_day{n}_same_state_seconds"] = figure(
                seconds,
                "s",
                f"the nightly step of day {n} of a shop of {users} users ({n - 1} days before it), median "
                f"of 5: {busy_events} events ingested (the night's log cut to day 200's), {busy_pairs} pairs "
                f"in the snapshot (day 200 of the 213-day shop: {pairs}); against "
                "backfill.nightly_day200_seconds",
            )
    return out

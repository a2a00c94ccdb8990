"""The run's HTML report: what a person looks at after a nightly run.

For a few sample users (the most active of each segment, plus users who uploaded photos or got
generated looks) it shows, as images, what they did recently and their photos beside what visrec
recommends and generates for them; then every model's metrics beside the previous run's. The page is
self-contained (images inline), so the copy in the lake and the one in MLflow both open anywhere. A
small script marks on ``<body>`` how many images the browser decoded, which the browser test reads.
"""

from __future__ import annotations

import logging
from typing import Any

from visrec.report.html import render
from visrec.settings import Settings
from visrec.store.lake import Lake, check_ds, read_release
from visrec.store.runs import run_dates, run_summaries

log = logging.getLogger(__name__)

_RECENT_ITEMS = 8
_SHOWN_RECS = 10


def _previous_run(lake: Lake, ds: str) -> str | None:
    earlier = [d for d in run_dates(lake) if d < ds]
    return earlier[-1] if earlier else None


def _flat_metrics(summaries: dict[str, dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for step, summary in summaries.items():
        metrics = summary.get("metrics") or {}
        for name, value in metrics.items():
            if isinstance(value, dict):  # train_mf: {model: {metric: value}}
                out.update({f"{step}.{name}.{k}": v for k, v in value.items() if isinstance(v, int | float)})
            elif isinstance(value, int | float):
                out[f"{step}.{name}"] = value
    return out


def _metric_rows(current: dict[str, float], previous: dict[str, float]) -> list[dict]:
    rows = []
    for name in sorted(current):
        before = previous.get(name)
        rows.append(
            {
                "name": name,
                "value": current[name],
                "previous": before,
                "change": None if before is None else current[name] - before,
            }
        )
    return rows


def _sample_users(profiles, recs, wanted: int, extra: list[str]) -> list[str]:
    scored = set(recs["user_id"])
    profiles = profiles[profiles["user_id"].isin(scored)].copy()
    profiles["activity"] = profiles[["n_view", "n_click", "n_add_to_cart", "n_purchase"]].sum(axis=1)
    chosen: list[str] = [u for u in extra if u in scored][: max(wanted // 2, 1)]
    by_segment = [
        g.sort_values(["activity", "user_id"], ascending=[False, True])["user_id"].tolist()
        for _, g in profiles.groupby("segment")
    ]
    while len(chosen) < wanted and any(by_segment):
        for users in by_segment:
            while users and users[0] in chosen:
                users.pop(0)
            if users and len(chosen) < wanted:
                chosen.append(users.pop(0))
    no_history = sorted(set(recs.loc[recs["source"] == "popular", "user_id"]) - set(chosen))
    if no_history and len(chosen) >= wanted:
        chosen[-1] = no_history[0]  # always show what a user without history gets
    elif no_history:
        chosen.append(no_history[0])
    return chosen


def _optional(lake: Lake, table: str, ds: str):
    return lake.read_table(table, ds).to_pandas() if lake.manifest(table, ds) is not None else None


def _optional(lake: Lake, table: str, ds: str):
    return lake.read_table(table, ds).to_pandas() if lake.manifest(table, ds) is not None else None


def build_report(settings: Settings, ds: str, *, lake: Lake | None = None, log_to_mlflow: bool = True) -> str:
    """Write ``reports/ds=<ds>/index.html`` (and log it to MLflow); return its URI."""

    lake = lake or Lake.from_settings(settings)
    check_ds(ds)
    recs = lake.read_table("recommendations", ds).to_pandas()
    profiles = lake.read_table("user_profiles", ds).to_pandas()
    looks = _optional(lake, "generated_looks", ds)
    photos = _optional(lake, "user_photos", ds)
    extra = sorted(set(photos["user_id"])) if photos is not None else []
    if looks is not None:
        extra += sorted(set(looks["user_id"]) - set(extra))
    users = _sample_users(profiles, recs, settings.report_users, extra)

    history = [d for d in lake.partitions("events") if d <= ds][-7:]
    events = lake.read_table("events", history).select(["user_id", "item_id", "event_type", "ts"]).to_pandas()
    events = events[events["user_id"].isin(users)].sort_values("ts", ascending=False)
    staged = lake.read_table("staging_images", ds).select(["item_id", "image_png"]).to_pandas()
    pngs = dict(zip(staged["item_id"], staged["image_png"], strict=True))
    segment = dict(zip(profiles["user_id"], profiles["segment"], strict=True))

    sections = []
    for user in users:
        mine = events[events["user_id"] == user].drop_duplicates("item_id").head(_RECENT_ITEMS)
        top = recs[recs["user_id"] == user].sort_values("rank").head(_SHOWN_RECS)
        sections.append(
            {
                "user": user,
                "segment": segment.get(user, "no profile"),
                "recent": [
                    {"item_id": r.item_id, "caption": f"{r.event_type} {r.item_id}"}
                    for r in mine.itertuples()
                ],
                "photos": _photos(lake, photos[photos["user_id"] == user]) if photos is not None else None,
                "recommended": [
                    {"item_id": r.item_id, "caption": f"#{r.rank} {r.item_id} {r.score:.2f} ({r.source})"}
                    for r in top.itertuples()
                ],
                "looks": _looks(lake, looks[looks["user_id"] == user]) if looks is not None else None,
            }
        )

    summaries = run_summaries(lake, ds)
    previous_ds = _previous_run(lake, ds)
    previous = run_summaries(lake, previous_ds) if previous_ds else {}
    text = render(
        "nightly.html.j2",
        title=f"visrec nightly run {ds}",
        release=read_release(lake),
        lake_uri=lake.uri,
        sections=sections,
        pngs=pngs,
        models=[(step, s) for step, s in sorted(summaries.items()) if "version" in s],
        metrics=_metric_rows(_flat_metrics(summaries), _flat_metrics(previous)),
        previous_ds=previous_ds,
        published=sorted(summaries.get("publish", {}).get("rows", {}).items()),
    )
    key = f"reports/ds={ds}/index.html"
    lake.put_bytes(key, text.encode())
    if log_to_mlflow:
        import mlflow
        from visrec.mlops.tracking import tracked_run

        with tracked_run(settings, "report", ds=ds):
            mlflow.log_text(text, "report/index.html")
    log.info("report for %s: %d users, %s", ds, len(users), lake.url(key))
    return lake.url(key)


def _photos(lake: Lake, photos: Any) -> list[dict]:
    out = []
    for row in photos.itertuples():
        key = getattr(row, "image_key", None)
        if key and lake.exists(key):
            out.append({"png": lake.get_bytes(key), "caption": f"photo {row.photo_id}"})
    return out


def _looks(lake: Lake, looks: Any) -> list[dict]:
    out = []
    for row in looks.sort_values("rank").itertuples():
        key = row.image_uri.removeprefix(f"{lake.uri}/")
        if lake.exists(key):
            nearest = row.nearest_item_ids[0] if len(row.nearest_item_ids) else ""
            out.append({"png": lake.get_bytes(key), "category": row.category, "nearest": nearest})
    return out

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

from visrec.mlops.tracking import tracked_run
from visrec.report.charts import bar_chart, line_chart
from visrec.report.html import render
from visrec.settings import Settings
from visrec.store.lake import Lake, check_ds, published_dates, read_release
from visrec.store.runs import RunLog, Summary

log = logging.getLogger(__name__)

_RECENT_ITEMS = 8
_SHOWN_RECS = 10


def _previous_run(runs: RunLog, ds: str) -> str | None:
    earlier = [d for d in runs.dates() if d < ds]
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


GAN_STEP = "train_gan"

LABELS = {
    "recall_at_20": "Recall@20",
    "ndcg_at_20": "NDCG@20",
    "map_at_20": "MAP@20",
    "hits_at_20": "hits@20",
    "cold_recall_at_20": "cold-item recall@20",
    "coverage": "catalog coverage",
    "novelty": "novelty",
    "intra_list_diversity": "visual diversity",
    "fit_seconds": "fit seconds",
    "test_users": "test users",
    "held_out_accuracy": "held-out accuracy",
    "held_out_top5_accuracy": "held-out top-5 accuracy",
    "majority_class_accuracy": "majority-class accuracy",
    "train_seconds": "training seconds",
    "epochs_run": "epochs",
    "class_consistency": "class consistency",
    "frechet_ratio": "Frechet ratio",
    "frechet_distance": "Frechet distance",
    "frechet_real_vs_real": "Frechet floor (real vs real)",
    "cnn_accuracy_on_real": "judge's accuracy on real images",
    "train_cnn": "image model",
    "train_mf": "recommender",
    "train_ranker": "ranker",
    "train_gan": "image generator",
    "vbpr": "new VBPR",
    "vbpr_published": "new VBPR after the category cap",
    "ease": "new EASE",
    "ease_published": "new EASE after the category cap",
    "champion": "champion",
    "popularity": "popularity",
}
TREND_NIGHTS = 30


def label(key: str) -> str:
    """A person's name for a metric or step key (``train_mf.vbpr.recall_at_20`` -> ``recommender, new
    VBPR: Recall@20``)."""
    parts = [LABELS.get(p, p.replace("_", " ")) for p in key.split(".")]
    return ", ".join(parts[:-1]) + (": " if len(parts) > 1 else "") + parts[-1]


def _get(summary: dict, *path: str) -> float | None:
    for key in path:
        summary = summary.get(key) if isinstance(summary, dict) else None
    return float(summary) if isinstance(summary, int | float) else None


def _nights(runs: RunLog, ds: str, night: dict[str, Summary]) -> list[tuple[str, dict]]:
    """(date, step records) of the last ``TREND_NIGHTS`` nights up to ``ds`` (``ds``'s: ``night``)."""
    before = [d for d in runs.dates() if d < ds][-(TREND_NIGHTS - 1) :]
    return [(d, runs.night(d)) for d in before] + [(ds, night)]


def _headlines(now: dict, before: dict) -> list[dict]:
    rows = [
        ("users scored", ("score", "users"), "{:.0f}"),
        ("rows published", ("publish", "rows", "recommendations"), "{:.0f}"),
        ("recommender Recall@20 (new VBPR)", ("train_mf", "metrics", "vbpr", "recall_at_20"), "{:.3f}"),
        ("popularity Recall@20", ("train_mf", "metrics", "popularity", "recall_at_20"), "{:.3f}"),
        ("image model held-out accuracy", ("train_cnn", "metrics", "held_out_accuracy"), "{:.3f}"),
        ("events quarantined", ("ingest_events", "quarantined"), "{:.0f}"),
        ("images quarantined", ("ingest_images", "quarantined"), "{:.0f}"),
    ]
    out = []
    for name, path, fmt in rows:
        value, previous = _get(now, *path), _get(before, *path)
        if value is None:
            continue
        change = None if previous is None else value - previous
        out.append(
            {
                "label": name,
                "value": fmt.format(value),
                "change": None if change is None else ("+" if change >= 0 else "") + fmt.format(change),
            }
        )
    return out


def _trend_charts(nights: list[tuple[str, dict]]) -> list[dict]:

    dates = [d for d, _ in nights]

    def series(*path: str) -> list[float | None]:
        return [_get(s, *path) for _, s in nights]

    def promoted(step: str) -> list[str]:
        return [d for d, s in nights if s.get(step, {}).get("promoted") and not s[step].get("reused")]

    charts = [
        (
            "Recommender Recall@20 on each night's test window (dashed: a new champion)",
            line_chart(
                "Recall@20",
                dates,
                {
                    LABELS[m]: series("train_mf", "metrics", m, "recall_at_20")
                    for m in ("popularity", "vbpr", "champion")
                },
                marks=promoted("train_mf"),
            ),
        ),
        (
            "Image model held-out accuracy (dashed: a new champion)",
            line_chart(
                "held-out accuracy",
                dates,
                {"image model": series("train_cnn", "metrics", "held_out_accuracy")},
                marks=promoted("train_cnn"),
            ),
        ),
        (
            "Image generator: class consistency and its judge's accuracy on real images, on nights it trained",
            line_chart(
                "GAN class consistency",
                dates,
                {
                    "class consistency": series("train_gan", "metrics", "class_consistency"),
                    "judge on real images": series("train_gan", "metrics", "cnn_accuracy_on_real"),
                },
            ),
        ),
        (
            "Image generator: Frechet ratio (1 is the real-vs-real floor; lower is better)",
            line_chart(
                "Frechet ratio", dates, {"Frechet ratio": series("train_gan", "metrics", "frechet_ratio")}
            ),
        ),
    ]
    reasons = sorted(
        {
            f"{src}: {r}"
            for _, s in nights
            for src in ("ingest_events", "ingest_images")
            for r in (s.get(src, {}).get("reasons") or {})
        }
    )
    if reasons:
        stacks = {
            r: [
                float((s.get(r.split(": ")[0], {}).get("reasons") or {}).get(r.split(": ")[1], 0))
                for _, s in nights
            ]
            for r in reasons
        }
        stacks = {
            k.replace("ingest_events", "events").replace("ingest_images", "images"): v
            for k, v in stacks.items()
        }
        charts.append(
            (
                "Quarantined rows by reason, per night",
                bar_chart("quarantined", [d[5:] for d in dates], stacks),
            )
        )
    totals = [sum(v.get("seconds", 0) for v in s.values() if isinstance(v, dict)) for _, s in nights]
    if any(totals):  # runs recorded before steps were timed have no seconds
        charts.append(
            (
                "Run time per night (sum of the steps' seconds)",
                bar_chart("seconds", [d[5:] for d in dates], {"seconds": totals}),
            )
        )
    return [{"caption": caption, "svg": svg} for caption, svg in charts]


def _task_chart(summaries: dict) -> dict | None:

    steps = [
        (step, s["seconds"]) for step, s in summaries.items() if isinstance(s.get("seconds"), int | float)
    ]
    if not steps:
        return None
    order = [s for s, _ in sorted(steps, key=lambda x: -x[1])]
    seconds = dict(steps)
    svg = bar_chart("seconds", order, {"seconds": [seconds[s] for s in order]})
    return {"caption": "This night's steps, by wall time", "svg": svg}


def _night_row(lake: Lake, ds: str, summaries: dict, published: set[str]) -> dict:
    score = summaries.get("score", {})
    total = sum((score.get("sources") or {}).values()) or 1
    champions = {
        LABELS[s]: summaries[s].get("champion") or summaries[s].get("version")
        for s in ("train_cnn", "train_mf", "train_ranker", "train_gan")
        if s in summaries
    }
    return {
        "ds": ds,
        "status": "published" if ds in published else ("failed or running" if summaries else "no run"),
        "champions": champions,
        "users": score.get("users"),
        "sources": {k: v / total for k, v in sorted((score.get("sources") or {}).items())},
        "link": f"ds={ds}/index.html",
    }


def build_index(lake: Lake, champion_moves: list[dict] | None = None) -> str:
    """Write ``reports/index.html``: every night, newest first, each linking its page, then the
    champions moved by hand (``champion_moves``: `visrec rollback`'s records); return its URI."""
    published = published_dates(lake)
    runs = RunLog(lake)
    nights = [_night_row(lake, d, runs.night(d), published) for d in reversed(runs.dates())]
    page = render("index.html.j2", title="visrec nightly runs", nights=nights, moves=champion_moves or [])
    lake.put_bytes("reports/index.html", page.encode())
    return lake.url("reports/index.html")


def build_report(
    settings: Settings,
    ds: str,
    night: dict[str, Summary] | None = None,
    *,
    lake: Lake | None = None,
    log_to_mlflow: bool = True,
    champion_moves: list[dict] | None = None,
) -> str:
    """Write ``reports/ds=<ds>/index.html`` (and log it to MLflow) for the night whose step results are
    ``night`` (step name -> summary; None: the date's run records); return its URI. Earlier nights
    come from the run records."""

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

    runs = RunLog(lake)
    summaries = night if night is not None else runs.night(ds)
    previous_ds = _previous_run(runs, ds)
    previous = runs.night(previous_ds) if previous_ds else {}
    # The latest GAN sample grid: tonight's when the GAN trained tonight, else the last training's.
    gan = summaries.get(GAN_STEP) if (summaries.get(GAN_STEP) or {}).get("samples") else None
    last_gan = (ds, gan) if gan else runs.last(GAN_STEP, ds, "samples")
    gan_grid = runs.file(last_gan[1]["samples"]) if last_gan else None
    docs = sorted(
        {k.split("/")[2] for k in lake.list_keys(f"validation/ds={ds}") if k.endswith("data_docs/index.html")}
    )
    text = render(
        "nightly.html.j2",
        title=f"visrec nightly run {ds}",
        release=read_release(lake),
        lake_uri=lake.uri,
        sections=sections,
        pngs=pngs,
        models=[(LABELS.get(step, step), s) for step, s in sorted(summaries.items()) if "version" in s],
        metrics=[
            {**m, "name": label(m["name"])}
            for m in _metric_rows(_flat_metrics(summaries), _flat_metrics(previous))
        ],
        previous_ds=previous_ds,
        published=sorted(summaries.get("publish", {}).get("rows", {}).items()),
        headlines=_headlines(summaries, previous),
        trends=_trend_charts(_nights(runs, ds, summaries)),
        tasks=_task_chart(summaries),
        gan_grid=gan_grid,
        data_docs=[(step, lake.url(f"validation/ds={ds}/{step}/data_docs/index.html")) for step in docs],
    )
    key = f"reports/ds={ds}/index.html"
    lake.put_bytes(key, text.encode())
    if log_to_mlflow:
        import mlflow

        with tracked_run(settings, "report", ds=ds):
            mlflow.log_text(text, "report/index.html")
    build_index(lake, champion_moves)
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

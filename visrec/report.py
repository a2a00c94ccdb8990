"""The run's HTML report: what a person looks at after a nightly run.

For a few sample users (the most active of each segment, plus users who uploaded photos or got
generated looks) it shows, as images, what they did recently and their photos beside what visrec
recommends and generates for them; then every model's metrics beside the previous run's. The page is
self-contained (images inline), so the copy in the lake and the one in MLflow both open anywhere. A
small script marks on ``<body>`` how many images the browser decoded, which the browser test reads.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from visrec.html import data_uri, figure, page
from visrec.lake import Lake, check_ds
from visrec.settings import Settings

log = logging.getLogger(__name__)

_RECENT_ITEMS = 8
_SHOWN_RECS = 10
_SELF_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.imagesTotal = images.length;
  document.body.dataset.imagesLoaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""


def _previous_run(lake: Lake, ds: str) -> str | None:
    earlier = sorted(d[3:] for d in lake.list_dirs("runs") if d.startswith("ds=") and d[3:] < ds)
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


def _metrics_table(current: dict[str, float], previous: dict[str, float], previous_ds: str | None) -> str:
    rows = []
    for name in sorted(current):
        before = previous.get(name)
        delta = "" if before is None else f"{current[name] - before:+.4f}"
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{current[name]:.4f}</td>"
                    f"<td>{'' if before is None else f'{before:.4f}'}</td><td>{delta}</td></tr>")  # fmt: skip
    head = f"<tr><th>metric</th><th>this run</th><th>previous run ({previous_ds or 'none'})</th><th>change</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _sample_users(profiles, recs, wanted: int, extra: list[str]) -> list[str]:
    scored = set(recs["user_id"])
    profiles = profiles[profiles["user_id"].isin(scored)].copy()
    profiles["activity"] = profiles[["n_view", "n_click", "n_add_to_cart", "n_purchase"]].sum(axis=1)
    chosen: list[str] = [u for u in extra if u in scored][: max(wanted // 2, 1)]
    by_segment = [g.sort_values(["activity", "user_id"], ascending=[False, True])["user_id"].tolist()
                  for _, g in profiles.groupby("segment")]  # fmt: skip
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


def build_report(settings: Settings, ds: str, *, lake: Lake | None = None, log_to_mlflow: bool = True) -> str:
    """Write ``reports/ds=<ds>/index.html`` (and log it to MLflow); return its URI."""
    from visrec.pipeline import run_summaries
    from visrec.publish import read_release

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

    def item_figure(item_id: str, caption: str) -> str:
        png = pngs.get(item_id)
        return (
            figure(data_uri(png), caption, alt=item_id) if png else f"<figure>{html.escape(caption)}</figure>"
        )

    sections = []
    segment = dict(zip(profiles["user_id"], profiles["segment"], strict=True))
    for user in users:
        mine = events[events["user_id"] == user].drop_duplicates("item_id").head(_RECENT_ITEMS)
        recent = "".join(item_figure(r.item_id, f"{r.event_type} {r.item_id}") for r in mine.itertuples())
        top = recs[recs["user_id"] == user].sort_values("rank").head(_SHOWN_RECS)
        rec_html = "".join(
            item_figure(r.item_id, f"#{r.rank} {r.item_id} {r.score:.2f} ({r.source})")
            for r in top.itertuples()
        )
        parts = [f"<h2>{html.escape(user)} <small>({html.escape(segment.get(user, 'no profile'))})</small></h2>",
                 f"<h3>recently</h3><div class='grid'>{recent or '<p>no events: a new user</p>'}</div>"]  # fmt: skip
        if photos is not None:
            parts.append(_photo_section(lake, photos[photos["user_id"] == user]))
        parts.append(f"<h3>recommended</h3><div class='grid'>{rec_html}</div>")
        if looks is not None:
            parts.append(_looks_section(lake, looks[looks["user_id"] == user], item_figure))
        sections.append("<section>" + "".join(parts) + "</section>")

    summaries = run_summaries(lake, ds)
    previous_ds = _previous_run(lake, ds)
    previous = run_summaries(lake, previous_ds) if previous_ds else {}
    release = read_release(lake)
    published = summaries.get("publish", {}).get("rows", {})
    counts = "".join(f"<tr><td>{html.escape(t)}</td><td>{n}</td></tr>" for t, n in sorted(published.items()))
    models = "".join(
        f"<li>{html.escape(step)}: {html.escape(str(s.get('version')))}: {html.escape(str(s.get('reason', '')))}</li>"
        for step, s in sorted(summaries.items())
        if "version" in s
    )
    body = (
        f"<p>release: ds={html.escape(str(release.get('ds')))}, published {html.escape(str(release.get('published_at')))}"
        f"; lake {html.escape(lake.uri)}</p>"
        + "".join(sections)
        + f"<h2>models</h2><ul>{models}</ul>"
        + _metrics_table(_flat_metrics(summaries), _flat_metrics(previous), previous_ds)
        + f"<h2>published rows</h2><table>{counts}</table>"
        + _SELF_CHECK
    )
    text = page(f"visrec nightly run {ds}", body)
    key = f"reports/ds={ds}/index.html"
    lake.put_bytes(key, text.encode())
    if log_to_mlflow:
        import mlflow
        from visrec.tracking import tracked_run

        with tracked_run(settings, "report", ds=ds):
            mlflow.log_text(text, "report/index.html")
    log.info("report for %s: %d users, %s", ds, len(users), lake.url(key))
    return lake.url(key)


def _photo_section(lake: Lake, photos: Any) -> str:
    figures = []
    for row in photos.itertuples():
        key = getattr(row, "image_key", None)
        caption = f"photo {row.photo_id}"
        if key and lake.exists(key):
            figures.append(figure(data_uri(lake.get_bytes(key)), caption))
    return f"<h3>uploaded photos</h3><div class='grid'>{''.join(figures)}</div>" if figures else ""


def _looks_section(lake: Lake, looks: Any, item_figure) -> str:
    figures = []
    for row in looks.sort_values("rank").itertuples():
        key = row.image_uri.removeprefix(f"{lake.uri}/")
        if lake.exists(key):
            nearest = row.nearest_item_ids[0] if len(row.nearest_item_ids) else ""
            figures.append(figure(data_uri(lake.get_bytes(key)), f"generated {row.category}"))
            if nearest:
                figures.append(item_figure(nearest, f"nearest: {nearest}"))
    return f"<h3>generated looks</h3><div class='grid'>{''.join(figures)}</div>" if figures else ""

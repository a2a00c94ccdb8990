"""The cnn_warm bench: `python bench/run.py cnn_warm`. See :func:`run`."""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path

from benchkit import CACHE, HM_SAMPLE, Figures, figure


def run() -> Figures:
    """Nightly warm starts of the image model against training from scratch, on hm-sample's catalog
    as it grew: night k holds the articles never bought (a photo from the start) and those first
    bought by the end of week k of the last ``VISREC_BENCH_NIGHTS`` weeks (default 7) before
    2020-09-22. Each night trains from scratch (its own track) and, on the warm track, by the nightly
    rule (:func:`visrec.vision.train.warm_start`: fine-tune the champion when the categories are the
    same and few images are new), registered behind the gate as the nightly run does; night 1 is one
    from-scratch training shared by both tracks. Both score the same night's held-out images (the
    split is by item id, stable as the catalog grows). The budget is the nightly one
    (``VISREC_CNN_MINUTES``, default 20) and the defaults otherwise; the pixels are the cnn bench's
    cache."""
    import numpy as np
    import pandas as pd

    from visrec.devdata.importer import import_hm
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import StagedImages
    from visrec.vision.train import CNNConfig, train_cnn

    cache = CACHE / "hm_pixels.npz"
    if not cache.exists() or not (HM_SAMPLE / "articles.csv").exists():
        print(
            "cnn_warm: needs hm-sample and the cnn bench's pixel cache (run cnn first); skipped",
            file=sys.stderr,
        )
        return {}
    nights = int(os.environ.get("VISREC_BENCH_NIGHTS", "7"))
    z = np.load(cache)
    pixels, item_ids = z["pixels"], z["item_ids"].tolist()
    with open(HM_SAMPLE / "articles.csv", newline="") as f:
        category = {r["article_id"]: r["product_type_name"] for r in csv.DictReader(f)}
    sold = pd.read_csv(
        HM_SAMPLE / "transactions.csv", dtype={"article_id": str}, usecols=["article_id", "t_dat"]
    )
    first_sold = sold.groupby("article_id")["t_dat"].min()
    last_day = pd.Timestamp("2020-09-22")
    arrived = np.array(
        [pd.Timestamp(first_sold[i]) if i in first_sold.index else pd.Timestamp.min for i in item_ids]
    )
    out: Figures = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm_settings = Settings(home=Path(tmp) / "warm", error_budget=0.5)
        lake = Lake.from_settings(warm_settings)
        import_hm(HM_SAMPLE, lake)  # the catalog's attribute columns, for the heads
        scratch_settings = warm_settings.with_overrides(home=Path(tmp) / "scratch")
        budget = warm_settings.cnn_max_minutes
        for night in range(1, nights + 1):
            end = last_day - pd.Timedelta(weeks=nights - night)
            keep = np.flatnonzero(arrived <= end)
            images = StagedImages(
                [item_ids[k] for k in keep], [category[item_ids[k]] for k in keep], pixels[keep]
            )
            ds = end.strftime("%Y-%m-%d")
            warm = train_cnn(warm_settings, ds, lake=lake, images=images)
            scratch = warm
            if night > 1:
                config = CNNConfig.from_settings(scratch_settings, fine_tune=False, register=False)
                scratch = train_cnn(scratch_settings, ds, lake=lake, config=config, images=images)
            row = {
                "night": night,
                "images": len(keep),
                "warm_start": warm.fine_tuned_from is not None,
                "start": warm.start,
                "promoted": bool(warm.promoted),
                "warm_accuracy": round(warm.metrics["held_out_accuracy"], 4),
                "warm_minutes": round(warm.metrics["train_seconds"] / 60, 2),
                "scratch_accuracy": round(scratch.metrics["held_out_accuracy"], 4),
                "scratch_minutes": round(scratch.metrics["train_seconds"] / 60, 2),
            }
            rows.append(row)
            print(f"  cnn_warm night {night}: {row}", file=sys.stderr, flush=True)
    note = (
        f"hm-sample catalog growing week by week ({rows[0]['images']}..{rows[-1]['images']} images), "
        f"{nights} nights, {budget:g}-minute budget; nights (images, start, warm acc/min, scratch acc/min): "
        + "; ".join(
            f"{r['night']}: {r['images']}, {'warm' if r['warm_start'] else 'scratch'}, "
            f"{r['warm_accuracy']}/{r['warm_minutes']}, {r['scratch_accuracy']}/{r['scratch_minutes']}"
            for r in rows
        )
    )
    later = rows[1:]
    if later:
        gaps = [r["warm_accuracy"] - r["scratch_accuracy"] for r in later]
        out["cnn.warm.hm.worst_accuracy_gap"] = figure(
            round(min(gaps), 4),
            "accuracy",
            "min over nights 2.. of warm minus scratch held-out top-1; " + note,
        )
        out["cnn.warm.hm.mean_accuracy_gap"] = figure(round(float(np.mean(gaps)), 4), "accuracy", note)
        out["cnn.warm.hm.minutes_share"] = figure(
            round(sum(r["warm_minutes"] for r in later) / sum(r["scratch_minutes"] for r in later), 3),
            "ratio",
            "warm track's training minutes over scratch's, nights 2..; " + note,
        )
        out["cnn.warm.hm.warm_nights"] = figure(sum(r["warm_start"] for r in later), "nights", note)
    out["cnn.warm.hm.last_warm_accuracy"] = figure(rows[-1]["warm_accuracy"], "accuracy", note)
    out["cnn.warm.hm.last_scratch_accuracy"] = figure(rows[-1]["scratch_accuracy"], "accuracy", note)
    return out

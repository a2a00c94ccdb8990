"""Recognising user photos with the champion image model: ``user_photos`` (categories, embedding) for
every retained photo, ``photo_recommendations`` (nearest catalog items) for the day's uploads.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from visrec.ingest.user_photos import retained_dates
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.schemas import empty_table, spec_for
from visrec.store.tables import decode_pngs, load_events
from visrec.vision.embed import embed_pixels
from visrec.vision.search import match_photos, photo_views

log = logging.getLogger(__name__)


def recognise_user_photos(
    settings: Settings, lake: Lake, ds: str, model, model_version: str, k: int = 10
) -> tuple[pa.Table, pa.Table]:
    """Every retained photo through the image model -> ``user_photos`` (top-3 categories, embedding);
    the photos uploaded on ``ds`` -> ``photo_recommendations`` (nearest catalog items by photo search,
    :func:`visrec.vision.search.match_photos`, bought ones filtered). Returns both tables."""

    dates = retained_dates(settings, lake, ds)
    staged = lake.read_table("staging_user_photos", dates).to_pandas() if dates else None
    if staged is None or staged.empty:
        empty_photos = empty_table(spec_for("user_photos").schema, model.embedding_dim)
        empty_recs = spec_for("photo_recommendations").schema.empty_table()
        lake.write_table("user_photos", ds, empty_photos)
        lake.write_table("photo_recommendations", ds, empty_recs)
        return empty_photos, empty_recs
    staged = staged.sort_values(["user_id", "photo_id"]).reset_index(drop=True)
    pixels = decode_pngs([lake.get_bytes(k) for k in staged["image_key"]])
    probs = np.asarray(model.predict(pixels, verbose=0))
    emb = embed_pixels(model, pixels)
    top = np.argsort(-probs, axis=1)[:, :3]
    names = list(model.class_names)
    photos = pa.table(
        {
            "user_id": staged["user_id"].tolist(),
            "photo_id": staged["photo_id"].tolist(),
            "top_categories": [
                [{"category": names[c], "probability": float(probs[n, c])} for c in top[n]]
                for n in range(len(staged))
            ],
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(emb.reshape(-1), pa.float32()), emb.shape[1]
            ),
            "model_version": [model_version] * len(staged),
            "image_key": staged["image_key"].tolist(),
        }
    )
    lake.write_table("user_photos", ds, photos)

    items = lake.read_table("item_embeddings", ds)
    item_ids = items.column("item_id").to_pylist()
    today = np.flatnonzero((staged["ds"] == ds).to_numpy())
    bought = _bought(lake, ds, staged["user_id"].iloc[today].tolist(), item_ids)
    views = np.stack([photo_views(pixels[n], model.image_size) for n in today]) if len(today) else None
    idx, scores = (
        match_photos(model, views, items, k, filter_query_items=bought)
        if views is not None
        else (np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
    )
    out: dict[str, list] = {"user_id": [], "photo_id": [], "rank": [], "item_id": [], "score": []}
    for row, n in enumerate(today):
        user, photo = staged.at[n, "user_id"], staged.at[n, "photo_id"]
        ranked = [(item_ids[j], float(s)) for j, s in zip(idx[row], scores[row], strict=True) if j >= 0]
        for rank, (item, score) in enumerate(ranked, 1):
            for name, value in zip(out, (user, photo, rank, item, score), strict=True):
                out[name].append(value)
    recs = pa.table(
        {**out, "rank": pa.array(out["rank"], pa.int16()), "score": pa.array(out["score"], pa.float32())}
    )
    lake.write_table("photo_recommendations", ds, recs)
    log.info(
        "recognised %d photos (%d new) with %s; %d photo recommendations",
        len(staged),
        len(today),
        model_version,
        recs.num_rows,
    )
    return photos, recs


def _bought(lake: Lake, ds: str, users: list[str], item_ids: list[str]) -> sp.csr_matrix:
    """(len(users), items): 1 where that row's user already bought the item (never recommended)."""
    events = load_events(lake, ds)
    bought = events[(events["event_type"] == "purchase") & events["item_id"].isin(set(item_ids))]
    item_pos = {item: k for k, item in enumerate(item_ids)}
    items_of: dict[str, list[int]] = {}
    for user, item in zip(bought["user_id"], bought["item_id"], strict=True):
        items_of.setdefault(user, []).append(item_pos[item])
    rows = [items_of.get(user, []) for user in users]
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.array([i for r in rows for i in r], np.int64)
    return sp.csr_matrix(
        (np.ones(len(indices), np.float32), indices, indptr), shape=(len(users), len(item_ids))
    )

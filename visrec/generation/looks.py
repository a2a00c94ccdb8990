"""Generated looks (the DVBPR idea, Kang et al. 2017): for the most active users of each segment, sample
candidates in their favourite categories, keep those their visual preference scores highest (the
recommender's visual factors mapped into embedding space), store the images in the lake, and retrieve
the nearest real catalog items: table ``generated_looks``.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow as pa

from visrec.generation.train import resize, to_pixels
from visrec.models.topk import topk
from visrec.recsys.train import champion_scorer
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.tables import item_embeddings
from visrec.vision.embed import embed_pixels

log = logging.getLogger(__name__)


def generate_looks(
    settings: Settings,
    lake: Lake,
    ds: str,
    gan,
    cnn,
    gan_version: str,
    *,
    scorer=None,
    users_per_segment: int = 5,
    candidates: int = 16,
    keep: int = 3,
    nearest: int = 5,
) -> pa.Table:
    """Generated looks for the most active users of each segment -> images under
    ``published/looks/ds=<ds>/`` and the ``generated_looks`` table. ``scorer``: the recommender whose
    visual factors say what each user likes (the champion when not given)."""

    profiles = lake.read_table("user_profiles", ds).to_pandas()
    profiles["activity"] = profiles[["n_view", "n_click", "n_add_to_cart", "n_purchase"]].sum(axis=1)
    chosen = (
        profiles.sort_values(["activity", "user_id"], ascending=[False, True])
        .groupby("segment", sort=True)
        .head(users_per_segment)
    )
    item_ids, item_matrix, _ = item_embeddings(lake, ds)
    scorer = scorer or champion_scorer(settings)
    preference = _visual_preferences(scorer, lake, ds, list(chosen["user_id"]), item_ids, item_matrix)
    names = list(gan.class_names)
    lake.delete(f"published/looks/ds={ds}")
    rng_seed = settings.seed
    out: dict[str, list] = {
        k: []
        for k in (
            "user_id",
            "rank",
            "image_uri",
            "category",
            "preference_score",
            "nearest_item_ids",
            "nearest_scores",
        )
    }
    for n, row in enumerate(chosen.itertuples()):
        top = [] if row.top_categories is None else list(row.top_categories)
        favourites = [c["category"] for c in top if c["category"] in names][:2]
        if not favourites:
            continue
        labels = np.repeat([names.index(c) for c in favourites], candidates)
        pixels = resize(to_pixels(gan.generate(labels, seed=rng_seed + n)), cnn.image_size)
        emb = embed_pixels(cnn, pixels)
        scores = emb @ preference[row.user_id]
        best = np.argsort(-scores)[:keep]
        idx, sims = topk(item_matrix, emb[best], nearest)
        for rank, b in enumerate(best, 1):
            key = f"published/looks/ds={ds}/{row.user_id}/{rank}.png"
            lake.put_bytes(key, _png(pixels[b]))
            for name, value in zip(
                out,
                (
                    row.user_id,
                    rank,
                    lake.url(key),
                    names[labels[b]],
                    float(scores[b]),
                    [item_ids[j] for j in idx[rank - 1]],
                    [float(s) for s in sims[rank - 1]],
                ),
                strict=True,
            ):
                out[name].append(value)
    table = pa.table(
        {
            **out,
            "rank": pa.array(out["rank"], pa.int16()),
            "preference_score": pa.array(out["preference_score"], pa.float32()),
            "nearest_scores": pa.array(out["nearest_scores"], pa.list_(pa.float32())),
        }
    )
    lake.write_table("generated_looks", ds, table)
    log.info(
        "generated looks %s with %s: %d users, %d looks",
        ds,
        gan_version,
        len(set(out["user_id"])),
        table.num_rows,
    )
    return table


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _visual_preferences(
    scorer, lake: Lake, ds: str, users: list[str], item_ids: list[str], item_matrix: np.ndarray
) -> dict[str, np.ndarray]:
    """Each user's visual preference as a direction in embedding space: the champion recommender's
    visual factors mapped back through its projection (VBPR: theta_u E + beta'), or, for a user it does
    not know, the mean embedding of the items they interacted with."""
    out: dict[str, np.ndarray] = {}
    known = {}
    if scorer is not None and getattr(scorer, "visual_preference", None) is not None:
        known = {u: k for k, u in enumerate(scorer.user_ids)}
    interactions = (
        lake.read_table("interactions", ds).select(["user_id", "item_id", "confidence"]).to_pandas()
    )
    position = {i: k for k, i in enumerate(item_ids)}
    for user in users:
        if user in known:
            out[user] = scorer.visual_preference[known[user]]
            continue
        mine = interactions[(interactions["user_id"] == user) & interactions["item_id"].isin(position)]
        mine = mine.sort_values("item_id")  # the table's row order is the engine's: sum in a fixed one
        if mine.empty:
            out[user] = item_matrix.mean(0)
        else:
            weights = mine["confidence"].to_numpy()[:, None]
            out[user] = (item_matrix[mine["item_id"].map(position).to_numpy()] * weights).sum(
                0
            ) / weights.sum()
    return out

"""The photos bench: `python bench/run.py photos`. See :func:`run`."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchkit import Figures, figure


def run() -> Figures:
    """User photos on the demo-scale synthetic shop: ingestion and recognition throughput, how often a
    shopper's photo of an item finds that item (and an item of the same category, colour and pattern)
    in the top 5 by photo search as served (also with the image model's contrastive weight at 0.2 and
    0.5) and by each embedding on the whole photo and in crops, and Recall@20 of
    upload-only users (against 10 items each would buy, drawn from their true taste) for photo-based
    ranking, popularity and an oracle that ranks by true taste."""

    import numpy as np

    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.ingest.catalog_images import ingest_images
    from visrec.ingest.user_photos import ingest_user_photos
    from visrec.models.topk import topk_best_of, topk_scores
    from visrec.recsys.score import PhotoBlend
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import (
        decode_pngs,
        embeddings_matrix,
        item_embeddings,
        load_staged_images,
        photo_profiles,
    )
    from visrec.vision.embed import catalog_embeddings, embed_items, embed_kinds
    from visrec.vision.photos import recognise_user_photos
    from visrec.vision.search import PHOTO_CROPS, match_photos, photo_embedding, photo_views
    from visrec.vision.train import CNNConfig, train_cnn

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        lake = Lake.from_settings(settings)
        config = ShopConfig(corrupt_rate=0.01)
        shop = generate_shop(config, lake)
        days = sorted(d[3:] for d in lake.list_dirs("raw/user_images"))
        last = shop.last_ds
        started = time.perf_counter()
        for ds in days:
            ingest_user_photos(settings, lake, ds)
        ingest_seconds = time.perf_counter() - started
        ingest_images(settings, lake, last)
        cnn = train_cnn(
            settings, last, lake=lake, config=CNNConfig.from_settings(settings, max_minutes=3, register=False)
        )
        embed_items(settings, last, lake, cnn.model, "bench")
        started = time.perf_counter()
        photos, _ = recognise_user_photos(settings, lake, last, cnn.model, "bench")
        recognise_seconds = time.perf_counter() - started
        note = (
            f"synthetic shop {config.users} users x {config.items} items x {config.days} days, "
            f"{shop.photos} uploads ({shop.bad_photos} corrupt); CNN held-out accuracy "
            f"{cnn.metrics['held_out_accuracy']:.3f} (3-minute budget)"
        )
        out["photos.synthetic.ingest_photos_per_s"] = figure(
            round(shop.photos / ingest_seconds, 1), "photos/s", note
        )
        out["photos.synthetic.recognise_photos_per_s"] = figure(
            round(photos.num_rows / recognise_seconds, 1),
            "photos/s",
            note + "; includes nearest items of the day's photos",
        )
        truth = {
            (t["user_id"], t["photo_id"]): t
            for t in map(json.loads, lake.get_bytes("truth/user_photos.jsonl").decode().splitlines())
        }
        items_table = lake.read_table("item_embeddings", last)
        ids = items_table.column("item_id").to_pylist()
        attrs = {}
        for line in lake.get_bytes("truth/items.csv").decode().splitlines()[1:]:
            item, cat, colour, pattern, *_ = line.split(",")
            attrs[item] = (cat, colour, pattern)
        keys = list(
            zip(photos.column("user_id").to_pylist(), photos.column("photo_id").to_pylist(), strict=True)
        )
        # Photo search as served (the photo whole and in crops, with visrec.vision.search's embedding),
        # and each embedding on the whole photo alone and in crops, from the same model on the same
        # catalog and photos, for issue 24's comparison.
        catalog_pixels = load_staged_images(lake, last)
        assert catalog_pixels.item_ids == ids
        photo_pixels = decode_pngs([lake.get_bytes(k) for k in photos.column("image_key").to_pylist()])
        views = np.stack([photo_views(p, cnn.model.image_size) for p in photo_pixels])
        size = cnn.model.image_size

        def top5(found: np.ndarray) -> tuple[float, float]:
            """Share of photos with their item, and with an item of its attributes, among ``found``."""
            exact = [truth[k]["item_id"] in {ids[j] for j in found[n]} for n, k in enumerate(keys)]
            same = [
                any(attrs[ids[j]] == attrs[truth[k]["item_id"]] for j in found[n]) for n, k in enumerate(keys)
            ]
            return round(float(np.mean(exact)), 3), round(float(np.mean(same)), 3)

        served = f"{note}; photo search as served ({photo_embedding(cnn.model)} embedding, whole and cropped)"
        exact, same = top5(match_photos(cnn.model, views, items_table, 5)[0])
        out["photos.synthetic.item_in_top5"] = figure(exact, "rate", served)
        out["photos.synthetic.same_attributes_in_top5"] = figure(same, "rate", served)
        items_by_kind = embed_kinds(cnn.model, catalog_pixels.pixels)
        views_by_kind = embed_kinds(cnn.model, views.reshape(-1, size, size, 3))
        assert np.allclose(items_by_kind["both"], embeddings_matrix(items_table), atol=1e-5)
        for kind in items_by_kind:
            vectors = views_by_kind[kind].reshape(len(views), len(PHOTO_CROPS), -1)
            for how, used in (("single_view", vectors[:, :1]), ("views", vectors)):
                exact, same = top5(topk_best_of(items_by_kind[kind], used, 5)[0])
                says = f"{note}; {kind} embedding, {how.replace('_', ' ')}"
                out[f"photos.synthetic.item_in_top5_{how}_{kind}"] = figure(exact, "rate", says)
                out[f"photos.synthetic.same_attributes_in_top5_{how}_{kind}"] = figure(same, "rate", says)
        # The same shop and photos with the contrastive loss at other weights than the default's.
        for weight in (0.2, 0.5):
            config = CNNConfig.from_settings(
                settings, max_minutes=3, register=False, contrastive_weight=weight
            )
            other = train_cnn(settings, last, lake=lake, config=config).model
            table = catalog_embeddings(other, ids, catalog_pixels.pixels, "bench")
            exact, same = top5(match_photos(other, views, table, 5)[0])
            key, says = str(weight).replace(".", "_"), f"{served}, contrastive weight {weight}"
            out[f"photos.synthetic.weight_{key}.item_in_top5"] = figure(exact, "rate", says)
            out[f"photos.synthetic.weight_{key}.same_attributes_in_top5"] = figure(same, "rate", says)
        top1 = [
            r["top_categories"][0]["category"] == truth[(r["user_id"], r["photo_id"])]["category"]
            for r in photos.to_pylist()
        ]
        out["photos.synthetic.category_top1"] = figure(round(float(np.mean(top1)), 3), "accuracy", note)

        users, vectors, _ = photo_profiles(lake, last)
        item_ids, features, _ = item_embeddings(lake, last)
        only = {
            t["user_id"]: t
            for t in map(json.loads, lake.get_bytes("truth/upload_only_users.jsonl").decode().splitlines())
        }
        rows = [k for k, u in enumerate(users) if u in only]
        blend = PhotoBlend(None, vectors, np.ones(len(users), bool), features, settings.photo_weight)
        ranked, _ = topk_scores(blend.score(np.array(rows)), 20)
        counts: dict[str, int] = {}
        for key in lake.list_keys("raw/events"):
            for line in lake.get_bytes(key).decode().splitlines():
                try:
                    item = json.loads(line)["item_id"]
                except (ValueError, KeyError):
                    continue
                counts[item] = counts.get(item, 0) + 1
        popular = sorted(counts, key=lambda i: -counts[i])[:20]

        def recall(lists: list[list[str]]) -> float:
            return float(
                np.mean(
                    [
                        len(set(top) & set(only[users[r]]["would_buy"])) / len(only[users[r]]["would_buy"])
                        for top, r in zip(lists, rows, strict=True)
                    ]
                )
            )

        only_note = f"{len(rows)} upload-only users, 10 would-buy items each drawn from their true taste"
        out["photos.synthetic.upload_only.photo_recall_at_20"] = figure(
            round(recall([[item_ids[j] for j in r] for r in ranked]), 4), "recall@20", only_note
        )
        out["photos.synthetic.upload_only.popularity_recall_at_20"] = figure(
            round(recall([popular] * len(rows)), 4), "recall@20", only_note
        )
        out["photos.synthetic.upload_only.oracle_recall_at_20"] = figure(
            round(recall([only[users[r]]["taste_rank"][:20] for r in rows]), 4), "recall@20", only_note
        )
    return out

"""The vision bench: `python bench/run.py vision`. See :func:`run`."""

from __future__ import annotations

import sys

from benchkit import CACHE, HM_SAMPLE, Figures, figure


def run() -> Figures:
    """Retrieval on hm-sample with the image model's embeddings (issue 24), from the model the cnn
    bench leaves in bench/.cache.
    Look-alikes: for 2,000 random articles, the share of their 10 nearest catalog neighbours (itself
    left out) with the same product type, colour group and graphical appearance (look-alike
    precision@10), with what similar items serve (both embeddings concatenated; no suffix), the
    retrieval embedding alone (``_retrieval``) and the classifier's (``_classifier``: the penultimate
    layer), same model, same run; and with the article's true product type (``_given_type``), and its
    graphical appearance too (``_given_type_and_appearance``), handed to the search: what the images
    leave to find.
    Shopper photos: for 1,000 of them, recall@1 and @5 of the article from a strongly augmented copy of
    its own photo (zoomed out, turned, relit, cropped, on clutter; then JPEG quality 60): photo search
    as served (no suffix: the photo whole and in crops, ``visrec.vision.search``), and each embedding
    on the whole photo alone (``_single_view_<kind>``) and in crops (``_views_<kind>``)."""
    import csv
    import io

    import keras
    import numpy as np
    from PIL import Image

    import visrec.models.cnn  # noqa: F401  (registers the model class)
    from visrec.devdata.synth import shopper_photo
    from visrec.ingest.images import decode_image, fit_square, to_rgb
    from visrec.store.tables import embeddings_table
    from visrec.vision.embed import embed_kinds
    from visrec.vision.search import PHOTO_CROPS, match_photos, photo_embedding, photo_views

    cached = CACHE / "hm_pixels.npz"
    if not (HM_SAMPLE / "articles.csv").exists() or not cached.exists():
        print("  vision: needs hm-sample and `python bench/run.py cnn` first; skipped", file=sys.stderr)
        return {}
    data = np.load(cached)
    item_ids, pixels = [str(i) for i in data["item_ids"]], data["pixels"]
    with open(HM_SAMPLE / "articles.csv", newline="") as f:
        rows = {r["article_id"]: r for r in csv.DictReader(f)}
    columns = ("product_type_name", "colour_group_name", "graphical_appearance_name")
    look = np.array(["|".join(rows[i][k] for k in columns) for i in item_ids])
    kind_of = np.array([rows[i]["product_type_name"] for i in item_ids])
    model = keras.models.load_model(CACHE / "hm_cnn.keras")
    size = model.image_size
    rng = np.random.default_rng(0)
    queries = rng.choice(len(item_ids), 2000, replace=False)
    n_photos = 1000
    views = []
    for q in queries[:n_photos]:
        image = np.asarray(
            fit_square(to_rgb(decode_image((HM_SAMPLE / "images" / f"{item_ids[q]}.jpg").read_bytes())), size)
        )
        buffer = io.BytesIO()
        Image.fromarray(shopper_photo(image, rng)).save(buffer, "JPEG", quality=60)
        views.append(photo_views(Image.open(io.BytesIO(buffer.getvalue())), size))
    views = np.stack(views)  # (photos, views, size, size, 3); view 0 is the whole photo
    note = f"hm-sample, the cnn bench's model (bench/.cache), {len(item_ids)} articles"
    # What a perfect look-alike search could reach: some articles have fewer than 10 look-alikes.
    others = {v: c - 1 for v, c in zip(*np.unique(look, return_counts=True), strict=True)}
    ceiling = float(np.mean([min(10, others[v]) / 10 for v in look[queries]]))
    out: Figures = {
        "vision.hm.lookalike_precision_at_10_ceiling": figure(
            round(ceiling, 4), "share", f"{note}; the same queries, every look-alike first"
        )
    }

    def neighbours(catalog: np.ndarray) -> np.ndarray:
        sims = catalog[queries] @ catalog.T
        sims[np.arange(len(queries)), queries] = -np.inf
        return np.argpartition(-sims, 10, axis=1)[:, :10]

    def ranks(photo_vectors: np.ndarray, catalog: np.ndarray) -> np.ndarray:
        """Rank of each photo's article when an item scores its best view: (photos, views, d)."""
        found = np.max(photo_vectors @ catalog.T, axis=1)
        return (found > found[np.arange(n_photos), queries[:n_photos]][:, None]).sum(1)

    catalog_by_kind = embed_kinds(model, pixels)
    views_by_kind = embed_kinds(model, views.reshape(-1, size, size, 3))
    for kind, catalog in catalog_by_kind.items():
        suffix = "" if kind == "both" else f"_{kind}"
        top10 = neighbours(catalog)
        photo_vectors = views_by_kind[kind].reshape(n_photos, len(PHOTO_CROPS), -1)
        single, cropped = ranks(photo_vectors[:, :1], catalog), ranks(photo_vectors, catalog)
        figures = {
            f"lookalike_precision_at_10{suffix}": (np.mean(look[top10] == look[queries][:, None]), "share"),
            f"same_type_at_10{suffix}": (np.mean(kind_of[top10] == kind_of[queries][:, None]), "share"),
            f"augmented_recall_at_1_single_view_{kind}": (np.mean(single < 1), "recall"),
            f"augmented_recall_at_5_single_view_{kind}": (np.mean(single < 5), "recall"),
            f"augmented_recall_at_1_views_{kind}": (np.mean(cropped < 1), "recall"),
            f"augmented_recall_at_5_views_{kind}": (np.mean(cropped < 5), "recall"),
        }
        for name, (value, unit) in figures.items():
            out[f"vision.hm.{name}"] = figure(round(float(value), 4), unit, f"{note}; {kind} embedding")

    # How far look-alike search can go from these images: the served embedding handed each article's
    # true product type (and graphical appearance), as one-hot parts weighted to dominate a cosine, so
    # that only the rest (appearance and colour, or colour) is left to the images.
    def told(column: str) -> np.ndarray:
        codes = np.unique(np.array([rows[i][column] for i in item_ids]), return_inverse=True)[1]
        return 3.0 * np.eye(codes.max() + 1, dtype=np.float32)[codes]

    for name, given in (
        ("type", [columns[0]]),
        ("type_and_appearance", [columns[0], columns[2]]),
    ):
        top10 = neighbours(np.concatenate([*map(told, given), catalog_by_kind["both"]], 1))
        out[f"vision.hm.lookalike_precision_at_10_given_{name}"] = figure(
            round(float(np.mean(look[top10] == look[queries][:, None])), 4),
            "share",
            f"{note}; the served embedding beside the true {' and '.join(given)}",
        )
    # Photo search as served: the catalog as the nightly item_embeddings table holds it.
    # The table embed_items writes, from the embeddings made above.
    table = embeddings_table(item_ids, catalog_by_kind["both"], "bench", model.features_dim)
    found, _ = match_photos(model, views, table, 5)
    hit = found == queries[:n_photos, None]
    served = f"{note}; photo search as served ({photo_embedding(model)} embedding, {len(PHOTO_CROPS)} views)"
    out["vision.hm.augmented_recall_at_1"] = figure(round(float(hit[:, 0].mean()), 4), "recall", served)
    out["vision.hm.augmented_recall_at_5"] = figure(round(float(hit.any(1).mean()), 4), "recall", served)
    return out

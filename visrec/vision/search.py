""" "Find products like this photo": embed an uploaded photo and look it up among the catalog's embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visrec.errors import VisrecError
from visrec.ingest.images import normalise_image
from visrec.models.topk import topk
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.tables import decode_pngs, embeddings_matrix, latest_partition
from visrec.vision.embed import embed_pixels, load_cnn


@dataclass
class PhotoMatch:
    """A catalog item found for a photo."""

    item_id: str
    score: float
    category: str


def find_similar_to_photo(
    settings: Settings,
    photo: bytes,
    name: str,
    *,
    k: int = 10,
    lake: Lake | None = None,
    ds: str | None = None,
) -> tuple[list[PhotoMatch], dict]:
    """Embed an uploaded photo with the champion image model and return the ``k`` nearest catalog
    items, best first, plus context (model version, partition, predicted categories)."""
    from visrec.mlops.tracking import use_tracking

    lake = lake or Lake.from_settings(settings)
    ds = latest_partition(lake, "item_embeddings", ds)
    table = lake.read_table("item_embeddings", ds)
    use_tracking(settings)
    try:
        model, version = load_cnn()
    except Exception as exc:  # the registry's own errors are long and name internals
        raise VisrecError(
            f"no champion image model in {settings.mlflow_tracking_uri}: {str(exc)[:200]}"
        ) from None
    made_with = set(table.column("model_version").to_pylist())
    if made_with != {version}:
        raise VisrecError(
            f"item embeddings of {ds} were made with {sorted(made_with)} but the champion is {version}; "
            "re-embed the catalog (`visrec train cnn`)"
        )
    png, _, _ = normalise_image(photo, name, model.image_size)
    pixels = decode_pngs([png])
    query = embed_pixels(model, pixels)
    probs = np.asarray(model.predict(pixels, verbose=0))[0]
    idx, scores = topk(embeddings_matrix(table), query, k)
    ids = table.column("item_id").to_pylist()
    catalog_category = {}
    staged = (
        lake.read_table("staging_images", ds).select(["item_id", "category"])
        if lake.manifest("staging_images", ds)
        else None
    )
    if staged is not None:
        catalog_category = dict(
            zip(staged.column("item_id").to_pylist(), staged.column("category").to_pylist(), strict=True)
        )
    matches = [
        PhotoMatch(ids[j], float(s), catalog_category.get(ids[j], ""))
        for j, s in zip(idx[0], scores[0], strict=True)
        if j >= 0
    ]
    top = np.argsort(-probs)[:3]
    context = {
        "ds": ds,
        "model_version": version,
        "categories": [(model.class_names[c], float(probs[c])) for c in top],
    }
    return matches, context

""" "Find products like this photo": embed an uploaded photo and look it up among the catalog's embeddings.

A shopper's photo frames the product with its surroundings, where a catalog image is the product
filling the frame. The photo is looked at whole and cropped (``PHOTO_CROPS``: its centre and four
corners at 80% of each side), every view is embedded, and an item scores the best of the views'
similarities (:func:`visrec.models.topk.topk_best_of`): one of the crops frames the product about as
the catalog does. Measured on hm-sample (``python bench/run.py cnn vision``) and the synthetic shop
(``python bench/run.py photos``): see docs/explanation/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from PIL import Image

from visrec.errors import VisrecError
from visrec.ingest.images import decode_image, fit_square, to_rgb
from visrec.mlops.tracking import use_tracking
from visrec.models.topk import topk_best_of
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.tables import embeddings_part, latest_partition
from visrec.vision.embed import embed_pixels, load_cnn

# (share of each side, horizontal place, vertical place: 0 left/top, 1 right/bottom) of each view of a
# photo; the first is the whole photo.
PHOTO_CROPS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.5, 0.5),
    (0.8, 0.5, 0.5),
    (0.8, 0.0, 0.0),
    (0.8, 1.0, 0.0),
    (0.8, 0.0, 1.0),
    (0.8, 1.0, 1.0),
)
# Which of the image model's embeddings photo search compares (see docs/explanation/models.md).
PHOTO_EMBEDDING = "classifier"


def photo_views(photo: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """(len(PHOTO_CROPS), size, size, 3) uint8: the photo padded to a square as catalog images are,
    whole and in each crop, each resized (Lanczos) from the photo at its own resolution or, when
    larger, at ``4 * size`` pixels on its longest side (a crop still has 3x the pixels it needs, and
    a phone photo is not held at full size six times)."""
    image = Image.fromarray(photo) if isinstance(photo, np.ndarray) else to_rgb(photo)
    longest, most = max(image.size), 4 * size
    if longest > most:
        scale = most / longest
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
    square = fit_square(image, max(image.size))
    side = square.size[0]
    views = []
    for share, x, y in PHOTO_CROPS:
        crop = side * share
        left, top = (side - crop) * x, (side - crop) * y
        box = (left, top, left + crop, top + crop)
        views.append(np.asarray(square.resize((size, size), Image.Resampling.LANCZOS, box=box)))
    return np.stack(views)


def photo_embedding(model) -> str:
    """The embedding photo search uses with ``model``: :data:`PHOTO_EMBEDDING`, or the classifier's
    when the model has no other."""
    return PHOTO_EMBEDDING if model.retrieval_dim else "classifier"


def match_photos(
    model,
    views: np.ndarray,
    catalog: pa.Table,
    k: int,
    *,
    filter_query_items: sp.spmatrix | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` catalog items (rows of the ``item_embeddings`` table ``catalog``) nearest each photo,
    best first, as ``(ids, scores)`` from :func:`topk_best_of`; ``views`` is (photos, views, size,
    size, 3), :func:`photo_views` of each photo."""
    n, per_photo = views.shape[:2]
    kind = photo_embedding(model)
    vectors = embed_pixels(model, views.reshape(n * per_photo, *views.shape[2:]), kind=kind)
    return topk_best_of(
        embeddings_part(catalog, kind),
        vectors.reshape(n, per_photo, -1),
        k,
        filter_query_items=filter_query_items,
    )


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
    """Look an uploaded photo up with the champion image model (:func:`match_photos`) and return the
    ``k`` nearest catalog items, best first, plus context (model version, partition, predicted
    categories of the whole photo)."""

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
    views = photo_views(decode_image(photo, name), model.image_size)
    probs = np.asarray(model.predict(views[:1], verbose=0))[0]
    idx, scores = match_photos(model, views[None], table, k)
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

"""Using the image model: load the champion, embed images and the catalog, build ``similar_items``."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from visrec.mlops.registry import load_keras, model_uri
from visrec.models.tfdata import in_memory_batches
from visrec.models.topk import topk
from visrec.settings import Settings
from visrec.store.lake import Lake
from visrec.store.tables import StagedImages, embeddings_matrix, embeddings_table, load_staged_images

log = logging.getLogger(__name__)

MODEL_NAME = "visrec-cnn"


def load_cnn(version: str | None = None):
    """Load a registered image model (``version`` like ``visrec-cnn/3``, the champion without one);
    returns ``(model, version)``."""
    import visrec.models.cnn  # noqa: F401  (registers the custom class with Keras)

    return load_keras(model_uri(MODEL_NAME, version))


def embed_pixels(model, pixels: np.ndarray, batch_size: int = 256, kind: str | None = None) -> np.ndarray:
    """L2-normalised embeddings (n, d) float32 of uint8 images, in batches (through tf.data and a
    traced function on TensorFlow; on another Keras backend, numpy slices through the model), by the
    model's inference backbone (batch normalisation folded into the convolutions).
    ``kind``: which of the model's embeddings (see ``ImageClassifier.embed``; its default if None)."""
    import keras

    if len(pixels) == 0:
        return np.zeros((0, model.embedding_size(kind)), np.float32)
    backbone = model.inference_backbone()
    if keras.backend.backend() != "tensorflow":
        batches = (pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size))
        embedded = [keras.ops.convert_to_numpy(model.embed(b, kind, backbone)) for b in batches]
        return np.concatenate(embedded).astype(np.float32)
    import tensorflow as tf

    embed = tf.function(lambda x: model.embed(x, kind, backbone), reduce_retracing=True)
    ds = in_memory_batches(pixels, batch_size)
    return np.concatenate([embed(batch).numpy() for batch in ds]).astype(np.float32)


def embed_kinds(model, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Every embedding the model has (``classifier``, and ``retrieval`` and ``both`` when it has a
    retrieval head) of ``pixels``, from one pass: ``both`` is the other two side by side, each
    scaled by 1/sqrt(2)."""
    if not model.retrieval_dim:
        return {"classifier": embed_pixels(model, pixels, kind="classifier")}
    both = embed_pixels(model, pixels, kind="both")
    split = model.features_dim
    return {
        "both": both,
        "classifier": both[:, :split] * np.float32(np.sqrt(2.0)),
        "retrieval": both[:, split:] * np.float32(np.sqrt(2.0)),
    }


def embed_items(
    settings: Settings, ds: str, lake: Lake, model, model_version: str, images: StagedImages | None = None
) -> pa.Table:
    """Embed every staged item of ``ds`` into ``item_embeddings``; returns the table written."""
    images = images or load_staged_images(lake, ds)
    table = catalog_embeddings(model, images.item_ids, images.pixels, model_version)
    lake.write_table("item_embeddings", ds, table)
    log.info("embedded %d items with %s (%d dims)", table.num_rows, model_version, model.embedding_dim)
    return table


def catalog_embeddings(model, item_ids: list[str], pixels: np.ndarray, model_version: str) -> pa.Table:
    """An ``item_embeddings`` table of catalog images: the model's default embedding of each, its
    classifier part marked (``classifier_dims``)."""
    # The served embedding, when both, is the classifier's and then the retrieval embedding, side by side.
    split = model.features_dim if model.default_embedding == "both" else None
    return embeddings_table(item_ids, embed_pixels(model, pixels), model_version, split)


def build_similar_items(lake: Lake, ds: str, k: int) -> pa.Table:
    """Exact top-``k`` neighbours of every item in ``ds``'s embeddings -> ``similar_items``."""
    table = lake.read_table("item_embeddings", ds)
    ids = table.column("item_id").to_pylist()
    matrix = embeddings_matrix(table)
    # An item is never its own neighbour: the identity filters each query's own row.
    idx, scores = topk(matrix, matrix, k, filter_query_items=sp.identity(len(ids), format="csr"))
    kk = idx.shape[1] if len(ids) else 0
    out = pa.table(
        {
            "item_id": np.repeat(np.array(ids, dtype=object), kk).tolist(),
            "rank": np.tile(np.arange(1, kk + 1, dtype=np.int16), len(ids)),
            "similar_item_id": [ids[j] for j in idx.reshape(-1)],
            "score": scores.reshape(-1).astype(np.float32),
        }
    )
    lake.write_table("similar_items", ds, out)
    return out

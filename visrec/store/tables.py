"""Readers of lake tables that several stages share: clean events, item embeddings, staged images,
users' photo profiles, the newest partition of a table.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from visrec.store.lake import Lake, PartitionNotFound

EVENT_COLUMNS = ("user_id", "item_id", "event_type", "ts")


def load_events(
    lake: Lake, ds: str, shard: tuple[int, int] | None = None, columns: tuple[str, ...] = EVENT_COLUMNS
) -> pd.DataFrame:
    """Clean events of every partition up to ``ds`` (later partitions are not read); with ``shard``
    ``(s, n)``, only the events of the users in shard ``s`` of ``n`` (see :func:`user_shards`);
    ``columns``: which of the events table's columns to keep."""
    table = lake.read_table("events", [d for d in lake.partitions("events") if d <= ds])
    table = table.select(list(columns))
    return (in_shard(table, shard) if shard else table).to_pandas()


def user_shards(user_ids, shards: int) -> np.ndarray:
    """The shard (0..``shards``-1) of each user id: a hash of the id alone, the same in every process
    and on every machine, so a task finds its users' rows in any table without asking the driver."""
    values = np.asarray(user_ids, dtype=object)
    if shards == 1 or len(values) == 0:
        return np.zeros(len(values), np.int64)
    return (pd.util.hash_array(values) % np.uint64(shards)).astype(np.int64)


def in_shard(table: pa.Table, shard: tuple[int, int], column: str = "user_id") -> pa.Table:
    """The rows of ``table`` whose ``column`` (a user id) is in shard ``shard[0]`` of ``shard[1]``;
    each distinct id is hashed once."""
    index, shards = shard
    if shards == 1:
        return table
    ids = pc.dictionary_encode(table.column(column).combine_chunks())
    keep = user_shards(ids.dictionary.to_pylist(), shards) == index
    return table.filter(pa.array(keep[ids.indices.to_numpy(zero_copy_only=False)]))


def item_embeddings(lake: Lake, ds: str) -> tuple[list[str], np.ndarray, str]:
    """(item ids, embeddings, CNN version) of the newest ``item_embeddings`` at or before ``ds``."""
    return item_embeddings_split(lake, ds)[:3]


def item_embeddings_split(lake: Lake, ds: str) -> tuple[list[str], np.ndarray, str, int]:
    """:func:`item_embeddings` and how many leading dimensions are the image classifier's embedding,
    from one read of the partition."""
    table = lake.read_table("item_embeddings", latest_partition(lake, "item_embeddings", ds))
    versions = sorted(set(table.column("model_version").to_pylist()))
    dims = int(table.column("classifier_dims")[0].as_py()) if table.num_rows else 0
    return table.column("item_id").to_pylist(), embeddings_matrix(table), ",".join(versions), dims


@dataclass
class StagedImages:
    """A day's staged catalog images in memory."""

    item_ids: list[str]
    categories: list[str]
    pixels: np.ndarray  # (n, size, size, 3) uint8


def decode_pngs(pngs: list[bytes]) -> np.ndarray:
    """PNG bytes -> one uint8 array (n, h, w, 3), decoded on all cores."""

    def one(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    with ThreadPoolExecutor() as pool:
        arrays = list(pool.map(one, pngs, chunksize=256))
    return np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8)


def load_staged_images(lake: Lake, ds: str) -> StagedImages:
    """Read and decode the ``staging_images`` partition of ``ds``."""
    table = lake.read_table("staging_images", ds).sort_by("item_id")
    return StagedImages(
        item_ids=table.column("item_id").to_pylist(),
        categories=table.column("category").to_pylist(),
        pixels=decode_pngs(table.column("image_png").to_pylist()),
    )


def embeddings_table(
    item_ids: list[str], matrix: np.ndarray, model_version: str, classifier_dims: int | None = None
) -> pa.Table:
    """An ``item_embeddings`` table: one embedding (a row of ``matrix``) per item; its first
    ``classifier_dims`` dimensions are the image classifier's embedding (all of them when None)."""
    matrix = np.asarray(matrix, np.float32)
    dims = matrix.shape[1] if classifier_dims is None else classifier_dims
    return pa.table(
        {
            "item_id": list(item_ids),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1]),
            "model_version": [model_version] * len(item_ids),
            "classifier_dims": pa.array([dims] * len(item_ids), pa.int16()),
        }
    )


def embeddings_matrix(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column of an ``item_embeddings`` table as an (n, d) float32 array."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)


def embeddings_part(table: pa.Table, kind: str) -> np.ndarray:
    """One embedding out of an ``item_embeddings`` table, rows L2-normalised: ``"classifier"`` (its
    first ``classifier_dims`` dimensions), ``"retrieval"`` (the rest) or ``"both"`` (all). A table
    made by a model with one embedding holds the classifier's only."""
    if kind not in ("classifier", "retrieval", "both"):
        raise ValueError(f"unknown embedding kind {kind!r}; use classifier, retrieval or both")
    matrix = embeddings_matrix(table)
    dims = int(table.column("classifier_dims")[0].as_py()) if table.num_rows else matrix.shape[1]
    if kind == "both" or (kind == "classifier" and dims == matrix.shape[1]):
        return matrix
    if dims == matrix.shape[1]:
        raise ValueError("these item embeddings have no retrieval part (the model had no retrieval head)")
    part = matrix[:, :dims] if kind == "classifier" else matrix[:, dims:]
    return part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)


def latest_partition(lake: Lake, table: str, ds: str | None = None) -> str:
    """The newest partition of ``table`` (at or before ``ds`` when given)."""
    dss = [d for d in lake.partitions(table) if ds is None or d <= ds]
    if not dss:
        raise PartitionNotFound(
            f"no {table} partition{'' if ds is None else f' at or before {ds}'} in {lake.uri}; "
            "run `visrec train cnn --ds DATE` first"
        )
    return dss[-1]


def photo_profiles(
    lake: Lake, ds: str, shard: tuple[int, int] | None = None
) -> tuple[list[str], np.ndarray, str | None]:
    """Each user's visual preference from their photos: the mean of their photos' embeddings
    (re-normalised), from ``user_photos`` of ``ds`` (the users of ``shard`` only, when given).
    Returns (user_ids, vectors, model_version)."""

    if lake.manifest("user_photos", ds) is None:
        return [], np.zeros((0, 0), np.float32), None
    table = lake.read_table("user_photos", ds)
    table = in_shard(table, shard) if shard else table
    if table.num_rows == 0:
        return [], np.zeros((0, 0), np.float32), None
    users = np.array(table.column("user_id").to_pylist())
    emb = embeddings_matrix(table)
    order = sorted(set(users.tolist()))
    vectors = np.stack([emb[users == u].mean(0) for u in order])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
    return order, vectors.astype(np.float32), table.column("model_version")[0].as_py()

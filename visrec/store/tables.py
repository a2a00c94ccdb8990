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
from PIL import Image

from visrec.store.lake import Lake, PartitionNotFound


def load_events(lake: Lake, ds: str) -> pd.DataFrame:
    """Clean events of every partition up to ``ds`` (later partitions are not read)."""
    table = lake.read_table("events", [d for d in lake.partitions("events") if d <= ds])
    return table.select(["user_id", "item_id", "event_type", "ts"]).to_pandas()


def item_embeddings(lake: Lake, ds: str) -> tuple[list[str], np.ndarray, str]:
    """(item ids, embeddings, CNN version) of the newest ``item_embeddings`` at or before ``ds``."""
    table = lake.read_table("item_embeddings", latest_partition(lake, "item_embeddings", ds))
    versions = sorted(set(table.column("model_version").to_pylist()))
    return table.column("item_id").to_pylist(), embeddings_matrix(table), ",".join(versions)


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


def embeddings_matrix(table: pa.Table) -> np.ndarray:
    """The ``embedding`` column of an ``item_embeddings`` table as an (n, d) float32 array."""
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)


def latest_partition(lake: Lake, table: str, ds: str | None = None) -> str:
    """The newest partition of ``table`` (at or before ``ds`` when given)."""
    dss = [d for d in lake.partitions(table) if ds is None or d <= ds]
    if not dss:
        raise PartitionNotFound(
            f"no {table} partition{'' if ds is None else f' at or before {ds}'} in {lake.uri}; "
            "run `visrec train cnn --ds DATE` first"
        )
    return dss[-1]


def photo_profiles(lake: Lake, ds: str) -> tuple[list[str], np.ndarray, str | None]:
    """Each user's visual preference from their photos: the mean of their photos' embeddings
    (re-normalised), from ``user_photos`` of ``ds``. Returns (user_ids, vectors, model_version)."""

    if lake.manifest("user_photos", ds) is None:
        return [], np.zeros((0, 0), np.float32), None
    table = lake.read_table("user_photos", ds)
    if table.num_rows == 0:
        return [], np.zeros((0, 0), np.float32), None
    users = np.array(table.column("user_id").to_pylist())
    emb = embeddings_matrix(table)
    order = sorted(set(users.tolist()))
    vectors = np.stack([emb[users == u].mean(0) for u in order])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9
    return order, vectors.astype(np.float32), table.column("model_version")[0].as_py()

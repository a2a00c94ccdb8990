"""Catalog image ingestion: raw images -> ``staging_images`` (RGB PNG at the model size), bad files quarantined."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
from PIL import Image

from visrec.ingest.images import content_hash, normalise_many
from visrec.ingest.quarantine import _check_budget, _reasons
from visrec.settings import Settings
from visrec.store.catalog import read_catalog
from visrec.store.lake import Lake, check_ds
from visrec.store.schemas import QUARANTINE, quarantine_spec

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from visrec.mlops.validation import TableValidator


@dataclass
class ImageCounts:
    """What happened to the catalog's images."""

    files: int = 0
    accepted: int = 0
    reused: int = 0
    quarantined: int = 0
    warnings: dict[str, int] = field(default_factory=dict)  # accepted, but worth a look (wrong_extension)


def ingest_images(
    settings: Settings,
    lake: Lake,
    ds: str,
    validator: TableValidator | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    catalog: pa.Table | None = None,
) -> tuple[ImageCounts, dict[str, int]]:
    """Catalog images -> ``staging_images`` of ``ds`` (RGB PNG at ``settings.image_size``).

    An image whose bytes, name and target size are unchanged since the latest earlier partition is
    reused, not decoded again."""
    check_ds(ds)
    if catalog is None:
        catalog, _ = read_catalog(lake)
    category = dict(
        zip(catalog.column("item_id").to_pylist(), catalog.column("category").to_pylist(), strict=True)
    )
    by_item: dict[str, list[str]] = {}
    bad: dict[str, list] = {n: [] for n in QUARANTINE.names}

    def reject(key: str, reason: str, detail: str) -> None:
        for name, value in zip(QUARANTINE.names, ("raw/images", key, reason, detail), strict=True):
            bad[name].append(value)

    keys = lake.list_keys("raw/images")
    for key in keys:
        stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem in category:
            by_item.setdefault(stem, []).append(key)
        else:
            reject(key, "unknown_item", f"no catalog item {stem!r}")
    for item in category:
        if item not in by_item:
            reject(f"raw/images/{item}.*", "missing_image", f"catalog item {item} has no image")
    for item, item_keys in by_item.items():
        for extra in item_keys[1:]:
            reject(extra, "duplicate_image", f"item {item} already has {item_keys[0]}")

    previous = _previous_images(lake, ds, settings.image_size)
    rows: dict[str, list] = {
        n: [] for n in ("item_id", "category", "image_png", "width", "height", "content_hash", "source_key")
    }
    todo: list[tuple[str, bytes]] = []
    hashes: dict[str, str] = {}
    counts = ImageCounts(files=len(keys))
    for item, item_keys in sorted(by_item.items()):
        key = item_keys[0]
        data = lake.get_bytes(key)
        digest = content_hash(data)
        old = previous.get(item)
        if old is not None and old["content_hash"] == digest and old["source_key"] == key:
            for name in rows:
                rows[name].append(category[item] if name == "category" else old[name])
            counts.reused += 1
        else:
            todo.append((key, data))
            hashes[key] = digest
    workers = min(os.cpu_count() or 1, 8)
    tick = (lambda done, total: progress("images", done, total)) if progress else None
    for result in normalise_many(todo, settings.image_size, workers, tick):
        if result.png is None:
            reject(result.key, result.reason or "bad_image", result.detail or "")
            continue
        if result.warning:
            counts.warnings["wrong_extension"] = counts.warnings.get("wrong_extension", 0) + 1
            log.warning("images %s: accepted by content: %s", ds, result.warning)
        item = result.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        for name, value in (
            ("item_id", item),
            ("category", category[item]),
            ("image_png", result.png),
            ("width", result.width),
            ("height", result.height),
            ("content_hash", hashes[result.key]),
            ("source_key", result.key),
        ):
            rows[name].append(value)
    quarantine = pa.table(bad, schema=QUARANTINE)
    counts.quarantined = quarantine.num_rows
    counts.accepted = len(rows["item_id"])
    reasons = _reasons(quarantine)
    lake.write_table(quarantine_spec("staging_images"), ds, quarantine)
    _check_budget(
        f"images of {ds}",
        counts.quarantined,
        len(keys) + reasons.get("missing_image", 0),
        settings.error_budget,
        reasons,
    )
    table = pa.table(rows)
    if validator is not None:
        validator.validate(
            "staging_images", table.drop_columns(["image_png"]).to_pandas().assign(image_png=b"x")
        )
    lake.write_table("staging_images", ds, table)
    log.info(
        "images %s: %d files, %d accepted (%d reused), %d quarantined %s",
        ds,
        counts.files,
        counts.accepted,
        counts.reused,
        counts.quarantined,
        reasons,
    )
    return counts, reasons


def _previous_images(lake: Lake, ds: str, size: int) -> dict[str, dict]:
    """The latest ``staging_images`` partition at or before ``ds`` whose images have ``size``."""
    earlier = [d for d in lake.partitions("staging_images") if d <= ds]
    if not earlier:
        return {}
    table = lake.read_table("staging_images", earlier[-1])
    out = {}
    for row in table.to_pylist():
        # Image.open reads the header only; the pixels are never decoded here.
        if Image.open(io.BytesIO(row["image_png"])).size == (size, size):
            out[row["item_id"]] = row
    return out

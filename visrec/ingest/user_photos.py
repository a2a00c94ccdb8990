"""User photos: nightly ingestion of uploads and their retention.

Uploads arrive as ``raw/user_images/dt=<ds>/<user_id>/<photo_id>.<ext>`` (any common format). They are
personal data, so:

- every photo is decoded and re-encoded from its pixels alone (PNG): EXIF, GPS, ICC profiles and text
  chunks never reach storage; the stored copy lives under its own prefix, ``private/user_photos/``;
- photos older than ``VISREC_PHOTO_RETENTION_DAYS`` are deleted, with the rows derived from them;
- ``visrec forget`` (:mod:`visrec.forget`) removes a user everywhere.

Recognition lives in :mod:`visrec.vision.photos`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa

from visrec.ingest.images import content_hash, normalise_many
from visrec.settings import Settings
from visrec.store.forgotten import forgotten_users
from visrec.store.lake import Lake, check_ds
from visrec.store.schemas import QUARANTINE, quarantine_spec, spec_for

log = logging.getLogger(__name__)

RAW_PREFIX = "raw/user_images"


STORE_PREFIX = "private/user_photos"


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class PhotoCounts:
    """What happened to a day's uploads."""

    files: int = 0
    accepted: int = 0
    quarantined: int = 0
    forgotten: int = 0  # uploads of users who asked to be forgotten: dropped, not stored


def _parse_key(key: str, ds: str) -> tuple[str, str] | None:
    rest = key.removeprefix(f"{RAW_PREFIX}/dt={ds}/").split("/")
    if len(rest) != 2 or "." not in rest[1]:
        return None
    user, photo = rest[0], rest[1].rsplit(".", 1)[0]
    return (user, photo) if _SAFE_ID.match(user) and _SAFE_ID.match(photo) else None


def ingest_user_photos(
    settings: Settings, lake: Lake, ds: str, validator=None
) -> tuple[PhotoCounts, dict[str, int]]:
    """``ds``'s uploads -> stored, metadata-free PNGs under ``private/user_photos/ds=<ds>/`` and the
    ``staging_user_photos`` partition; bad files quarantined with a reason; then retention applied."""

    check_ds(ds)
    forgotten = forgotten_users(lake)
    keys = lake.list_keys(f"{RAW_PREFIX}/dt={ds}")
    counts = PhotoCounts(files=len(keys))
    bad: dict[str, list] = {n: [] for n in QUARANTINE.names}

    def reject(key: str, reason: str, detail: str) -> None:
        for name, value in zip(QUARANTINE.names, (RAW_PREFIX, key, reason, detail), strict=True):
            bad[name].append(value)

    todo: list[tuple[str, bytes]] = []
    ids: dict[str, tuple[str, str]] = {}
    seen: dict[tuple[str, str], str] = {}
    for key in sorted(keys):
        parsed = _parse_key(key, ds)
        if parsed is None:
            reject(key, "bad_path", f"expected {RAW_PREFIX}/dt={ds}/<user_id>/<photo_id>.<ext>")
            continue
        if parsed[0] in forgotten:
            counts.forgotten += 1
            continue
        if parsed in seen:
            reject(key, "duplicate_photo", f"photo {parsed[1]} of {parsed[0]} already came as {seen[parsed]}")
            continue
        seen[parsed] = key
        ids[key] = parsed
        todo.append((key, lake.get_bytes(key)))
    rows: dict[str, list] = {
        n: [] for n in ("user_id", "photo_id", "image_key", "content_hash", "width", "height")
    }
    digests: dict[tuple[str, str], str] = {}
    # Users upload whatever their phone made: accept by content, not by file name.
    for result in normalise_many(todo, settings.image_size, workers=4):
        if result.png is None:
            reject(result.key, result.reason or "not_an_image", result.detail or "")
            continue
        user, photo = ids[result.key]
        digest = content_hash(result.png)
        if (user, digest) in digests:
            reject(result.key, "duplicate_photo", f"same picture as {digests[(user, digest)]}")
            continue
        digests[(user, digest)] = result.key
        image_key = f"{STORE_PREFIX}/ds={ds}/{user}/{photo}.png"
        lake.put_bytes(image_key, result.png)
        for name, value in zip(
            rows, (user, photo, image_key, digest, result.width, result.height), strict=True
        ):
            rows[name].append(value)
    quarantine = pa.table(bad, schema=QUARANTINE)
    staged = pa.table(rows)
    counts.accepted, counts.quarantined = staged.num_rows, quarantine.num_rows
    lake.write_table(quarantine_spec("user_photos"), ds, quarantine)
    if validator is not None:
        validator.validate("staging_user_photos", staged.to_pandas())
    lake.write_table("staging_user_photos", ds, staged)
    reasons: dict[str, int] = {}
    for reason in bad["reason"]:
        reasons[reason] = reasons.get(reason, 0) + 1
    deleted = apply_retention(settings, lake, ds)
    log.info("user photos %s: %s, quarantined %s, retention removed %s", ds, counts, reasons, deleted)
    return counts, reasons


def _first_retained(settings: Settings, ds: str) -> str:
    return (date.fromisoformat(ds) - timedelta(days=settings.photo_retention_days - 1)).isoformat()


def retained_dates(settings: Settings, lake: Lake, ds: str) -> list[str]:
    """The ``staging_user_photos`` dates within the retention window ending at ``ds``."""
    first = _first_retained(settings, ds)
    return [d for d in lake.partitions("staging_user_photos") if first <= d <= ds]


def apply_retention(settings: Settings, lake: Lake, ds: str) -> dict[str, int]:
    """Delete stored photos older than the retention window, and every partition derived from them."""
    cutoff = _first_retained(settings, ds)
    deleted: dict[str, int] = {}
    for name in lake.list_dirs(STORE_PREFIX):
        if name.startswith("ds=") and name[3:] < cutoff:
            lake.delete(f"{STORE_PREFIX}/{name}")
            deleted["photo_days"] = deleted.get("photo_days", 0) + 1

    for table in ("staging_user_photos", "user_photos", "photo_recommendations", "quarantine/user_photos"):
        spec = spec_for(table)
        for old in [d for d in lake.partitions(spec) if d < cutoff]:
            lake.delete(f"{spec.path}/ds={old}")
            deleted[table] = deleted.get(table, 0) + 1
    return deleted

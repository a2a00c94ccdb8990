"""User photos: nightly ingestion of uploads, retention, recognition and photo-based recommendations.

Uploads arrive as ``raw/user_images/dt=<ds>/<user_id>/<photo_id>.<ext>`` (any common format). They are
personal data, so:

- every photo is decoded and re-encoded from its pixels alone (PNG): EXIF, GPS, ICC profiles and text
  chunks never reach storage; the stored copy lives under its own prefix, ``private/user_photos/``;
- photos older than ``VISREC_PHOTO_RETENTION_DAYS`` are deleted, with the rows derived from them;
- ``visrec forget`` (:mod:`visrec.forget`) removes a user everywhere.

Recognition runs the champion image model over every retained photo: its category distribution and
embedding go to ``user_photos`` (a snapshot per ``ds``, all made with one model version, so the
embeddings are comparable with that day's ``item_embeddings``); the photos uploaded on ``ds`` also get
their nearest catalog items in ``photo_recommendations``. Scoring then uses each user's photos as
visual evidence (see :func:`photo_profiles` and ``visrec.recsys.score_users``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow as pa

from visrec.images import content_hash, normalise_many
from visrec.lake import Lake, check_ds
from visrec.schemas import QUARANTINE, quarantine_spec
from visrec.settings import Settings

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
    from visrec.forget import forgotten_users

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
    for result in normalise_many(todo, settings.image_size, workers=4, check_extension=False):
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
    from visrec.schemas import spec_for

    for table in ("staging_user_photos", "user_photos", "photo_recommendations", "quarantine/user_photos"):
        spec = spec_for(table)
        for old in [d for d in lake.partitions(spec) if d < cutoff]:
            lake.delete(f"{spec.path}/ds={old}")
            deleted[table] = deleted.get(table, 0) + 1
    return deleted


def recognise_user_photos(
    settings: Settings, lake: Lake, ds: str, model, model_version: str, k: int = 10
) -> tuple[pa.Table, pa.Table]:
    """Every retained photo through the image model -> ``user_photos`` (top-3 categories, embedding);
    the photos uploaded on ``ds`` -> ``photo_recommendations`` (nearest catalog items, bought ones
    filtered). Returns both tables."""
    from visrec.vision import decode_pngs, embed_pixels, embeddings_matrix, top_k_similar

    dates = retained_dates(settings, lake, ds)
    staged = lake.read_table("staging_user_photos", dates).to_pandas() if dates else None
    if staged is None or staged.empty:
        from visrec.schemas import spec_for

        empty_photos = spec_for("user_photos").schema.empty_table()
        empty_recs = spec_for("photo_recommendations").schema.empty_table()
        lake.write_table("user_photos", ds, empty_photos)
        lake.write_table("photo_recommendations", ds, empty_recs)
        return empty_photos, empty_recs
    staged = staged.sort_values(["user_id", "photo_id"]).reset_index(drop=True)
    pixels = decode_pngs([lake.get_bytes(k) for k in staged["image_key"]])
    probs = np.asarray(model.predict(pixels, verbose=0))
    emb = embed_pixels(model, pixels)
    top = np.argsort(-probs, axis=1)[:, :3]
    names = list(model.class_names)
    photos = pa.table({
        "user_id": staged["user_id"].tolist(),
        "photo_id": staged["photo_id"].tolist(),
        "top_categories": [[{"category": names[c], "probability": float(probs[n, c])} for c in top[n]]
                           for n in range(len(staged))],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), emb.shape[1]),
        "model_version": [model_version] * len(staged),
        "image_key": staged["image_key"].tolist(),
    })  # fmt: skip
    lake.write_table("user_photos", ds, photos)

    items = lake.read_table("item_embeddings", ds)
    item_ids = items.column("item_id").to_pylist()
    today = np.flatnonzero((staged["ds"] == ds).to_numpy())
    bought = _bought(lake, ds)
    # Ask for more than k, then drop what the user already bought.
    idx, scores = top_k_similar(emb[today], embeddings_matrix(items), min(k + 20, len(item_ids)))
    out: dict[str, list] = {"user_id": [], "photo_id": [], "rank": [], "item_id": [], "score": []}
    for row, n in enumerate(today):
        user, photo = staged.at[n, "user_id"], staged.at[n, "photo_id"]
        ranked = [(item_ids[j], float(s)) for j, s in zip(idx[row], scores[row], strict=True)
                  if (user, item_ids[j]) not in bought][:k]  # fmt: skip
        for rank, (item, score) in enumerate(ranked, 1):
            for name, value in zip(out, (user, photo, rank, item, score), strict=True):
                out[name].append(value)
    recs = pa.table(
        {**out, "rank": pa.array(out["rank"], pa.int16()), "score": pa.array(out["score"], pa.float32())}
    )
    lake.write_table("photo_recommendations", ds, recs)
    log.info("recognised %d photos (%d new) with %s; %d photo recommendations", len(staged), len(today),
             model_version, recs.num_rows)  # fmt: skip
    return photos, recs


def _bought(lake: Lake, ds: str) -> set[tuple[str, str]]:
    from visrec.recsys import load_events

    events = load_events(lake, ds)
    bought = events[events["event_type"] == "purchase"]
    return set(zip(bought["user_id"], bought["item_id"], strict=True))


def photo_profiles(lake: Lake, ds: str) -> tuple[list[str], np.ndarray, str | None]:
    """Each user's visual preference from their photos: the mean of their photos' embeddings
    (re-normalised), from ``user_photos`` of ``ds``. Returns (user_ids, vectors, model_version)."""
    from visrec.vision import embeddings_matrix

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

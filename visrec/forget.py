"""``visrec forget USER_ID``: remove one user's photos, events and derived rows, and keep them out.

In this order, so that a crash half-way is finished by running the command again:

1. the user joins ``private/forgotten.json``: from now on ingestion drops their events and uploads and
   scoring skips them, so later runs never bring them back;
2. their raw uploads and stored photos are deleted, and their lines are removed from the raw event logs;
3. every table partition that mentions them (any text column holding their id as a whole token, which
   also catches quarantine rows and photo keys) is rewritten without those rows;
4. the published release is pointed at the rewritten files and the DuckDB warehouse refreshed;
5. every older version of the rewritten partitions is deleted, so no file in the lake still holds them.

Trained models keep what they learned until their next training (nightly); their factor files are not
rewritten here, and scoring no longer serves a forgotten user.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from visrec.lake import RELEASE_KEY, Lake
from visrec.schemas import TABLES, TableSpec, quarantine_spec
from visrec.settings import Settings

log = logging.getLogger(__name__)

FORGOTTEN_KEY = "private/forgotten.json"
QUARANTINED = ("catalog", "events", "images", "user_photos")


@dataclass
class ForgetReport:
    """What ``forget_user`` removed."""

    user_id: str
    raw_files_deleted: int = 0
    raw_lines_removed: int = 0
    rows_removed: dict[str, int] = field(default_factory=dict)


def forgotten_users(lake: Lake) -> set[str]:
    """The ids of every user who asked to be forgotten."""
    if not lake.exists(FORGOTTEN_KEY):
        return set()
    return set(json.loads(lake.get_bytes(FORGOTTEN_KEY))["users"])


def _token(*user_ids: str) -> re.Pattern:
    # Any of the ids as a whole token: u1 must not match u12, but must match ".../u1/p3.png" or '"u1"'.
    ids = "|".join(re.escape(u) for u in sorted(user_ids))
    return re.compile(rf"(?<![A-Za-z0-9_.-])(?:{ids})(?![A-Za-z0-9_-])")


def _mentions(table: pa.Table, pattern: re.Pattern):
    import numpy as np

    mask = np.zeros(table.num_rows, dtype=bool)
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            values = column.to_pylist()
            mask |= np.array([v is not None and pattern.search(v) is not None for v in values], dtype=bool)
    return mask


def all_specs() -> list[TableSpec]:
    """Every table visrec writes, quarantine tables included."""
    return [*TABLES.values(), *(quarantine_spec(t) for t in QUARANTINED)]


def forget_user(settings: Settings, user_id: str, *, lake: Lake | None = None) -> ForgetReport:
    """Remove ``user_id`` from the lake and the warehouse, and from every later run."""
    from visrec.errors import VisrecError
    from visrec.photos import RAW_PREFIX, STORE_PREFIX

    lake = lake or Lake.from_settings(settings)
    if not user_id or "/" in user_id or user_id.strip() != user_id:
        raise VisrecError(f"not a user id: {user_id!r}")
    report = ForgetReport(user_id)
    users = forgotten_users(lake) | {user_id}
    lake.put_bytes(FORGOTTEN_KEY, json.dumps({"users": sorted(users)}, indent=1).encode())

    pattern = _token(user_id)
    for day in lake.list_dirs(RAW_PREFIX):
        prefix = f"{RAW_PREFIX}/{day}/{user_id}"
        report.raw_files_deleted += len(lake.list_keys(prefix))
        lake.delete(prefix)
    for day in lake.list_dirs(STORE_PREFIX):
        lake.delete(f"{STORE_PREFIX}/{day}/{user_id}")
    for key in lake.list_keys("raw/events"):
        lines = lake.get_bytes(key).decode(errors="replace").splitlines(keepends=True)
        kept = [line for line in lines if not pattern.search(line)]
        if len(kept) != len(lines):
            report.raw_lines_removed += len(lines) - len(kept)
            lake.put_bytes(key, "".join(kept).encode())

    rewritten: list[tuple[TableSpec, str]] = []
    for spec in all_specs():
        for ds in lake.partitions(spec):
            data = lake.read_table(spec, ds).drop_columns(["ds"])
            mask = _mentions(data, pattern)
            if mask.any():
                lake.write_table(spec, ds, data.filter(pa.array(~mask)))
                report.rows_removed[spec.name] = report.rows_removed.get(spec.name, 0) + int(mask.sum())
                rewritten.append((spec, ds))

    if lake.exists(RELEASE_KEY):
        from visrec.publish import read_release, refresh_warehouse

        release = read_release(lake)
        for spec, ds in rewritten:
            if ds in release["tables"].get(spec.name, {}):
                manifest = lake.manifest(spec, ds)
                release["tables"][spec.name][ds] = [f"{spec.path}/ds={ds}/{f}" for f in manifest.files]
        lake.put_bytes(RELEASE_KEY, json.dumps(release, indent=1, sort_keys=True).encode())
        refresh_warehouse(settings, lake, release)
    for spec, ds in rewritten:
        lake.drop_other_versions(spec, ds)
    log.info("forgot %s: %s", user_id, report)
    return report


def drop_forgotten(table: pa.Table, forgotten: set[str], column: str = "user_id") -> tuple[pa.Table, int]:
    """``table`` without the rows of forgotten users, and how many were dropped."""
    if not forgotten or table.num_rows == 0:
        return table, 0
    import pyarrow.compute as pc

    keep = pc.invert(pc.is_in(table.column(column), value_set=pa.array(sorted(forgotten))))
    kept = table.filter(keep)
    return kept, table.num_rows - kept.num_rows


def drop_mentions(table: pa.Table, forgotten: set[str]) -> tuple[pa.Table, int]:
    """``table`` without the rows whose text mentions a forgotten user (quarantine rows hold raw lines)."""
    if not forgotten or table.num_rows == 0:
        return table, 0
    mask = _mentions(table, _token(*forgotten))
    return table.filter(pa.array(~mask)), int(mask.sum())


def file_mentions(lake: Lake, key: str, user_id: str) -> bool:
    """Whether one stored Parquet file still holds a row mentioning ``user_id`` (for tests and audits)."""
    return bool(_mentions(pq.read_table(io.BytesIO(lake.get_bytes(key))), _token(user_id)).any())

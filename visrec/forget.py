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

import json
import logging
from dataclasses import dataclass, field

import pyarrow as pa

from visrec.errors import VisrecError
from visrec.ingest.user_photos import RAW_PREFIX, STORE_PREFIX
from visrec.publish import refresh_warehouse
from visrec.settings import Settings
from visrec.store.forgotten import FORGOTTEN_KEY, _mentions, _token, forgotten_users
from visrec.store.lake import RELEASE_KEY, Lake, read_release
from visrec.store.schemas import TABLES, TableSpec, quarantine_spec

log = logging.getLogger(__name__)

QUARANTINED = ("catalog", "events", "images", "user_photos")


@dataclass
class ForgetReport:
    """What ``forget_user`` removed."""

    user_id: str
    raw_files_deleted: int = 0
    raw_lines_removed: int = 0
    rows_removed: dict[str, int] = field(default_factory=dict)


def all_specs() -> list[TableSpec]:
    """Every table visrec writes, quarantine tables included."""
    return [*TABLES.values(), *(quarantine_spec(t) for t in QUARANTINED)]


def forget_user(settings: Settings, user_id: str, *, lake: Lake | None = None) -> ForgetReport:
    """Remove ``user_id`` from the lake and the warehouse, and from every later run."""

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

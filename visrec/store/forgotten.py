"""Users who asked to be forgotten (``private/forgotten.json``), and dropping their rows: every stage
reads this list so that later runs never bring them back (``visrec forget``: :mod:`visrec.forget`).
"""

from __future__ import annotations

import io
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq

from visrec.store.lake import Lake

FORGOTTEN_KEY = "private/forgotten.json"


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

"""The item catalog (``raw/catalog/items.csv``): read, checked, bad rows set aside with a reason."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from visrec.errors import VisrecError
from visrec.store.lake import Lake
from visrec.store.schemas import QUARANTINE

CATALOG_KEY = "raw/catalog/items.csv"


class CatalogError(VisrecError):
    """The catalog is missing or unusable."""


def read_catalog(lake: Lake) -> tuple[pa.Table, pa.Table]:
    """Return ``(catalog, quarantine)``: the usable catalog rows (``item_id``, ``category``, ``price``
    and any other attribute columns, ids as strings) and the rejected rows with their reasons
    (missing id or category, a repeated item id: the first row wins)."""
    if not lake.exists(CATALOG_KEY):
        raise CatalogError(f"no catalog at {lake.url(CATALOG_KEY)}; run `visrec synth` or `visrec import`")
    raw = lake.get_bytes(CATALOG_KEY)
    try:
        header = pacsv.read_csv(io.BytesIO(raw), read_options=pacsv.ReadOptions(skip_rows_after_names=10**9))
        names = header.column_names
        table = pacsv.read_csv(
            io.BytesIO(raw),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
    except pa.ArrowInvalid as exc:
        raise CatalogError(f"catalog {lake.url(CATALOG_KEY)} is not a readable CSV: {exc}") from None
    for required in ("item_id", "category"):
        if required not in table.column_names:
            raise CatalogError(f"catalog {lake.url(CATALOG_KEY)} has no {required!r} column")
    ids = table.column("item_id").to_pylist()
    cats = table.column("category").to_pylist()
    keep, bad = [], {"source": [], "record": [], "reason": [], "detail": []}
    seen: set[str] = set()
    for row, (item, cat) in enumerate(zip(ids, cats, strict=True)):
        reason = None
        if not item or not item.strip():
            reason, detail = "missing_field", "empty item_id"
        elif not cat or not cat.strip():
            reason, detail = "missing_field", f"item {item} has no category"
        elif item in seen:
            reason, detail = "duplicate_item", f"item {item} appears again; the first row is kept"
        if reason:
            bad["source"].append(CATALOG_KEY)
            bad["record"].append(
                ",".join(str(table.column(n)[row].as_py() or "") for n in table.column_names)
            )
            bad["reason"].append(reason)
            bad["detail"].append(detail)
        else:
            seen.add(item)
            keep.append(row)
    table = table.take(pa.array(keep, pa.int64()))
    if "price" in table.column_names:
        price = pc.cast(
            pc.if_else(pc.equal(table.column("price"), ""), None, table.column("price")), pa.float64()
        )
    else:
        price = pa.nulls(table.num_rows, pa.float64())
    table = table.drop_columns([c for c in ["price"] if c in table.column_names]).append_column(
        "price", price
    )
    return table, pa.table(bad, schema=QUARANTINE)


# Catalog columns that are not attributes of how an item looks.
NOT_ATTRIBUTES = frozenset({"item_id", "category", "price", "added_date"})


def catalog_attributes(
    catalog: pa.Table, item_ids: list[str], max_values: int = 200
) -> dict[str, tuple[list[str], list[int]]]:
    """The catalog's attribute columns for ``item_ids``: ``{column: (values, index of each item's
    value, -1 where empty or the item is not in the catalog)}``. A column is an attribute when it is
    not one of ``NOT_ATTRIBUTES``, has 2 to ``max_values`` distinct values among the items (more reads
    as a name or a code) and is not numeric. A catalog with no such column gives ``{}``."""
    ids = catalog.column("item_id").to_pylist()
    out: dict[str, tuple[list[str], list[int]]] = {}
    for name in catalog.column_names:
        if name in NOT_ATTRIBUTES:
            continue
        of_item = dict(zip(ids, catalog.column(name).to_pylist(), strict=True))
        column = [(of_item.get(item) or "").strip() for item in item_ids]
        values = sorted({v for v in column if v})
        if not 2 <= len(values) <= max_values or all(_is_number(v) for v in values):
            continue
        index = {v: k for k, v in enumerate(values)}
        out[name] = (values, [index.get(v, -1) for v in column])
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

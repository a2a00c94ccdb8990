"""Map external data layouts onto visrec's raw contract.

The raw contract (see docs/tutorials/your-shop.md): ``raw/catalog/items.csv`` (``item_id``, ``category``, optional
attributes), ``raw/images/<item_id>.<ext>``, ``raw/events/dt=<ds>/*.jsonl`` with ``user_id``,
``item_id``, ``event_type``, ``ts`` (ISO-8601) and optional ``event_id`` and ``price``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from visrec.errors import VisrecError
from visrec.store.lake import Lake

if TYPE_CHECKING:
    import pandas as pd

IMPORTERS = ("hm", "events")


class SourceLayoutError(VisrecError):
    """The source folder does not have the layout the importer expects."""


@dataclass
class ImportSummary:
    """What an importer wrote."""

    out: str
    items: int
    images: int
    users: int
    events: int
    days: int
    first_ds: str
    last_ds: str


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise SourceLayoutError(f"{path} not found: expected {what}")
    return path


def import_hm(
    source: Path, out: Lake, progress: Callable[[str, int, int], None] | None = None
) -> ImportSummary:
    """Import the H&M layout (``articles.csv``, ``transactions.csv``, ``images/<article_id>.jpg``).

    Purchases become ``purchase`` events (``ts`` at midnight UTC of ``t_dat``; each transaction row
    keeps its line number as ``event_id``, because buying the same article twice on one day is two
    real rows, not a duplicate); ``product_type_name`` becomes the category; ``article_id`` stays a
    string with its leading zero. Only articles with a photo enter the catalog.
    """
    tick = progress or (lambda stage, done, total: None)
    source = Path(source)
    articles = _require(source / "articles.csv", "the H&M articles table")
    transactions = _require(source / "transactions.csv", "the H&M transactions table")
    images = _require(source / "images", "a folder of <article_id>.jpg photos")

    with open(transactions, newline="") as f:
        rows = list(csv.DictReader(f))
    price_sum: dict[str, float] = defaultdict(float)
    price_n: dict[str, int] = defaultdict(int)
    by_day: dict[str, list[str]] = defaultdict(list)
    users = set()
    for line_no, row in enumerate(rows, start=2):
        item = row["article_id"]
        price_sum[item] += float(row["price"])
        price_n[item] += 1
        users.add(row["customer_id"])
        by_day[row["t_dat"]].append(
            json.dumps(
                {
                    "user_id": row["customer_id"],
                    "item_id": item,
                    "event_type": "purchase",
                    "ts": f"{row['t_dat']}T00:00:00Z",
                    "event_id": f"hm-{line_no}",
                    "price": float(row["price"]),
                }
            )
        )

    catalog = io.StringIO()
    writer = csv.writer(catalog, lineterminator="\n")
    writer.writerow(["item_id", "category", "product_group", "colour", "appearance", "price"])
    photo_items = []
    with open(articles, newline="") as f:
        for row in csv.DictReader(f):
            item = row["article_id"]
            if not (images / f"{item}.jpg").exists():
                continue
            photo_items.append(item)
            price = f"{price_sum[item] / price_n[item]:.6f}" if price_n[item] else ""
            writer.writerow(
                [
                    item,
                    row["product_type_name"],
                    row["product_group_name"],
                    row["colour_group_name"],
                    row["graphical_appearance_name"],
                    price,
                ]
            )
    out.put_bytes("raw/catalog/items.csv", catalog.getvalue().encode())

    def copy(item: str) -> None:
        out.put_bytes(f"raw/images/{item}.jpg", (images / f"{item}.jpg").read_bytes())

    with ThreadPoolExecutor(max_workers=8) as pool:
        for n, _ in enumerate(pool.map(copy, photo_items), start=1):
            if n % 500 == 0 or n == len(photo_items):
                tick("images", n, len(photo_items))

    for ds, lines in sorted(by_day.items()):
        out.put_bytes(f"raw/events/dt={ds}/events.jsonl", ("\n".join(lines) + "\n").encode())
    days = sorted(by_day)
    return ImportSummary(
        out=out.uri,
        items=len(photo_items),
        images=len(photo_items),
        users=len(users),
        events=len(rows),
        days=len(days),
        first_ds=days[0] if days else "",
        last_ds=days[-1] if days else "",
    )


@dataclass
class EventsImport:
    """What ``import_events`` wrote, and where the rows that will not make it went."""

    out: str
    items: int
    images: int
    events: int
    days: int
    first_ds: str
    last_ds: str
    unparsed_times: int  # written to the first day's log as they came: ingestion quarantines them
    items_without_image: int  # ingestion quarantines them as missing_image


def _read_table(path: Path, what: str) -> pd.DataFrame:
    import pandas as pd

    path = _require(Path(path), what)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path).astype(str).replace({"None": "", "nan": "", "NaT": ""})
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas' own errors name its internals; say which file
        raise SourceLayoutError(f"cannot read {path} as {what}: {str(exc)[:200]}") from None


def _columns(frame: pd.DataFrame, path: Path, wanted: dict[str, str]) -> None:
    for flag, column in wanted.items():
        if column not in frame.columns:
            raise SourceLayoutError(
                f"{path} has no column {column!r} (set it with {flag}); its columns: {', '.join(map(str, frame.columns))}"
            )


def parse_times(values: pd.Series, column: str) -> pd.Series:
    """ISO-8601 strings, or unix seconds / milliseconds (told apart by size), as UTC timestamps;
    values that parse as neither are NaT. Raises when none parses, naming the column and an example."""
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce")
    numeric = numbers.notna()
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if numeric.any():
        unit = "ms" if numbers[numeric].abs().median() > 1e11 else "s"
        out[numeric] = pd.to_datetime(numbers[numeric], unit=unit, utc=True, errors="coerce")
    if (~numeric).any():
        out[~numeric] = pd.to_datetime(values[~numeric], utc=True, errors="coerce", format="ISO8601")
    if len(values) and out.isna().all():
        raise SourceLayoutError(
            f"time column {column!r} does not parse: e.g. {values.iloc[0]!r}; use ISO-8601 or unix seconds/milliseconds"
        )
    return out


def import_events(
    events: Path,
    catalog: Path,
    images: Path,
    out: Lake,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str = "ts",
    event_col: str | None = None,
    default_event: str = "purchase",
    id_col: str = "item_id",
    category_col: str = "category",
    progress: Callable[[str, int, int], None] | None = None,
) -> EventsImport:
    """Bring your own data: an interactions file (CSV or Parquet) with user, item and time columns,
    a catalog CSV with an id and a category column (other columns kept as attributes), and a folder
    of images named by item id -> the raw zone, one events log per day.

    Nothing is dropped here: a row whose values are bad (an unknown item, a time that does not
    parse, an event type visrec does not know) is written as it came and quarantined, with its
    reason, by ``visrec ingest``. Whole-file problems (unreadable, a missing column, a time column
    where nothing parses) stop the import with one message."""
    import pandas as pd

    tick = progress or (lambda stage, done, total: None)
    images = _require(Path(images), "a folder of images named <item_id>.<ext>")
    frame = _read_table(Path(events), "the interactions table")
    wanted = {"--user-col": user_col, "--item-col": item_col, "--time-col": time_col}
    if event_col:
        wanted["--event-col"] = event_col
    _columns(frame, Path(events), wanted)
    items = _read_table(Path(catalog), "the catalog")
    _columns(items, Path(catalog), {"--id-col": id_col, "--category-col": category_col})

    times = parse_times(frame[time_col], time_col)
    parsed = times.notna()
    days = times[parsed].dt.strftime("%Y-%m-%d")
    first = days.min() if parsed.any() else None
    if first is None:
        raise SourceLayoutError(f"{events} holds no interactions")
    record = pd.DataFrame(
        {
            "user_id": frame[user_col],
            "item_id": frame[item_col],
            "event_type": frame[event_col] if event_col else default_event,
            "ts": times.dt.strftime("%Y-%m-%dT%H:%M:%SZ").where(parsed, frame[time_col]),
            "event_id": [f"import-{n}" for n in range(len(frame))],  # a repeated row is a real repeat
        }
    )
    record["dt"] = days.reindex(record.index).fillna(first)
    for ds, rows in record.groupby("dt", sort=True):
        lines = rows.drop(columns="dt").to_json(orient="records", lines=True)
        out.put_bytes(f"raw/events/dt={ds}/events.jsonl", lines.encode())

    columns = [id_col, category_col] + [c for c in items.columns if c not in (id_col, category_col)]
    catalog_out = items[columns].rename(columns={id_col: "item_id", category_col: "category"})
    out.put_bytes("raw/catalog/items.csv", catalog_out.to_csv(index=False, lineterminator="\n").encode())
    by_item = {p.stem: p for p in sorted(images.iterdir()) if p.is_file()}
    wanted_items = [i for i in catalog_out["item_id"] if i in by_item]
    for n, item in enumerate(wanted_items, start=1):
        out.put_bytes(f"raw/images/{item}{by_item[item].suffix.lower()}", by_item[item].read_bytes())
        if n % 500 == 0 or n == len(wanted_items):
            tick("images", n, len(wanted_items))
    all_days = sorted(set(record["dt"]))
    return EventsImport(
        out=out.uri,
        items=len(catalog_out),
        images=len(wanted_items),
        events=len(record),
        days=len(all_days),
        first_ds=all_days[0],
        last_ds=all_days[-1],
        unparsed_times=int((~parsed).sum()),
        items_without_image=len(catalog_out) - len(wanted_items),
    )

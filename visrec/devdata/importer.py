"""Map external data layouts onto visrec's raw contract.

The raw contract (see README): ``raw/catalog/items.csv`` (``item_id``, ``category``, optional
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

from visrec.errors import VisrecError
from visrec.store.lake import Lake

IMPORTERS = ("hm",)


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

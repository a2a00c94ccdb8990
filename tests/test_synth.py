from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict

import pytest
from PIL import Image

from visrec.devdata.synth import (
    CATEGORIES,
    COLOURS,
    EVENT_BAD_KINDS,
    IMAGE_BAD_KINDS,
    PATTERNS,
    ShopConfig,
    generate_shop,
)
from visrec.store.lake import Lake

SMALL = dict(users=150, items=120, days=5)


def _digest(lake: Lake) -> dict[str, str]:
    return {k: hashlib.sha256(lake.get_bytes(k)).hexdigest() for k in lake.list_keys("raw")}


def _events(lake: Lake) -> list[dict]:
    out = []
    for key in lake.list_keys("raw/events"):
        out += [json.loads(line) for line in lake.get_bytes(key).decode().splitlines()]
    return out


@pytest.fixture(scope="module")
def clean_shop(tmp_path_factory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("clean").as_uri())
    generate_shop(ShopConfig(**SMALL, seed=7), lake)
    return lake


@pytest.fixture(scope="module")
def dirty_shop(tmp_path_factory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("dirty").as_uri())
    generate_shop(ShopConfig(**SMALL, seed=7, corrupt_rate=0.03), lake)
    return lake


def test_same_seed_same_bytes_other_seed_other_bytes(clean_shop: Lake, tmp_path):
    again = Lake((tmp_path / "again").as_uri())
    generate_shop(ShopConfig(**SMALL, seed=7), again)
    assert _digest(again) == _digest(clean_shop)
    other = Lake((tmp_path / "other").as_uri())
    generate_shop(ShopConfig(**SMALL, seed=8), other)
    assert _digest(other) != _digest(clean_shop)


def test_catalog_names_category_but_not_colour_or_pattern(clean_shop: Lake):
    text = clean_shop.get_bytes("raw/catalog/items.csv").decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == SMALL["items"]
    assert {r["category"] for r in rows} == set(CATEGORIES) and len(CATEGORIES) >= 8
    lowered = text.lower()
    assert not any(word in lowered for word in [*COLOURS, *PATTERNS])
    truth = list(csv.DictReader(io.StringIO(clean_shop.get_bytes("truth/items.csv").decode())))
    assert {t["colour"] for t in truth} <= set(COLOURS) and len({t["pattern"] for t in truth}) > 3


def test_images_decode_to_rgb_of_the_configured_size(clean_shop: Lake):
    keys = clean_shop.list_keys("raw/images")
    assert len(keys) == SMALL["items"]
    modes = set()
    for key in keys:
        img = Image.open(io.BytesIO(clean_shop.get_bytes(key)))
        modes.add(img.mode)
        assert img.size == (64, 64)
    assert "RGB" in modes and len(modes) > 1  # other modes appear as in real catalogs


def test_no_purchase_without_an_earlier_view(clean_shop: Lake):
    events = _events(clean_shop)
    assert len(events) > 500
    first_view: dict[tuple[str, str], str] = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        pair = (e["user_id"], e["item_id"])
        if e["event_type"] == "view":
            first_view.setdefault(pair, e["ts"])
        else:
            assert pair in first_view and first_view[pair] <= e["ts"], e
    assert {e["event_type"] for e in events} == {"view", "click", "add_to_cart", "purchase"}


def test_items_arrive_over_time_and_some_are_cold(clean_shop: Lake):
    items = {
        r["item_id"]: r
        for r in csv.DictReader(io.StringIO(clean_shop.get_bytes("raw/catalog/items.csv").decode()))
    }
    days = sorted({r["added_date"] for r in items.values()})
    assert len(days) >= 4  # new items on most days
    first_event: dict[str, str] = {}
    for e in _events(clean_shop):
        first_event[e["item_id"]] = min(first_event.get(e["item_id"], "9"), e["ts"][:10])
    for item, ds in first_event.items():
        assert ds >= items[item]["added_date"]  # nobody sees an item before it arrives
    last = days[-1]
    cold = [i for i, r in items.items() if r["added_date"] == last]
    assert cold and all(first_event.get(i, last) >= last for i in cold)


def test_every_corruption_kind_is_produced_and_listed(dirty_shop: Lake, clean_shop: Lake):
    bad = [json.loads(x) for x in dirty_shop.get_bytes("truth/bad_records.jsonl").splitlines()]
    kinds = {b["kind"] for b in bad}
    assert kinds == set(IMAGE_BAD_KINDS) | set(EVENT_BAD_KINDS)
    clean_lines = set()
    for key in clean_shop.list_keys("raw/events"):
        clean_lines |= set(clean_shop.get_bytes(key).decode().splitlines())
    for b in bad:
        if b["kind"] in IMAGE_BAD_KINDS:
            data = dirty_shop.get_bytes(b["where"])
            if b["kind"] == "wrong_extension":
                assert b["where"].endswith(".jpg") and Image.open(io.BytesIO(data)).format == "PNG"
            elif b["kind"] == "decompression_bomb":
                with pytest.raises(Image.DecompressionBombError):
                    Image.open(io.BytesIO(data))
            else:
                with pytest.raises(Exception):  # noqa: B017 - any decoder error will do
                    Image.open(io.BytesIO(data)).load()
        else:
            lines = dirty_shop.get_bytes(b["where"]).decode().splitlines()
            assert b["line"] in lines
            if b["kind"] == "duplicate":
                assert lines.count(b["line"]) >= 2
            else:
                assert b["line"] not in clean_lines
    # Corruption adds bad lines; it never removes a valid one.
    dirty_lines: dict[str, int] = defaultdict(int)
    for key in dirty_shop.list_keys("raw/events"):
        for line in dirty_shop.get_bytes(key).decode().splitlines():
            dirty_lines[line] += 1
    assert all(dirty_lines[line] >= 1 for line in clean_lines)
    n_dirty = sum(dirty_lines.values())
    assert n_dirty == len(clean_lines) + sum(b["kind"] in EVENT_BAD_KINDS for b in bad)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="users"):
        ShopConfig(users=0)
    with pytest.raises(ValueError, match="corrupt rate"):
        ShopConfig(corrupt_rate=0.9)


def test_taste_drives_behaviour(clean_shop: Lake):
    """Users buy what matches their true taste far more than a random item would."""
    users = {u["user_id"]: u for u in map(json.loads, clean_shop.get_bytes("truth/users.jsonl").splitlines())}
    truth = {
        r["item_id"]: r for r in csv.DictReader(io.StringIO(clean_shop.get_bytes("truth/items.csv").decode()))
    }

    def aff(u, i):
        t = truth[i]
        return u["category"][t["category"]] + u["colour"][t["colour"]] + u["pattern"][t["pattern"]]

    bought = [(e["user_id"], e["item_id"]) for e in _events(clean_shop) if e["event_type"] == "purchase"]
    mean_bought = sum(aff(users[u], i) for u, i in bought) / len(bought)
    all_items = list(truth)
    mean_random = sum(aff(users[u], all_items[k % len(all_items)]) for k, (u, _) in enumerate(bought)) / len(
        bought
    )
    assert mean_bought > mean_random + 1.0

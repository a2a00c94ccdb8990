from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from visrec.devdata.importer import SourceLayoutError, import_hm
from visrec.store.lake import Lake


def _events(lake: Lake) -> list[dict]:
    out = []
    for key in lake.list_keys("raw/events"):
        out += [json.loads(x) for x in lake.get_bytes(key).decode().splitlines()]
    return out


def _tiny_hm(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "articles.csv").write_text(
        "article_id,product_type_name,product_group_name,colour_group_name,graphical_appearance_name\n"
        "0108775015,Vest top,Garment Upper body,Black,Solid\n"
        "0200000001,Trousers,Garment Lower body,Blue,Denim\n"
        "0300000001,Sock,Socks & Tights,White,Solid\n"  # no photo: not in the catalog
    )
    (root / "transactions.csv").write_text(
        "t_dat,customer_id,article_id,price,sales_channel_id\n"
        "2020-01-01,c1,0108775015,0.02,2\n"
        "2020-01-01,c1,0108775015,0.02,2\n"  # bought twice the same day: two real purchases
        "2020-01-03,c2,0200000001,0.05,1\n"
    )
    for item in ("0108775015", "0200000001"):
        Image.new("RGB", (96, 144), "white").save(root / "images" / f"{item}.jpg")
    return root


def test_tiny_hm_layout(tmp_path: Path):
    lake = Lake((tmp_path / "lake").as_uri())
    summary = import_hm(_tiny_hm(tmp_path / "hm"), lake)
    assert (summary.items, summary.users, summary.events, summary.days) == (2, 2, 3, 2)
    events = _events(lake)
    assert [e["event_type"] for e in events] == ["purchase"] * 3
    assert len({e["event_id"] for e in events}) == 3  # same-day repeats stay distinct
    assert events[0]["item_id"] == "0108775015" and events[0]["ts"] == "2020-01-01T00:00:00Z"
    catalog = list(csv.DictReader(io.StringIO(lake.get_bytes("raw/catalog/items.csv").decode())))
    assert [(r["item_id"], r["category"]) for r in catalog] == [
        ("0108775015", "Vest top"),
        ("0200000001", "Trousers"),
    ]
    assert lake.list_keys("raw/images") == ["raw/images/0108775015.jpg", "raw/images/0200000001.jpg"]


def test_missing_files_are_named(tmp_path: Path):
    (tmp_path / "hm").mkdir()
    with pytest.raises(SourceLayoutError, match="articles.csv not found"):
        import_hm(tmp_path / "hm", Lake((tmp_path / "lake").as_uri()))


def test_real_hm_sample(hm_sample: Path, tmp_path: Path):
    lake = Lake((tmp_path / "lake").as_uri())
    summary = import_hm(hm_sample, lake)
    assert (summary.events, summary.users, summary.items, summary.images) == (31662, 1364, 24717, 24717)
    events = _events(lake)
    assert len(events) == 31662 and {e["event_type"] for e in events} == {"purchase"}
    assert len({e["user_id"] for e in events}) == 1364
    assert len(lake.list_keys("raw/images")) == 24717
    assert all(len(e["item_id"]) == 10 and e["item_id"].isdigit() for e in events)
    assert any(e["item_id"].startswith("0") for e in events)

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


@pytest.mark.integration
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


def _own_shop(root: Path) -> tuple[Path, Path, Path]:
    """A shop of one's own: interactions with unix-second times (one unparseable, one on an unknown
    item), a catalog whose columns have other names (one item without a category), images by id."""
    images = root / "photos"
    images.mkdir(parents=True)
    colours = {"a1": "red", "a2": "blue", "a3": "green", "a4": "yellow", "a5": "white"}
    for item, colour in colours.items():
        Image.new("RGB", (40, 30), colour).save(images / f"{item}.png")
    (root / "catalog.csv").write_text(
        "sku,kind,colour\na1,shirt,red\na2,shirt,blue\na3,hat,green\na4,hat,yellow\na5,,white\n"
    )
    day = 1_793_491_200  # 2026-11-01T00:00:00Z
    rows = ["customer,sku,when"]
    for d in range(3):
        for n in range(12):
            rows.append(f"c{n % 6},a{1 + (n + d) % 4},{day + d * 86400 + n * 3600}")
    rows += [f"c1,a5,{day + 3600}", "c2,a1,not-a-time", f"c3,zz9,{day + 7200}"]
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    return root / "interactions.csv", root / "catalog.csv", images


@pytest.mark.integration
def test_import_events_then_ingest_the_range(tmp_path, monkeypatch):
    """`visrec import events` with mapped columns, then `visrec ingest --start --end`: every day's
    events arrive, and each bad row is in quarantine with its reason (nothing silently dropped)."""
    from visrec.app.cli import main
    from visrec.settings import Settings

    events, catalog, images = _own_shop(tmp_path / "mine")
    monkeypatch.setenv("VISREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VISREC_ERROR_BUDGET", "0.5")
    argv = [
        "import",
        "events",
        str(events),
        "--catalog",
        str(catalog),
        "--images",
        str(images),
        "--user-col",
        "customer",
        "--item-col",
        "sku",
        "--time-col",
        "when",
        "--id-col",
        "sku",
        "--category-col",
        "kind",
        "-q",
    ]
    assert main(argv) == 0
    assert main(["ingest", "--start", "2026-11-01", "--end", "2026-11-03", "-q"]) == 0
    lake = Lake.from_settings(Settings.from_env())
    valid = {ds: lake.read_table("events", ds).num_rows for ds in ("2026-11-01", "2026-11-02", "2026-11-03")}
    assert valid == {"2026-11-01": 12, "2026-11-02": 12, "2026-11-03": 12}
    reasons = lake.read_table("quarantine/events", "2026-11-01").column("reason").to_pylist()
    # a5 has no category, so its event is on an item the catalog does not have; zz9 is nobody's.
    assert sorted(reasons) == ["bad_timestamp", "unknown_item", "unknown_item"]
    catalog_bad = lake.read_table("quarantine/catalog", "2026-11-01").to_pylist()
    assert [(r["reason"], "a5" in r["detail"]) for r in catalog_bad] == [("missing_field", True)]
    assert lake.read_table("staging_images", "2026-11-03").num_rows == 4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"user_col": "who"}, "has no column 'who' (set it with --user-col)"),
        ({"time_col": "customer"}, "time column 'customer' does not parse: e.g. 'c0'"),
        ({"category_col": "type"}, "has no column 'type' (set it with --category-col)"),
    ],
)
def test_import_events_names_the_column_that_is_wrong(tmp_path, change, message):
    from visrec.devdata.importer import import_events

    events, catalog, images = _own_shop(tmp_path / "mine")
    options = {
        "user_col": "customer",
        "item_col": "sku",
        "time_col": "when",
        "id_col": "sku",
        "category_col": "kind",
        **change,
    }
    with pytest.raises(SourceLayoutError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_events(events, catalog, images, Lake((tmp_path / "lake").as_uri()), **options)
    assert not (tmp_path / "lake").exists()  # nothing written

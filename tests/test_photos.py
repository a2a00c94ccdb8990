"""User photos: metadata stripped, quarantine, retention, recognition, retrieval, upload-only users."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import VISION_DAYS
from visrec.ingest.user_photos import STORE_PREFIX, ingest_user_photos
from visrec.store.lake import Lake
from visrec.store.tables import photo_profiles
from visrec.vision.photos import recognise_user_photos

DAYS = VISION_DAYS


def _truth(lake: Lake, name: str) -> list[dict]:
    return [json.loads(line) for line in lake.get_bytes(f"truth/{name}").decode().splitlines()]


@pytest.fixture
def shop(photo_shop):
    """The session's shop (many uploaders and upload-only users, each day's uploads ingested)."""
    return photo_shop


@pytest.fixture(scope="module")
def recognised(vision_shop):
    """The session's image model (trained on the catalog, the catalog embedded), the photos recognised."""
    settings, lake = vision_shop.settings, vision_shop.lake
    model, version = vision_shop.model, vision_shop.result.version
    photos, recs = recognise_user_photos(settings, lake, DAYS[-1], model, version, k=10)
    return settings, lake, photos, recs


def test_gps_exif_never_reaches_storage(shop):
    _, lake = shop
    raw = next(t for t in _truth(lake, "user_photos.jsonl") if t["key"].endswith(".jpg") and not t["corrupt"])
    assert Image.open(io.BytesIO(lake.get_bytes(raw["key"]))).getexif().get_ifd(0x8825)  # the upload has GPS
    stored = lake.get_bytes(f"{STORE_PREFIX}/ds={raw['ds']}/{raw['user_id']}/{raw['photo_id']}.png")
    image = Image.open(io.BytesIO(stored))
    assert len(image.getexif()) == 0 and "exif" not in image.info
    assert b"eXIf" not in stored and b"Exif" not in stored and b"PhoneMaker" not in stored


def test_corrupt_uploads_are_quarantined_with_their_reason(shop):
    _, lake = shop
    bad = [b for b in _truth(lake, "bad_records.jsonl") if b["where"].startswith("raw/user_images/")]
    assert bad, "the shop injected no bad uploads"
    quarantine = lake.read_table("quarantine/user_photos").to_pylist()
    reasons = {q["record"]: q["reason"] for q in quarantine}
    for record in bad:
        assert reasons.get(record["where"]) == record["kind"]
    truth = _truth(lake, "user_photos.jsonl")
    staged = lake.read_table("staging_user_photos").num_rows
    assert staged + len(bad) == len(truth)  # nothing lost silently


def test_retention_deletes_old_photos_and_their_rows(shop, tmp_path):
    settings, lake = shop
    short = settings.with_overrides(photo_retention_days=1)
    copy = Lake((tmp_path / "lake").as_uri())
    for key in lake.list_keys("raw"):
        copy.put_bytes(key, lake.get_bytes(key))
    for ds in DAYS:
        ingest_user_photos(short, copy, ds)
    assert copy.list_dirs(STORE_PREFIX) == [f"ds={DAYS[-1]}"]
    assert copy.partitions("staging_user_photos") == [DAYS[-1]]


def test_photos_are_recognised_with_the_model(recognised):
    _, lake, photos, recs = recognised
    truth = {(t["user_id"], t["photo_id"]): t for t in _truth(lake, "user_photos.jsonl") if not t["corrupt"]}
    assert photos.num_rows == len(truth)
    top1 = [
        r["top_categories"][0]["category"] == truth[(r["user_id"], r["photo_id"])]["category"]
        for r in photos.to_pylist()
    ]
    assert np.mean(top1) > 0.45  # chance is 1/8; the same model gets ~0.99 on catalog images
    assert recs.num_rows > 0 and set(recs.column("rank").to_pylist()) <= set(range(1, 11))


def test_a_photo_of_an_item_finds_that_item(recognised):
    # Only photos taken today get photo_recommendations. The photographed item is one of ~3 catalog items
    # with the same category, colour and pattern (chance of the top 5: 5/400). bench/run.py photos
    # measures the rate at demo scale.
    _, lake, _, recs = recognised
    truth = {(t["user_id"], t["photo_id"]): t["item_id"] for t in _truth(lake, "user_photos.jsonl")}
    top5: dict[tuple[str, str], list[str]] = {}
    for r in recs.to_pylist():
        if r["rank"] <= 5:
            top5.setdefault((r["user_id"], r["photo_id"]), []).append(r["item_id"])
    hits = [truth[key] in items for key, items in top5.items()]
    assert len(hits) >= 10
    assert np.mean(hits) > 0.5, f"photographed item in the top 5 for {sum(hits)}/{len(hits)} photos"


def test_upload_only_users_get_better_than_popular(recognised):
    from visrec.models.topk import topk_scores
    from visrec.recsys.score import PhotoBlend
    from visrec.store.tables import item_embeddings

    settings, lake, _, _ = recognised
    users, vectors, _ = photo_profiles(lake, DAYS[-1])
    item_ids, features, _ = item_embeddings(lake, DAYS[-1])
    only = {t["user_id"]: set(t["would_buy"]) for t in _truth(lake, "upload_only_users.jsonl")}
    rows = [k for k, u in enumerate(users) if u in only]
    assert len(rows) >= 20
    blend = PhotoBlend(None, vectors, np.ones(len(users), bool), features, settings.photo_weight)
    ids, _ = topk_scores(blend.score(np.array(rows)), 20)
    photo_recall = np.mean(
        [
            len({item_ids[j] for j in ids[n]} & only[users[r]]) / len(only[users[r]])
            for n, r in enumerate(rows)
        ]
    )
    counts: dict[str, int] = {}
    for key in lake.list_keys("raw/events"):
        for line in lake.get_bytes(key).decode().splitlines():
            try:
                item = json.loads(line)["item_id"]
            except (ValueError, KeyError):
                continue  # the shop's injected bad lines
            counts[item] = counts.get(item, 0) + 1
    popular = set(sorted(counts, key=lambda i: -counts[i])[:20])
    popular_recall = np.mean([len(popular & only[users[r]]) / len(only[users[r]]) for r in rows])
    assert photo_recall > popular_recall + 0.05, (photo_recall, popular_recall)


def test_a_day_without_retained_photos_writes_empty_tables(recognised):
    """A shop without uploads (most brought-in data) still gets its tables: empty, with the model's
    embedding size, so publishing and the warehouse work."""
    from visrec.vision.embed import load_cnn

    settings, lake, _, _ = recognised
    model, version = load_cnn()
    photos, recs = recognise_user_photos(settings, lake, "2027-06-01", model, version)
    assert photos.num_rows == recs.num_rows == 0
    stored = lake.read_table("user_photos", "2027-06-01")
    assert stored.num_rows == 0 and stored.schema.field("embedding").type.list_size == model.embedding_dim


def test_photo_evidence_does_not_depend_on_the_order_sums_run_in():
    # An image model early in training puts every item close to every photo: standardising those
    # similarities amplifies float rounding, and a Spark task (BLAS on one thread) must still publish
    # the scores one process does. Permuting the embedding dimensions sums the same products in
    # another order.
    from visrec.recsys.score import PhotoBlend

    rng = np.random.default_rng(7)
    centre = rng.normal(size=128)

    def near_centre(n: int) -> np.ndarray:
        x = centre + 1e-3 * rng.normal(size=(n, 128))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    items, photos = near_centre(400), near_centre(6)
    behaviour = rng.normal(size=(6, 400)).astype(np.float32)

    class Behaviour:
        def score(self, userids: np.ndarray) -> np.ndarray:
            return behaviour[userids]

    perm, users = rng.permutation(128), np.arange(6)
    scores = [
        PhotoBlend(Behaviour(), p, np.ones(6, bool), f, 1.0).score(users)
        for p, f in ((photos, items), (photos[:, perm], items[:, perm]))
    ]
    assert not np.allclose(scores[0], behaviour)  # the photos moved the scores
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-5, atol=1e-6)
    assert (np.argsort(-scores[0], axis=1)[:, :20] == np.argsort(-scores[1], axis=1)[:, :20]).all()

from __future__ import annotations

import pyarrow as pa
import pytest

from visrec.store.lake import Lake, LakeError, PartitionNotFound, check_key
from visrec.store.schemas import SchemaError


def _recs(users: list[str], score: float = 1.0) -> pa.Table:
    n = len(users)
    return pa.table(
        {
            "user_id": users,
            "rank": list(range(1, n + 1)),
            "item_id": [f"i{k}" for k in range(n)],
            "score": [score] * n,
            "source": ["mf"] * n,
            "reason": ["model"] * n,
            "model_version": ["1"] * n,
        }
    )


def test_bytes_round_trip_list_and_delete(lake: Lake):
    lake.put_bytes("raw/images/a.jpg", b"abc")
    lake.put_bytes("raw/images/sub/b.png", b"")
    assert lake.get_bytes("raw/images/a.jpg") == b"abc"
    assert lake.get_bytes("raw/images/sub/b.png") == b""
    assert lake.list_keys("raw/images") == ["raw/images/a.jpg", "raw/images/sub/b.png"]
    assert lake.exists("raw/images/a.jpg") and not lake.exists("raw/images/c.jpg")
    lake.delete("raw/images/sub")
    assert lake.list_keys("raw") == ["raw/images/a.jpg"]
    with pytest.raises(LakeError, match="not found"):
        lake.get_bytes("raw/images/missing.jpg")


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "a/../../b", "a//b", "a/./b", "a\\b", "a\nb", "C:/x"]
)
def test_bad_keys_are_refused(lake: Lake, key: str):
    with pytest.raises(LakeError):
        lake.put_bytes(key, b"x")
    with pytest.raises(LakeError):
        check_key(key)


def test_table_round_trip_and_rerun_replaces(lake: Lake):
    lake.write_table("recommendations", "2026-01-01", _recs(["u1", "u2"]))
    lake.write_table("recommendations", "2026-01-02", _recs(["u3"]))
    # A rerun of the same ds replaces its partition: no duplicates.
    lake.write_table("recommendations", "2026-01-01", _recs(["u1", "u2"], score=2.0))
    assert lake.partitions("recommendations") == ["2026-01-01", "2026-01-02"]
    day1 = lake.read_table("recommendations", "2026-01-01")
    assert day1.num_rows == 2 and set(day1.column("score").to_pylist()) == {2.0}
    assert day1.column("ds").to_pylist() == ["2026-01-01"] * 2
    assert lake.read_table("recommendations").num_rows == 3
    assert lake.read_table("recommendations", ["2026-01-02"]).column("user_id").to_pylist() == ["u3"]
    assert lake.read_table("recommendations").schema.field("rank").type == pa.int16()


def test_old_versions_are_garbage_collected(lake: Lake):
    for k in range(4):
        lake.write_table("recommendations", "2026-01-01", _recs(["u1"], score=float(k)))
    versions = lake.list_dirs("published/recommendations/ds=2026-01-01")
    assert len(versions) == 2
    assert lake.read_table("recommendations", "2026-01-01").column("score").to_pylist() == [3.0]


def test_missing_partition_and_unknown_table(lake: Lake):
    assert lake.manifest("recommendations", "2026-01-01") is None
    with pytest.raises(PartitionNotFound):
        lake.read_table("recommendations", "2026-01-01")
    assert lake.read_table("recommendations").num_rows == 0
    with pytest.raises(KeyError, match="unknown table"):
        lake.read_table("nope", "2026-01-01")
    with pytest.raises(LakeError, match="ds must be a date"):
        lake.write_table("recommendations", "2026/01/01", _recs(["u1"]))


def test_schema_is_enforced(lake: Lake):
    with pytest.raises(SchemaError, match="missing columns"):
        lake.write_table("recommendations", "2026-01-01", _recs(["u1"]).drop_columns(["score"]))
    bad = _recs(["u1"]).set_column(0, "user_id", pa.array([None], pa.string()))
    with pytest.raises(SchemaError, match="nulls in a required column"):
        lake.write_table("recommendations", "2026-01-01", bad)
    assert lake.partitions("recommendations") == []


@pytest.mark.parametrize("fail_on", ["part-0.parquet", "_CURRENT.json"])
def test_failure_mid_publish_keeps_previous_version(lake: Lake, monkeypatch, fail_on: str):
    lake.write_table("recommendations", "2026-01-01", _recs(["u1", "u2"]))
    real_put = Lake.put_bytes

    def failing_put(self, key, data):
        if key.endswith(fail_on):
            if fail_on.endswith(".parquet"):
                real_put(self, key, data[: len(data) // 2])  # a half-written data file
            raise LakeError("injected failure")
        real_put(self, key, data)

    monkeypatch.setattr(Lake, "put_bytes", failing_put)
    with pytest.raises(LakeError, match="injected"):
        lake.write_table("recommendations", "2026-01-01", _recs(["u9"] * 5))
    monkeypatch.setattr(Lake, "put_bytes", real_put)
    previous = lake.read_table("recommendations", "2026-01-01")
    assert previous.column("user_id").to_pylist() == ["u1", "u2"]


def test_embedding_tables_take_any_fixed_dimension(lake: Lake):
    emb = pa.FixedSizeListArray.from_arrays(pa.array([0.1, 0.2, 0.3, 0.4], pa.float32()), 2)
    data = pa.table(
        {"item_id": ["a", "b"], "embedding": emb, "model_version": ["3", "3"], "classifier_dims": [2, 2]}
    )
    lake.write_table("item_embeddings", "2026-01-01", data)
    back = lake.read_table("item_embeddings", "2026-01-01")
    assert back.column("embedding").type == pa.list_(pa.float32(), 2)
    assert back.column("embedding").to_pylist()[1] == pytest.approx([0.3, 0.4])
    with pytest.raises(SchemaError, match="fixed_size_list"):
        lake.write_table(
            "item_embeddings",
            "2026-01-02",
            data.set_column(1, "embedding", pa.array([[0.1], [0.2]], pa.list_(pa.float64()))),
        )


def test_unreachable_s3_is_a_clear_error():
    lake = Lake("s3://nobucket/x", s3_endpoint="http://127.0.0.1:9")
    with pytest.raises(LakeError, match="s3://nobucket/x/raw/a"):
        lake.put_bytes("raw/a", b"x")


def test_unsupported_uri():
    with pytest.raises(LakeError, match="unsupported lake URI"):
        Lake("ftp://host/x")


@pytest.mark.parametrize("ds", ["２０２６-11-01", "2026-11-0١", "2026-02-30", "2026-1-01", "2026-11-01\n"])
def test_check_ds_takes_real_dates_in_ascii_digits_only(ds):
    from visrec.store.lake import check_ds

    with pytest.raises(LakeError):
        check_ds(ds)


def test_differing_tables_ignores_float_rounding_but_not_other_items():
    """How two deployments' outputs are compared (the cluster test): scores may differ in their last
    bits, nothing else may."""
    import numpy as np
    import pyarrow as pa

    from visrec.devdata.trial import differing_tables

    recs = pa.table({"user_id": ["u1", "u1"], "rank": [1, 2], "item_id": ["a", "b"], "score": [2.5, 1.25]})
    nudged = recs.set_column(3, "score", pa.array(np.nextafter(np.array([2.5, 1.25]), 3.0)))
    other = recs.set_column(2, "item_id", pa.array(["a", "c"]))
    off = recs.set_column(3, "score", pa.array([2.5, 1.3]))
    assert differing_tables({"recommendations": recs}, {"recommendations": nudged}) == []
    assert differing_tables({"recommendations": recs}, {"recommendations": other}) == ["recommendations"]
    assert differing_tables({"recommendations": recs}, {"recommendations": off}) == ["recommendations"]
    assert differing_tables({"recommendations": recs}, {}) == ["recommendations"]

"""visrec.api: light to import, documented, its documented example runs, bad input is refused clearly, and
the names moved by the last restructure still resolve with a warning naming the new home."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from visrec import api


def test_importing_the_api_loads_no_heavy_library_and_every_name_is_documented():
    code = (
        "import sys, visrec.api as a; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'pyspark', 'airflow', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
    assert len(api.__all__) >= 8
    undocumented = [name for name in api.__all__ if not (getattr(api, name).__doc__ or "").strip()]
    assert undocumented == []


@pytest.mark.integration
def test_the_documented_example_runs(tmp_path):
    page = (REPO / "docs" / "reference" / "python-api.md").read_text()
    block = re.search(
        r"<!-- api-example:start -->\n```python\n(.*?)```\n<!-- api-example:end -->", page, re.S
    )
    assert block, "docs/reference/python-api.md has no api example block"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISREC_")}
    env["VISREC_HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", block.group(1)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    ndcg = {line.split()[0]: float(line.split()[2]) for line in lines if "NDCG@10" in line}
    assert set(ndcg) == {"popularity", "item-CF", "BPR-MF"}
    # The data has structure that popularity cannot see: a personal model must beat it.
    assert max(ndcg["item-CF"], ndcg["BPR-MF"]) > ndcg["popularity"]
    assert any(line.startswith("selected {") for line in lines)


def test_split_per_user_holds_out_a_share_of_each_user_and_never_trains_on_it():
    ratings = pd.DataFrame(
        {
            "user_id": ["a"] * 8 + ["b"] * 4 + ["c"],
            "item_id": [str(i) for i in range(8)] * 1 + ["0", "1", "2", "3", "5"],
        }
    )
    split = api.split_per_user(ratings, test_share=0.25, seed=3)
    train = split.train.user_items.toarray()
    assert [len(r) for r in split.relevant] == [2, 1, 0]  # c's only item stays for training
    for user, held in enumerate(split.relevant):
        assert all(train[user, item] == 0 for item in held)
    assert train.sum() == len(ratings) - 3
    again = api.split_per_user(ratings, test_share=0.25, seed=3)
    assert again.relevant == split.relevant
    # Splitting training data again (a validation split) leaves it as it was.
    before = split.train.user_items.toarray()
    api.split_per_user(split.train, test_share=0.5, seed=1)
    assert (split.train.user_items.toarray() == before).all()


def test_training_data_refuses_missing_columns_and_unknown_ids():
    frame = pd.DataFrame({"user": ["u1"], "item": ["i1"]})
    with pytest.raises(ValueError, match="no column 'user_id'"):
        api.training_data(frame)
    with pytest.raises(ValueError, match="outside user_ids/item_ids"):
        api.training_data(frame, user_col="user", item_col="item", item_ids=["i2"])
    data = api.training_data(frame, user_col="user", item_col="item")
    assert data.user_ids == ["u1"] and data.user_items.toarray().tolist() == [[1.0]]


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("visrec.recommenders", "ItemCF", "visrec.recsys.baselines"),
        ("visrec.images", "fit_square", "visrec.ingest.images"),
        ("visrec.evaluate", "ndcg_at_k", "visrec.recsys.metrics"),
        ("visrec.vision", "CNNConfig", "visrec.vision.train"),
        ("visrec.recsys", "Split", "visrec.recsys.data"),
    ],
)
def test_moved_names_still_resolve_with_a_warning_naming_the_new_home(old, name, new):
    module = importlib.import_module(old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = getattr(module, name)
    assert found is getattr(importlib.import_module(new), name)
    assert any(
        issubclass(w.category, DeprecationWarning) and f"{new}.{name}" in str(w.message) for w in caught
    )
    with pytest.raises(AttributeError):
        _ = module.NoSuchName


@pytest.mark.integration
def test_an_image_model_trains_on_a_folder_and_embeds(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for category, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (tmp_path / category).mkdir()
        for n in range(12):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / category / f"{category}{n}.png")
    images = api.load_images(tmp_path, size=32)
    assert len(images.item_ids) == 24 and images.pixels.shape == (24, 32, 32, 3)
    settings = api.Settings(home=tmp_path / "home")
    result = api.train_image_model(images, settings, epochs=2, width=8, batch_size=8)
    vectors = api.embed_images(result.model, images.pixels)
    assert vectors.shape[0] == 24 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    (tmp_path / "red" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="could not be read, e.g. broken"):
        api.load_images(tmp_path, size=32)

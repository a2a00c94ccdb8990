"""The contrastive bench: `python bench/run.py contrastive`. See :func:`run`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchkit import Figures, figure


def run() -> Figures:
    """The image model's contrastive weight (``CNNConfig.contrastive_weight``) on small catalogs, where
    it competes hardest with the category loss: two 400-item synthetic shops (seed 5, the tests'
    catalog, and seed 11), 30 epochs (the nightly default), weights 0.2, 0.35 (the default) and 0.5:
    held-out category accuracy, and how often a shopper's photo of one of 120 items finds that item
    first among the catalog (both embeddings, as similar items compare them, on the whole photo)."""
    import numpy as np

    from visrec.devdata.synth import ShopConfig, generate_shop, shopper_photos
    from visrec.ingest.catalog_images import ingest_images
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import load_staged_images
    from visrec.vision.embed import embed_pixels
    from visrec.vision.train import CNNConfig, train_cnn

    out: Figures = {}
    for seed in (5, 11):
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(home=Path(tmp))
            lake = Lake.from_settings(settings)
            shop = generate_shop(ShopConfig(users=20, items=400, days=1, seed=seed), lake)
            ingest_images(settings, lake, shop.last_ds)
            images = load_staged_images(lake, shop.last_ds)
            for weight in (0.2, 0.35, 0.5):
                config = CNNConfig.from_settings(
                    settings,
                    epochs=30,
                    patience=30,
                    contrastive_weight=weight,
                    register=False,
                    max_minutes=None,
                )
                result = train_cnn(settings, shop.last_ds, lake=lake, config=config)
                photos = shopper_photos(images.pixels[:120], result.model.image_size, seed=3)
                catalog = embed_pixels(result.model, images.pixels)
                first = (embed_pixels(result.model, photos) @ catalog.T).argmax(1) == np.arange(120)
                key = f"contrastive.shop{seed}.weight_{str(weight).replace('.', '_')}"
                note = f"400-item shop (seed {seed}), 30 epochs, contrastive weight {weight}"
                out[f"{key}.held_out_accuracy"] = figure(
                    round(result.metrics["held_out_accuracy"], 3), "accuracy", note
                )
                out[f"{key}.photo_first_hit"] = figure(
                    round(float(first.mean()), 3), "rate", note + "; 120 shopper photos, item found first"
                )
    return out

"""The gan_hm bench: `python bench/run.py gan_hm`. See :func:`run`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchkit import CACHE, HERE, HM_SAMPLE, Figures, figure


def run() -> Figures:
    """The conditional GAN on hm-sample's product photos (64x64, 20-minute budget), judged by the cnn
    bench's image model (run it first): the Frechet ratio, class consistency over the product types
    beside the image model's accuracy on the real photos, wall time. Samples of the 12 most common
    product types are kept as bench/gan_hm.png."""
    from collections import Counter

    import keras

    import visrec.models.cnn  # noqa: F401  (registers the image model's classes with Keras)
    from visrec.devdata.importer import import_hm
    from visrec.generation.train import GANConfig, sample_grid, train_gan
    from visrec.ingest.catalog_images import ingest_images
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.store.tables import load_staged_images

    judge = CACHE / "hm_cnn.keras"
    if not (HM_SAMPLE / "articles.csv").exists() or not judge.exists():
        print("gan_hm: needs hm-sample and the cnn bench's image model; skipped", file=sys.stderr)
        return {}
    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), error_budget=0.5)
        lake = Lake.from_settings(settings)
        import_hm(HM_SAMPLE, lake)
        ds = "2026-11-01"
        ingest_images(settings, lake, ds)
        cnn = keras.models.load_model(judge)
        config = GANConfig.from_settings(settings, max_minutes=20, register=False)
        gan = train_gan(settings, ds, lake=lake, cnn=cnn, config=config)
        common = [name for name, _ in Counter(load_staged_images(lake, ds).categories).most_common(12)]
        grid = sample_grid(gan.model, classes=[gan.class_names.index(c) for c in common])
        (HERE / "gan_hm.png").write_bytes(grid)
        note = (
            f"hm-sample, {len(gan.class_names)} product types, 64x64, {gan.metrics['epochs_run']:.0f} epochs "
            f"in {gan.metrics['train_seconds'] / 60:.1f} min; judge: the cnn bench's model; rows of "
            f"bench/gan_hm.png: {', '.join(common)}"
        )
        for key in (
            "frechet_ratio",
            "frechet_distance",
            "frechet_real_vs_real",
            "class_consistency",
            "cnn_accuracy_on_real",
            "consistency_over_real_accuracy",
            "train_seconds",
        ):
            out[f"gan.hm.{key}"] = figure(round(gan.metrics[key], 4), key, note)
    return out

"""The gan_hm bench: `python bench/run.py gan_hm`. See :func:`run`."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from benchkit import CACHE, HERE, HM_SAMPLE, Figures, figure


def run() -> Figures:
    """The conditional GAN on hm-sample's product photos (64x64) at the nightly budget
    (``VISREC_GAN_MINUTES``, default 10) and defaults, judged by the cnn bench's image model (run it
    first): the Frechet ratio, class consistency over the product types beside the image model's
    accuracy on the real photos, wall time. Then the same training without the generator's moving
    average (``gan.hm.no_ema.*``), the remedy's effect at the same budget. Samples of the 12 most
    common product types (the defaults') are kept as bench/gan_hm.png."""
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
        config = GANConfig.from_settings(settings, register=False)
        gan = train_gan(settings, ds, lake=lake, cnn=cnn, config=config)
        common = [name for name, _ in Counter(load_staged_images(lake, ds).categories).most_common(12)]
        grid = sample_grid(gan.model, classes=[gan.class_names.index(c) for c in common])
        (HERE / "gan_hm.png").write_bytes(grid)
        plain = train_gan(settings, ds, lake=lake, cnn=cnn, config=dataclasses.replace(config, ema_decay=0.0))
    keys = (
        "frechet_ratio",
        "frechet_distance",
        "frechet_real_vs_real",
        "class_consistency",
        "cnn_accuracy_on_real",
        "consistency_over_real_accuracy",
        "train_seconds",
    )
    for prefix, result in (("gan.hm", gan), ("gan.hm.no_ema", plain)):
        note = (
            f"hm-sample, {len(result.class_names)} product types, 64x64, {config.max_minutes:g}-minute budget, "
            f"{result.metrics['epochs_run']:.0f} epochs in {result.metrics['train_seconds'] / 60:.1f} min, "
            f"generator moving average {'off' if result is plain else config.ema_decay}; judge: the cnn bench's "
            f"model; rows of bench/gan_hm.png: {', '.join(common)}"
        )
        for key in keys:
            out[f"{prefix}.{key}"] = figure(round(result.metrics[key], 4), key, note)
    return out

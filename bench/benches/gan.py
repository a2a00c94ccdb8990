"""The gan bench: `python bench/run.py gan`. See :func:`run`."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchkit import GAN_KEYS, Figures, figure

GAN_SEEDS = (42, 1, 2, 3)


def run() -> Figures:
    """The conditional GAN on the demo-scale synthetic shop at the demo's settings (64x64, the demo's
    GAN budget), trained once per seed in GAN_SEEDS (a single short GAN run is a noisy draw) and judged
    by one image model trained on the same images (3-minute budget): the Frechet ratio (generated vs
    real over real vs real) and class consistency beside the image model's accuracy on real images,
    as the mean over the seeds, with the lowest consistency ratio. The first seed's sample grid is
    kept as bench/gan_synthetic.png."""
    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.devdata.trial import DEMO
    from visrec.generation.train import GANConfig, train_gan
    from visrec.ingest.catalog_images import ingest_images
    from visrec.settings import Settings
    from visrec.store.lake import Lake
    from visrec.vision.train import CNNConfig, train_cnn

    out: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        lake = Lake.from_settings(settings)
        shop = generate_shop(ShopConfig(), lake)
        ingest_images(settings, lake, shop.last_ds)
        cnn = train_cnn(
            settings,
            shop.last_ds,
            lake=lake,
            config=CNNConfig.from_settings(settings, max_minutes=3, register=False),
        )
        runs = []
        for seed in GAN_SEEDS:
            gan = train_gan(
                Settings(home=Path(tmp), seed=seed),
                shop.last_ds,
                lake=lake,
                cnn=cnn.model,
                config=GANConfig.from_settings(settings, max_minutes=DEMO["gan_max_minutes"], register=False),
            )
            if not runs:
                (Path(__file__).parent / "gan_synthetic.png").write_bytes(gan.samples)
            runs.append(gan.metrics)
            print(
                f"gan seed {seed}: " + " ".join(f"{k}={v:.4g}" for k, v in gan.metrics.items()),
                file=sys.stderr,
            )
        ratios = [m["consistency_over_real_accuracy"] for m in runs]
        note = (
            f"synthetic shop {shop.items} items, 64x64, {DEMO['gan_max_minutes']:g}-minute budget, mean of "
            f"{len(runs)} seeds ({GAN_SEEDS}); "
            f"consistency/real accuracy per seed {[round(r, 3) for r in ratios]}; categories recognised "
            f"in fewer than half their images per seed {[int(m['classes_mostly_missed']) for m in runs]}; "
            f"epochs {[int(m['epochs_run']) for m in runs]}; samples (first seed): bench/gan_synthetic.png"
        )
        for key in GAN_KEYS:
            out[f"gan.synthetic.{key}"] = figure(round(sum(m[key] for m in runs) / len(runs), 4), key, note)
        out["gan.synthetic.consistency_over_real_accuracy_min"] = figure(
            round(min(ratios), 4), "lowest consistency_over_real_accuracy over the seeds", note
        )
    return out

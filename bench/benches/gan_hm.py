"""The gan_hm bench: `python bench/run.py gan_hm`. See :func:`run`."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from benchkit import CACHE, GAN_KEYS, HERE, HM_SAMPLE, Figures, figure, kept

# Each remedy's effect at the same budget: the defaults with one thing changed. The hinge loss with
# two time-scale learning rates is SAGAN's and BigGAN's recipe (discriminator 4e-4, generator 1e-4).
VARIANTS = {
    "no_ema": {"ema_decay": 0.0},
    "hinge_ttur": {"loss": "hinge", "d_learning_rate": 4e-4, "g_learning_rate": 1e-4},
    # The auxiliary classifier's loss weighs three times the adversarial one (AC-GAN's lever on how
    # recognisable each category's images are, which is what class consistency measures).
    "class_weight_3": {"class_weight": 3.0},
    # Three times the reference budget: the nightly default from 12-06 until budget_45 measured better.
    "budget_30": {"max_minutes": 30.0},
    # The nightly budget with the classifier's weight tripled: the lever aimed at consistency, where
    # the nightly GAN falls short of 0.8.
    "budget_30_class_weight_3": {"max_minutes": 30.0, "class_weight": 3.0},
    # Half as long again: the nightly default since 12-06 (the GAN trains weekly), 0.87 of real accuracy.
    "budget_45": {"max_minutes": 45.0},
}
# Each training's samples are also judged drawn at these temperatures (the truncation trick: latents
# from N(0, t^2); no training of its own).
TEMPERATURES = (0.7, 0.5)
# The budget of the reference training (``gan.hm.*``) and of each variant unless it changes it: the
# nightly default until 12-06, kept so the figures compare across days.
REFERENCE_MINUTES = 10.0


def _chosen() -> tuple[bool, dict[str, dict]]:
    """Whether to train the defaults, and which ``VARIANTS``: all of them, or the names (``defaults``
    among them) in ``VISREC_BENCH_GAN_VARIANTS`` (comma-separated; each costs a training at its
    budget; the figures of the others stay as last measured)."""
    chosen = os.environ.get("VISREC_BENCH_GAN_VARIANTS")
    if not chosen:
        return True, VARIANTS
    names = [n.strip() for n in chosen.split(",") if n.strip()]
    unknown = sorted(set(names) - set(VARIANTS) - {"defaults"})
    if unknown:
        raise SystemExit(
            f"VISREC_BENCH_GAN_VARIANTS: unknown {unknown}; choose from {['defaults', *sorted(VARIANTS)]}"
        )
    return "defaults" in names, {n: VARIANTS[n] for n in names if n != "defaults"}


def run() -> Figures:
    """The conditional GAN on hm-sample's product photos (64x64) at the reference 10-minute budget
    and the defaults otherwise, judged by the cnn bench's image model (run it first): the Frechet
    ratio, class consistency over the product types beside the image model's accuracy on the real
    photos, wall time. Then the same training with one remedy changed (``gan.hm.<variant>.*``, see
    ``VARIANTS``: ``budget_45`` is the nightly default since 12-06; ``VISREC_BENCH_GAN_VARIANTS`` runs
    some of them and, unless it names ``defaults``, not the reference). Each training's samples are
    judged again drawn at the ``TEMPERATURES`` (``<prefix>.temperature_<t x 100>.*``). Real photos and
    the reference's samples of the 12 most common product types are kept as bench/gan_hm.png."""
    from collections import Counter

    import keras

    import visrec.models.cnn  # noqa: F401  (registers the image model's classes with Keras)
    from visrec.devdata.importer import import_hm
    from visrec.generation.train import GANConfig, gan_quality, judge_real, sample_grid, train_gan
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
        config = GANConfig.from_settings(settings, register=False, max_minutes=REFERENCE_MINUTES)
        staged = load_staged_images(lake, ds)
        common = [name for name, _ in Counter(staged.categories).most_common(12)]
        defaults, variants = _chosen()
        results = {}
        if defaults:
            gan = train_gan(settings, ds, lake=lake, cnn=cnn, config=config)
            results["gan.hm"] = (gan, {})
            grid = sample_grid(
                gan.model,
                classes=[gan.class_names.index(c) for c in common],
                real=(staged.pixels, staged.categories),
            )
            (HERE / "gan_hm.png").write_bytes(grid)
        for name, change in variants.items():
            variant = dataclasses.replace(config, **change)
            results[f"gan.hm.{name}"] = (train_gan(settings, ds, lake=lake, cnn=cnn, config=variant), change)
        # A partial run: the trainings it skipped keep their figures as last measured (the reference's
        # own, not those of the variants under its prefix).
        for prefix in ({"gan.hm"} | {f"gan.hm.{n}" for n in VARIANTS}) - set(results):
            out[prefix] = kept(*VARIANTS) if prefix == "gan.hm" else kept()
        judged = {}  # the catalog judged once per set of GAN categories, not once per sample set
        for prefix, (result, change) in results.items():
            note = (
                f"hm-sample, {len(result.class_names)} product types, 64x64, "
                f"{change.get('max_minutes', config.max_minutes):g}-minute budget, "
                f"{result.metrics['epochs_run']:.0f} epochs in {result.metrics['train_seconds'] / 60:.1f} min, "
                f"{'defaults with ' + str(change) if change else 'defaults'}; judge: the cnn bench's model; rows "
                f"of bench/gan_hm.png (real photos, then generated): {', '.join(common)}"
            )
            for key in GAN_KEYS:
                out[f"{prefix}.{key}"] = figure(round(result.metrics[key], 4), key, note)
            names = tuple(result.class_names)
            if names not in judged:
                judged[names] = judge_real(cnn, staged.pixels, staged.categories, list(names))
            for t in TEMPERATURES:
                cooler, _ = gan_quality(
                    result.model,
                    cnn,
                    staged.pixels,
                    staged.categories,
                    config.quality_samples,
                    settings.seed,
                    temperature=t,
                    real=judged[names],
                )
                for key in ("frechet_ratio", "consistency_over_real_accuracy", "classes_mostly_missed"):
                    out[f"{prefix}.temperature_{round(t * 100)}.{key}"] = figure(
                        round(cooler[key], 4),
                        key,
                        f"the same model's samples drawn at temperature {t}; {note}",
                    )
    return out

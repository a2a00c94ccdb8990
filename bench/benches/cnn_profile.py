"""The cnn_profile bench: `python bench/run.py cnn_profile`. See :func:`run`."""

from __future__ import annotations

import csv
import sys
import time

from benchkit import CACHE, HM_SAMPLE, Figures, figure

STEPS, WARMUP, ROUNDS = 100, 10, 2  # each variant timed ROUNDS times, the variants interleaved


def run() -> Figures:
    """Where an epoch of the image model goes, on hm-sample's staged pixels (the cnn bench's cache):
    training steps timed (after a warm-up) for the classifier alone and for the defaults (retrieval
    embedding: each step 51 images + 13 second views, and the attribute heads), each with and without
    augmentation, at the defaults' 64 views per step; the augmentation alone; and the input pipeline
    alone. An epoch's time is its steps (images / images per step) x the time per step: the defaults
    take 64 / 51 as many steps as the classifier alone for the same images. The defaults also under
    Keras's mixed bfloat16 policy (``VISREC_CNN_PRECISION=bfloat16``)."""
    import math

    import keras
    import numpy as np

    from visrec.models.cnn import ImageClassifier
    from visrec.models.tfdata import in_memory_batches

    cache = CACHE / "hm_pixels.npz"
    if not cache.exists() or not (HM_SAMPLE / "articles.csv").exists():
        print(
            "cnn_profile: needs hm-sample and the cnn bench's pixel cache (run cnn first); skipped",
            file=sys.stderr,
        )
        return {}
    z = np.load(cache)
    pixels, item_ids = z["pixels"], z["item_ids"].tolist()
    with open(HM_SAMPLE / "articles.csv", newline="") as f:
        rows = {r["article_id"]: r for r in csv.DictReader(f)}
    types = sorted({rows[i]["product_type_name"] for i in item_ids})
    labels = np.array([types.index(rows[i]["product_type_name"]) for i in item_ids])
    attributes = {}
    for column in ("product_group_name", "colour_group_name", "graphical_appearance_name"):
        values = sorted({rows[i][column] for i in item_ids})
        attributes[column] = (values, np.array([values.index(rows[i][column]) for i in item_ids], np.float32))
    one_hot = np.eye(len(types), dtype=np.float32)[labels]
    # The model's attribute heads are in name order; the labels' columns must be too.
    targets = np.concatenate([one_hot, np.stack([attributes[n][1] for n in sorted(attributes)], 1)], axis=1)

    def steps_per_second(retrieval: bool, augment: bool, policy: str = "float32") -> tuple[float, int]:
        keras.utils.set_random_seed(0)
        keras.mixed_precision.set_global_policy(policy)  # the model keeps it; reset below
        model = ImageClassifier(
            types,
            image_size=pixels.shape[1],
            augment=augment,
            retrieval_dim=64 if retrieval else 0,
            pair_share=0.25,
            contrastive_weight=0.35,
            attribute_weight=0.2,
            attributes={name: values for name, (values, _) in attributes.items()} if retrieval else None,
        )
        keras.mixed_precision.set_global_policy("float32")
        model.compile(
            optimizer=keras.optimizers.AdamW(3e-3),
            loss=keras.losses.CategoricalCrossentropy(),
            metrics=["accuracy"],
        )
        per_step = round(64 / 1.25) if retrieval else 64
        data = in_memory_batches((pixels, targets), per_step, shuffle_seed=0, drop_remainder=True)
        times = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                self.t = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                times.append(time.perf_counter() - self.t)

        model.fit(data, epochs=1, steps_per_epoch=STEPS + WARMUP, verbose=0, callbacks=[Clock()])
        return float(np.median(times[WARMUP:])), per_step

    out: Figures = {}
    note = (
        f"hm-sample pixels {pixels.shape[1]}px, 64 views a step, median over {ROUNDS} interleaved rounds of "
        f"the median of {STEPS} steps after {WARMUP}"
    )
    variants = {
        "classifier": (False, True),
        "classifier_no_augment": (False, False),
        "defaults": (True, True),
        "defaults_no_augment": (True, False),
        "defaults_bfloat16": (True, True, "mixed_bfloat16"),
    }
    timed: dict[str, list[float]] = {name: [] for name in variants}
    per_steps = {}
    for _ in range(ROUNDS):  # interleaved, so a drift of the machine's speed falls on every variant
        for name, variant in variants.items():
            seconds, per_steps[name] = steps_per_second(*variant)
            timed[name].append(seconds)
    step = {}
    for name in variants:
        seconds, per_step = float(np.median(timed[name])), per_steps[name]
        step[name] = seconds
        epoch_minutes = math.ceil(0.8 * len(pixels) / per_step) * seconds / 60
        out[f"cnn.profile.{name}.step_seconds"] = figure(round(seconds, 4), "s", note)
        out[f"cnn.profile.{name}.epoch_minutes"] = figure(
            round(epoch_minutes, 2),
            "min",
            f"{math.ceil(0.8 * len(pixels) / per_step)} steps of {per_step} images",
        )
        print(f"  {name}: {seconds * 1000:.0f} ms a step, {epoch_minutes:.2f} min an epoch", file=sys.stderr)

    augmenter = ImageClassifier(types, image_size=pixels.shape[1])
    batch = keras.ops.convert_to_tensor(pixels[:64].astype("float32") / 255.0)
    for _ in range(3):
        augmenter._augmented(batch)
    started = time.perf_counter()
    for _ in range(20):
        augmenter._augmented(batch)
    out["cnn.profile.augment_64_seconds"] = figure(
        round((time.perf_counter() - started) / 20, 4),
        "s",
        "the augmentation of 64 images, eager, outside the train step",
    )
    started = time.perf_counter()
    seen = 0
    for images, _ in in_memory_batches((pixels, targets), 64, shuffle_seed=0):
        seen += len(images)
    out["cnn.profile.input_images_per_s"] = figure(
        round(seen / (time.perf_counter() - started)), "images/s", "the tf.data pipeline alone, one epoch"
    )
    out["cnn.profile.augment_share_of_step"] = figure(
        round(1 - step["defaults_no_augment"] / step["defaults"], 3),
        "share",
        "defaults: 1 - no augment / augment",
    )
    out["cnn.profile.bfloat16_speedup"] = figure(
        round(step["defaults"] / step["defaults_bfloat16"], 3),
        "ratio",
        "defaults' time per step in float32 over mixed bfloat16 (AVX-512 BF16 on this CPU)",
    )
    out["cnn.profile.retrieval_step_over_classifier"] = figure(
        round(step["defaults"] / step["classifier"], 3), "ratio", "time per step, 64 views each"
    )
    return out

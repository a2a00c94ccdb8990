"""One prepared check that the image model trains on a GPU (run on a lent GPU machine).

    KERAS_BACKEND=jax python3 bench/gpu_check.py [--mixed-precision] [--seed N]

The model code (visrec.models.cnn) is backend-agnostic Keras 3; GPU machines here carry JAX with CUDA
but no TensorFlow, so the check runs it on the JAX backend. It renders a synthetic catalog, trains a
few epochs on the accelerator and prints the device, the throughput and the held-out accuracy (per
epoch too: it jumps between early epochs) as JSON. Measured runs: bench/gpu_check_results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras

    from visrec.devdata.synth import CATEGORIES, COLOURS, PATTERNS, render_item
    from visrec.models.cnn import ImageClassifier

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    labels = rng.integers(0, len(CATEGORIES), args.items)
    colours, patterns = list(COLOURS), list(PATTERNS)
    started = time.perf_counter()
    pixels = np.stack(
        [render_item(CATEGORIES[c], colours[rng.integers(8)], patterns[rng.integers(5)], rng) for c in labels]
    )
    render_s = time.perf_counter() - started
    split = int(0.8 * args.items)
    model = ImageClassifier(list(CATEGORIES), image_size=64)
    model.compile(keras.optimizers.AdamW(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(pixels[:512], labels[:512], batch_size=128, epochs=1, verbose=0)  # compile / warm up
    started = time.perf_counter()
    history = model.fit(
        pixels[:split],
        labels[:split],
        batch_size=128,
        epochs=args.epochs,
        verbose=0,
        validation_data=(pixels[split:], labels[split:]),
    )
    train_s = time.perf_counter() - started
    backend = keras.backend.backend()
    devices = []
    if backend == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
    print(
        json.dumps(
            {
                "backend": backend,
                "devices": devices,
                "mixed_precision": args.mixed_precision,
                "train_images_per_s": round(split * args.epochs / train_s),
                "train_seconds": round(train_s, 1),
                "render_seconds": round(render_s, 1),
                "held_out_accuracy": round(history.history["val_accuracy"][-1], 4),
                "held_out_accuracy_per_epoch": [round(a, 4) for a in history.history["val_accuracy"]],
                "epochs": args.epochs,
                "items": args.items,
            }
        )
    )


if __name__ == "__main__":
    main()

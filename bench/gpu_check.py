"""One prepared check that the models train on a GPU (run on a lent GPU machine).

    KERAS_BACKEND=jax python3 bench/gpu_check.py [--mixed-precision] [--seed N]
    KERAS_BACKEND=jax python3 bench/gpu_check.py --model vbpr [--users N --interactions N]
    KERAS_BACKEND=jax python3 bench/gpu_check.py --model gan     (the image model first, as its judge)
    KERAS_BACKEND=jax python3 bench/gpu_check.py --model all     (all three, one JSON line each)

The model code (visrec.models.cnn) is backend-agnostic Keras 3; GPU machines here carry JAX with CUDA
but no TensorFlow, so the check runs it on the JAX backend. It renders a synthetic catalog, trains a
few epochs on the accelerator and prints the device, the throughput and the held-out accuracy (per
epoch too: it jumps between early epochs) as JSON. ``--model vbpr`` trains the recommender
(visrec.models.mf, whose loss is in ``compute_loss``, so it too runs on JAX) on random interactions with
four negatives each and prints triples/s and seconds per epoch per million interactions, the figure
``make bench`` measures on the CPU (``mf.speed.epoch_seconds_per_million``). It imports only
visrec.models, which needs no TensorFlow. ``--model gan`` trains the image model, then the conditional
GAN (visrec.models.gan, a training step per backend) on the same images and prints images/s and the
class consistency of 512 generated images as that image model judges them. Measured runs:
bench/gpu_check_results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _header(model: str) -> dict:
    """What every result line starts with: the model, the Keras backend and its devices."""
    import keras

    backend = keras.backend.backend()
    devices = []
    if backend == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
    return {"model": model, "backend": backend, "devices": devices}


def check_vbpr(args: argparse.Namespace) -> dict:
    """VBPR on ``args.interactions`` random interactions (Zipf-popular items), 64-dim item features,
    four negatives per interaction, batches of 32,768 (the nightly defaults)."""
    import keras

    from visrec.models.mf import VBPR

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n, negatives = args.interactions, 4
    users = np.repeat(rng.integers(0, args.users, n), negatives).astype(np.int32)
    pos = np.repeat(rng.zipf(1.2, n) % args.items, negatives).astype(np.int32)
    neg = rng.integers(0, args.items, users.size).astype(np.int32)
    model = VBPR(args.users, args.items, feature_dim=64, factors=32, visual_factors=32, l2=1e-2)
    model.build()
    model.item_features.assign(rng.normal(size=(args.items, 64)).astype(np.float32))
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=True)
    x, y, w = (users, pos, neg), np.zeros(users.size, np.float32), np.ones(users.size, np.float32)
    model.fit(x, y, sample_weight=w, batch_size=32768, epochs=1, verbose=0)  # compile / warm up
    started = time.perf_counter()
    history = model.fit(x, y, sample_weight=w, batch_size=32768, epochs=args.epochs, verbose=0)
    train_s = time.perf_counter() - started
    return {
        **_header("vbpr"),
        "train_triples_per_s": round(users.size * args.epochs / train_s),
        "epoch_seconds_per_million": round(train_s / args.epochs / (n / 1e6), 3),
        "loss_per_epoch": [round(v, 4) for v in history.history["loss"]],
        "users": args.users,
        "items": args.items,
        "interactions": n,
        "epochs": args.epochs,
    }


def render(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, float]:
    """``args.items`` synthetic catalog images (64x64 uint8), their category labels, seconds taken."""
    from visrec.devdata.synth import CATEGORIES, COLOURS, PATTERNS, render_item

    rng = np.random.default_rng(args.seed)
    labels = rng.integers(0, len(CATEGORIES), args.items)
    colours, patterns = list(COLOURS), list(PATTERNS)
    started = time.perf_counter()
    pixels = np.stack(
        [render_item(CATEGORIES[c], colours[rng.integers(8)], patterns[rng.integers(5)], rng) for c in labels]
    )
    return pixels, labels, time.perf_counter() - started


def check_cnn(args: argparse.Namespace, pixels: np.ndarray, labels: np.ndarray) -> tuple[dict, object]:
    """The image model: train on 80%, held-out accuracy per epoch; returns the figures and the model."""
    import keras

    from visrec.devdata.synth import CATEGORIES
    from visrec.models.cnn import ImageClassifier

    keras.utils.set_random_seed(args.seed)
    split = int(0.8 * len(pixels))
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
    return {
        **_header("cnn"),
        "mixed_precision": args.mixed_precision,
        "train_images_per_s": round(split * args.epochs / train_s),
        "train_seconds": round(train_s, 1),
        "held_out_accuracy": round(history.history["val_accuracy"][-1], 4),
        "held_out_accuracy_per_epoch": [round(a, 4) for a in history.history["val_accuracy"]],
        "epochs": args.epochs,
        "items": len(pixels),
    }, model


def check_gan(args: argparse.Namespace, pixels: np.ndarray, labels: np.ndarray, judge) -> dict:
    """The conditional GAN (64x64, the nightly defaults) for ``args.epochs`` epochs: images/s, and its
    class consistency, the share of 512 generated images the image model ``judge`` recognises as the
    category asked for (the figure ``make bench`` measures on the CPU: ``gan.synthetic.*``)."""
    import keras

    from visrec.devdata.synth import CATEGORIES
    from visrec.models.gan import ConditionalGAN

    keras.utils.set_random_seed(args.seed)
    images = pixels.astype(np.float32) / 127.5 - 1.0
    gan = ConditionalGAN(list(CATEGORIES), resolution=64, minibatch_kernels=16, seed=args.seed)
    gan.build()
    gan.compile()
    gan.fit(images[:256], labels[:256].astype(np.int32), batch_size=32, epochs=1, verbose=0)  # warm up
    started = time.perf_counter()
    history = gan.fit(images, labels.astype(np.int32), batch_size=32, epochs=args.epochs, verbose=0)
    train_s = time.perf_counter() - started
    asked = np.arange(512) % len(CATEGORIES)
    generated = np.asarray(gan.generate(asked, seed=args.seed))
    generated = np.clip((generated + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    recognised = np.asarray(judge.predict(generated, batch_size=128, verbose=0)).argmax(1)
    return {
        **_header("gan"),
        "train_images_per_s": round(len(images) * args.epochs / train_s),
        "train_seconds": round(train_s, 1),
        "class_consistency": round(float(np.mean(recognised == asked)), 4),
        "d_loss_per_epoch": [round(v, 4) for v in history.history["d_loss"]],
        "g_loss_per_epoch": [round(v, 4) for v in history.history["g_loss"]],
        "epochs": args.epochs,
        "items": len(images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["cnn", "gan", "vbpr", "all"], default="cnn")
    parser.add_argument("--items", type=int, help="catalog size (default cnn and gan 8000, vbpr 20000)")
    parser.add_argument("--users", type=int, default=100_000, help="vbpr: users")
    parser.add_argument("--interactions", type=int, default=1_000_000, help="vbpr: interactions")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--mixed-precision", action="store_true", help="cnn: float16 compute")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    items = args.items
    if args.model in ("cnn", "gan", "all"):
        import keras

        if args.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        args.items = items or 8000
        pixels, labels, render_s = render(args)
        cnn, model = check_cnn(args, pixels, labels)
        if args.model != "gan":
            print(json.dumps({**cnn, "render_seconds": round(render_s, 1)}), flush=True)
        if args.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")
        if args.model in ("gan", "all"):
            print(json.dumps(check_gan(args, pixels, labels, model)), flush=True)
    if args.model in ("vbpr", "all"):
        args.items = items or 20_000
        print(json.dumps(check_vbpr(args)))


if __name__ == "__main__":
    main()

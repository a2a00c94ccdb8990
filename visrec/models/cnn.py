"""The image model: recognises an item's category (softmax) and embeds images for similarity.

Two embeddings come out of one network. The classifier's (below) is what the category loss shapes.
The retrieval embedding (``retrieval_dim`` > 0) is a small projection head on the same features,
trained beside the classifier so that two augmented views of one catalog image (zoomed out, turned,
relit, on clutter: a shopper's photo of it) land together and apart from every other image of the
batch (a contrastive, InfoNCE loss, as in SimCLR), and, through heads on it, so that it predicts
the category and whatever attribute columns the catalog has (colour, pattern, ...). The classifier's
embedding finds the category; the retrieval embedding finds the photographed product.

The default backbone is compact and CPU-friendly: a strided stem, then depthwise-separable blocks.
The embedding is the penultimate layer, the concatenation of globally pooled features from the
last three blocks, each block's part L2-normalised, then the whole. Pooling from several depths on purpose: deep features carry the
silhouette the category loss asks for, shallower ones keep colour and texture, which the category
loss alone would be free to discard and which similarity search needs.

With ``backbone="mobilenet_v3_small"`` (or another name in ``APPLICATIONS``) a keras.applications
network is used instead; its ImageNet weights are read from ``backbone_weights``, a local file the
user provides: nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

APPLICATIONS = {
    "mobilenet_v3_small": "MobileNetV3Small",
    "mobilenet_v3_large": "MobileNetV3Large",
    "efficientnet_b0": "EfficientNetB0",
}


def _normalised(x, conv: layers.Layer, batch_norm: bool, name: str, k: str = ""):
    """``conv``, then its batch normalisation and ReLU (``{name}_bn{k}``, ``{name}_relu{k}``); without
    ``batch_norm``, ``conv`` alone (built with a bias and the ReLU inside: the folded form)."""
    if not batch_norm:
        return conv(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{k}")(conv(x))
    return layers.ReLU(name=f"{name}_relu{k}")(x)


def _sep_block(x, filters: int, name: str, pool: bool = True, batch_norm: bool = True):
    for k in range(2):
        conv = layers.SeparableConv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            activation=None if batch_norm else "relu",
            name=f"{name}_sep{k}",
        )
        x = _normalised(x, conv, batch_norm, name, str(k))
    if pool:
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return x


def compact_backbone(image_size: int, width: int, batch_norm: bool = True) -> keras.Model:
    """Image in [0, 1] -> multi-depth pooled features (``14 * width`` values).

    ``batch_norm=False`` builds the inference form that :func:`folded_backbone` fills: every
    convolution with a bias and its ReLU inside, no normalisation layers.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    stem = layers.Conv2D(
        width,
        3,
        strides=2,
        padding="same",
        use_bias=not batch_norm,
        activation=None if batch_norm else "relu",
        name="stem",
    )
    x = _normalised(inputs, stem, batch_norm, "stem")
    b1 = _sep_block(x, 2 * width, "block1", batch_norm=batch_norm)
    b2 = _sep_block(b1, 4 * width, "block2", batch_norm=batch_norm)
    b3 = _sep_block(b2, 8 * width, "block3", pool=False, batch_norm=batch_norm)
    pooled = [layers.GlobalAveragePooling2D(name=f"gap{k}")(b) for k, b in enumerate((b1, b2, b3), 1)]
    features = layers.Concatenate(name="features")(pooled)
    return keras.Model(inputs, features, name="compact")


def folded_backbone(backbone: keras.Model) -> keras.Model:
    """The trained compact backbone with each batch normalisation folded into the convolution before
    it (its scale into the kernel's output channels, its shift into a bias): the same function at
    inference, to float32 rounding, in one pass over each activation instead of three (the cnn
    bench's embedding throughput). A snapshot: fold again after the weights change."""
    width = backbone.get_layer("stem").filters
    folded = compact_backbone(int(backbone.input.shape[1]), width, batch_norm=False)
    convs = [layer for layer in backbone.layers if isinstance(layer, (layers.Conv2D, layers.SeparableConv2D))]
    norms = [layer for layer in backbone.layers if isinstance(layer, layers.BatchNormalization)]
    # Layers are listed in the order they were called: each convolution is followed by its own norm.
    for conv, norm in zip(convs, norms, strict=True):
        gamma, beta, mean, variance = (ops.convert_to_numpy(w) for w in norm.weights)
        scale = gamma / np.sqrt(variance + norm.epsilon)
        *kernels, last = (ops.convert_to_numpy(w) for w in conv.weights)
        # The last kernel's output channels are the ones the norm scales.
        folded.get_layer(conv.name).set_weights([*kernels, last * scale, beta - mean * scale])
    return folded


def application_backbone(name: str, image_size: int, weights: str | None) -> keras.Model:
    """A keras.applications network (no top, average-pooled), weights from a local file or none."""
    if name not in APPLICATIONS:
        raise ValueError(f"unknown backbone {name!r}; use 'compact' or one of {sorted(APPLICATIONS)}")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"backbone weights file {weights} not found (visrec never downloads weights)")
    cls = getattr(keras.applications, APPLICATIONS[name])
    inputs = keras.Input((image_size, image_size, 3), name="image")
    net = cls(input_shape=(image_size, image_size, 3), include_top=False, weights=weights, pooling="avg")
    # keras.applications expect [0, 255] inputs and rescale themselves.
    return keras.Model(inputs, net(inputs * 255.0), name=name)


@keras.saving.register_keras_serializable(package="visrec")
class RandomAffine(layers.Layer):
    """One random similarity transform per image: horizontal flip, rotation by up to ``rotation``
    turns, scale in ``1 + zoom`` (above 1 zooms out) and a shift of up to ``translation`` of the size,
    composed into one matrix and applied by a single bilinear resampling. Separate flip, rotation,
    zoom and shift layers resample three times, which costs time and blurs small images the
    classifier never sees blurred. Uncovered pixels get ``fill_value``. Training only."""

    def __init__(
        self,
        rotation: float = 0.04,
        zoom: tuple[float, float] = (-0.12, 0.4),
        translation: float = 0.08,
        flip: bool = True,
        fill_value: float = -1.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.translation = rotation, tuple(zoom), translation
        self.flip, self.fill_value, self.seed = flip, fill_value, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training: bool = True):
        if not training:
            return images
        shape = ops.shape(images)
        batch = shape[0]
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        uniform = lambda low, high: keras.random.uniform(  # noqa: E731
            (batch,), low, high, dtype="float32", seed=self.seed_generator
        )
        angle = uniform(-self.rotation, self.rotation) * 2.0 * math.pi
        scale = 1.0 + uniform(self.zoom[0], self.zoom[1])
        mirror = ops.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0) if self.flip else ops.ones((batch,))
        shift_x = uniform(-self.translation, self.translation) * width
        shift_y = uniform(-self.translation, self.translation) * height
        # Output pixel p maps to input pixel c + scale * R(angle) @ diag(mirror, 1) @ (p - c) + shift.
        cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
        a0, a1, b0, b1 = cos * mirror, -sin, sin * mirror, cos
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        a2 = cx - a0 * cx - a1 * cy + shift_x
        b2 = cy - b0 * cx - b1 * cy + shift_y
        zeros = ops.zeros_like(a0)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        # Resample with a coverage channel (1 inside, 0 outside) and divide by it, so edge pixels keep
        # the image's colour instead of a blend with the fill value.
        rgba = ops.pad(ops.cast(images, "float32"), [[0, 0], [0, 0], [0, 0], [0, 1]], constant_values=1.0)
        out = ops.image.affine_transform(rgba, transform, "bilinear", "constant", 0.0)
        coverage = out[..., -1:]
        out = ops.where(coverage > 0.5, out[..., :-1] / ops.maximum(coverage, 1e-3), self.fill_value)
        return ops.cast(out, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "zoom": list(self.zoom),
            "translation": self.translation,
            "flip": self.flip,
            "fill_value": self.fill_value,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="visrec")
class ClutterFill(layers.Layer):
    """Paints the pixels below 0 (what the geometric augmentations left uncovered) as a cluttered
    scene (a background tone and ``boxes`` rectangles of random colours); when the images' studio
    colours are given (``studio``, one per image), only a random ``scene_share`` of the images gets a
    scene and the others their studio colour. Covered pixels pass through. Training only."""

    def __init__(self, boxes: int = 4, scene_share: float = 0.3, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.boxes, self.scene_share, self.seed = boxes, scene_share, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, studio=None, training: bool = True):
        if not training:
            return images
        shape = ops.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        dtype = images.dtype
        uniform = lambda shape, low, high: keras.random.uniform(  # noqa: E731
            shape, low, high, dtype=dtype, seed=self.seed_generator
        )
        scene = uniform((batch, 1, 1, 3), 0.2, 0.95)
        rows = ops.reshape(ops.cast(ops.arange(height), dtype) / ops.cast(height, dtype), (1, -1, 1, 1))
        cols = ops.reshape(ops.cast(ops.arange(width), dtype) / ops.cast(width, dtype), (1, 1, -1, 1))
        for _ in range(self.boxes):
            corner, size, colour = (
                uniform((batch, 2, 1, 1), 0.0, 1.0),
                uniform((batch, 2, 1, 1), 0.1, 0.4),
                uniform((batch, 1, 1, 3), 0.0, 1.0),
            )
            y0, x0, h, w = corner[:, :1], corner[:, 1:], size[:, :1], size[:, 1:]
            inside = (rows >= y0) & (rows < y0 + h) & (cols >= x0) & (cols < x0 + w)
            scene = ops.where(inside, colour, scene)
        if studio is not None:
            in_scene = uniform((batch, 1, 1, 1), 0.0, 1.0) < self.scene_share
            scene = ops.where(in_scene, scene, ops.cast(studio, dtype))
        uncovered = ops.any(images < 0.0, axis=-1, keepdims=True)
        return ops.where(uncovered, scene, ops.clip(images, 0.0, 1.0))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "boxes": self.boxes,
            "scene_share": self.scene_share,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="visrec")
class ImageClassifier(keras.Model):
    """Category classifier whose penultimate layer is the image embedding.

    Call it on uint8 or float images in [0, 255] of shape (batch, size, size, 3); it returns class
    probabilities (outside training, averaged with the mirror image's when ``flip_average``).
    :meth:`embed` returns L2-normalised embeddings.
    """

    def __init__(
        self,
        class_names: list[str],
        image_size: int = 64,
        width: int = 32,
        dropout: float = 0.25,
        augment: bool = True,
        backbone: str = "compact",
        backbone_weights: str | None = None,
        flip_average: bool = True,
        retrieval_dim: int = 0,
        attributes: dict[str, list[str]] | None = None,
        contrastive_weight: float = 1.0,
        attribute_weight: float = 0.5,
        temperature: float = 0.1,
        pair_share: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(class_names) < 2:
            raise ValueError(f"need at least 2 classes, got {len(class_names)}")
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {image_size}")
        if retrieval_dim < 0 or (attributes and not retrieval_dim):
            raise ValueError(
                f"retrieval_dim must be >= 0 (0: no retrieval embedding), and > 0 for attribute heads; "
                f"got {retrieval_dim} with attributes {sorted(attributes or {})}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.retrieval_dim = retrieval_dim
        # Attribute name -> its values; a training label is the value's index (-1: not known).
        self.attributes = {name: list(values) for name, values in sorted((attributes or {}).items())}
        self.contrastive_weight, self.attribute_weight = contrastive_weight, attribute_weight
        self.temperature = temperature
        if not 0.0 < pair_share <= 1.0:
            raise ValueError(f"pair_share must be in (0, 1], got {pair_share}")
        self.pair_share = pair_share  # share of a batch's images that get a second view in training
        self.class_names = list(class_names)
        self.image_size = image_size
        self.width = width
        self.dropout_rate = dropout
        self.augment = augment
        self.backbone_name = backbone
        self.backbone_weights = backbone_weights
        self.flip_average = flip_average
        # Geometry, light and surroundings only: colour is a product attribute the embedding must
        # keep, so no hue jitter. The geometric layer fills uncovered pixels with -1, which
        # ClutterFill paints as a cluttered scene for 30% of the images (a product photographed in a
        # room should embed near its catalog image) and in the studio colour for the rest (catalog
        # images are what the classifier mostly sees; more scenes cost it accuracy on them).
        self.augmenter = keras.Sequential(
            [
                # Brightness first: it clips to [0, 1], which would erase the -1 fill.
                layers.RandomBrightness(0.1, value_range=(0.0, 1.0)),
                RandomAffine(fill_value=-1.0, name="geometry"),
            ],
            name="augment",
        )
        self.surroundings = ClutterFill(name="surroundings")
        if backbone == "compact":
            self.backbone = compact_backbone(image_size, width)
        else:
            self.backbone = application_backbone(backbone, image_size, backbone_weights)
        self.head_dropout = layers.Dropout(dropout)
        self.head = layers.Dense(len(class_names), activation="softmax", dtype="float32", name="category")
        if retrieval_dim:
            self.projection = keras.Sequential(
                [layers.Dense(256, activation="relu"), layers.Dense(retrieval_dim, dtype="float32")],
                name="retrieval",
            )
            # Heads on the retrieval embedding: the category, then each attribute, in name order.
            self.retrieval_heads = [
                layers.Dense(len(values), activation="softmax", dtype="float32", name=f"retrieval_{name}")
                for name, values in [("category", self.class_names), *self.attributes.items()]
            ]

    def build(self, input_shape) -> None:
        # The backbone is built at construction; the heads need the feature widths.
        self.head.build((None, self.features_dim))
        if self.retrieval_dim:
            self.projection.build((None, self.features_dim))
            for head in self.retrieval_heads:
                head.build((None, self.retrieval_dim))
        super().build(input_shape)

    def _augmented(self, x):
        studio = x[:, :1, :1, :]  # catalog photos are shot on a plain background: its colour
        return self.surroundings(self.augmenter(x, training=True), studio, training=True)

    def features(self, images, training: bool = False, backbone: keras.Model | None = None):
        """The backbone's pooled features of uint8 images (``backbone``: another form of it, such as
        :meth:`inference_backbone`'s)."""
        x = ops.cast(images, self.compute_dtype) / 255.0
        if training and self.augment:
            x = self._augmented(x)
        return (backbone or self.backbone)(x, training=training)

    def inference_backbone(self) -> keras.Model:
        """The backbone as inference wants it: the compact one with its batch normalisations folded
        into its convolutions (:func:`folded_backbone`, a snapshot of today's weights); any other
        backbone as it is."""
        return folded_backbone(self.backbone) if self.backbone_name == "compact" else self.backbone

    def _retrieval(self, features):
        return ops.normalize(ops.cast(self.projection(features), "float32"), axis=-1)

    def call(self, images, training: bool = False):
        if training and self.retrieval_dim:
            # An augmented view of every image and a second one of the first ``pair_share`` of them,
            # in one pass: the classifier learns from all views, the retrieval embedding from the
            # pairs' agreement (see compute_loss).
            x = ops.cast(images, self.compute_dtype) / 255.0
            second = x[: self._pairs(ops.shape(x)[0])]
            pair = [self._augmented(x), self._augmented(second)] if self.augment else [x, second]
            views = ops.concatenate(pair, 0)
            features = self.backbone(views, training=True)
            embedding = self._retrieval(features)
            return {
                "category": self.head(self.head_dropout(features, training=True)),
                "retrieval": embedding,
                "heads": [head(embedding) for head in self.retrieval_heads],
            }
        probs = self.head(self.head_dropout(self.features(images, training), training=training))
        if self.flip_average and not training:
            # Garments are left-right symmetric in the catalog's eyes; averaging the prediction of
            # an image and its mirror image costs one more forward pass and evens out the noise.
            probs = (probs + self.head(self.features(ops.flip(images, axis=2)))) / 2.0
        return probs

    def _pairs(self, batch):
        """How many images of a batch of ``batch`` get a second view (at least 1)."""
        if self.pair_share >= 1.0:
            return batch
        if isinstance(batch, int):  # a static shape (JAX): slices need a Python int
            return max(1, math.ceil(batch * self.pair_share))
        return ops.maximum(ops.cast(ops.ceil(ops.cast(batch, "float32") * self.pair_share), "int32"), 1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled category loss; in training with a retrieval embedding also, over all views,
        the contrastive loss (a paired view's positive is the other view of its image, every other
        view of the batch a negative) and the heads' losses on the embedding (attribute labels of -1,
        an unknown value, count for nothing). ``y`` is the one-hot category, then one column per
        attribute with the value's index."""
        n = len(self.class_names)
        if not isinstance(y_pred, dict):
            return super().compute_loss(x, y[:, :n], y_pred, sample_weight, training)
        embedding = y_pred["retrieval"]
        views, batch = ops.shape(embedding)[0], ops.shape(y)[0]
        pairs = views - batch  # the first ``pairs`` images have their second view at the end
        labels = ops.concatenate([y, y[:pairs]], axis=0)
        loss = super().compute_loss(x, labels[:, :n], y_pred["category"], None, training)
        logits = ops.matmul(embedding, ops.transpose(embedding)) / self.temperature
        logits = logits - 1e9 * ops.eye(views, dtype=logits.dtype)  # a view is not its own positive
        rows = ops.arange(views)
        paired = (rows < pairs) | (rows >= batch)
        positives = ops.where(rows < pairs, rows + batch, ops.where(rows >= batch, rows - batch, 0))
        contrastive = keras.losses.sparse_categorical_crossentropy(positives, logits, from_logits=True)
        weight = ops.cast(paired, contrastive.dtype)
        loss = loss + self.contrastive_weight * ops.sum(contrastive * weight) / ops.sum(weight)
        category, *attributes = y_pred["heads"]
        loss = loss + self.attribute_weight * ops.mean(
            keras.losses.categorical_crossentropy(labels[:, :n], category)
        )
        for k, probs in enumerate(attributes):
            index = labels[:, n + k]
            known = ops.cast(index >= 0, "float32")
            ce = keras.losses.sparse_categorical_crossentropy(ops.maximum(index, 0), probs)
            loss = loss + self.attribute_weight * ops.sum(ce * known) / ops.maximum(ops.sum(known), 1.0)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        n = len(self.class_names)
        if isinstance(y_pred, dict):  # metrics on the first view, as without a retrieval embedding
            y_pred = y_pred["category"][: ops.shape(y)[0]]
        return super().compute_metrics(x, y[:, :n], y_pred, sample_weight)

    def embed(self, images, kind: str | None = None, backbone: keras.Model | None = None):
        """L2-normalised embeddings (float32) of a batch of images.

        ``kind``: ``"retrieval"`` (the projection trained to find the photographed product),
        ``"classifier"`` (the pooled features the category head reads; each depth's part normalised
        on its own before the whole is, so colour and texture (shallow) weigh as much as shape
        (deep) in a cosine similarity) or ``"both"`` (the two, concatenated at equal weight: a
        cosine similarity is the mean of the two); None: :attr:`default_embedding`. ``backbone``: as
        in :meth:`features` (``embed_pixels`` hands in :meth:`inference_backbone`'s).
        """
        kind = kind or self.default_embedding
        if kind not in ("retrieval", "classifier", "both"):
            raise ValueError(f"unknown embedding kind {kind!r}; use retrieval, classifier or both")
        if kind != "classifier" and not self.retrieval_dim:
            raise ValueError(f"this image model has no retrieval embedding (asked for {kind!r})")
        features = ops.cast(self.features(images, backbone=backbone), "float32")
        if kind == "retrieval":
            return self._retrieval(features)
        classifier = features
        if self.backbone_name == "compact":
            w = self.width
            parts = [features[:, : 2 * w], features[:, 2 * w : 6 * w], features[:, 6 * w :]]
            classifier = ops.concatenate([ops.normalize(p, axis=-1) for p in parts], axis=-1)
        classifier = ops.normalize(classifier, axis=-1)
        if kind == "both":
            return ops.concatenate([classifier, self._retrieval(features)], axis=-1) / math.sqrt(2.0)
        return classifier

    @property
    def default_embedding(self) -> str:
        """What :meth:`embed` returns without a ``kind``: both embeddings when the model has a
        retrieval one (measured best overall: see docs/explanation/models.md), else the classifier's."""
        return "both" if self.retrieval_dim else "classifier"

    @property
    def features_dim(self) -> int:
        return int(self.backbone.output.shape[-1])

    def embedding_size(self, kind: str | None = None) -> int:
        """The width of :meth:`embed`'s output for ``kind``."""
        kind = kind or self.default_embedding
        sizes = {"retrieval": self.retrieval_dim, "classifier": self.features_dim}
        return sizes.get(kind, self.retrieval_dim + self.features_dim)

    @property
    def embedding_dim(self) -> int:
        return self.embedding_size()

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "class_names": self.class_names,
                "image_size": self.image_size,
                "width": self.width,
                "dropout": self.dropout_rate,
                "augment": self.augment,
                "backbone": self.backbone_name,
                "backbone_weights": None,  # the trained weights are in the saved model itself
                "flip_average": self.flip_average,
                "retrieval_dim": self.retrieval_dim,
                "attributes": self.attributes,
                "contrastive_weight": self.contrastive_weight,
                "attribute_weight": self.attribute_weight,
                "temperature": self.temperature,
                "pair_share": self.pair_share,
            }
        )
        return config

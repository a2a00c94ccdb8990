"""A category-conditioned DCGAN (Keras 3): generator, projection discriminator, and the GAN model.

The generator maps a latent vector and a category to an image in [-1, 1], the category also
setting the scale and shift of each of its batch normalisations; the discriminator scores
an image for a category with a projection head (Miyato & Koyama 2018: ``dense(h) + <embed(y), h>``)
and spectral normalisation on every layer, and also classifies the image (an auxiliary classifier,
Odena et al. 2017), which pushes the generator to make the requested category recognisable on small
catalogs where the projection alone learns it slowly. The auxiliary classifier alone pulls every latent
vector of a category to the one image it finds most typical; minibatch discrimination among images of
the same category (Salimans et al. 2016) lets the discriminator see that, and keeps the generator's
images apart. :class:`ConditionalGAN` trains both in its own ``train_step`` with the non-saturating
loss and one-sided label smoothing, as the keras-io conditional GAN example does (or the hinge loss of
SNGAN and BigGAN), and tracks the losses. With ``ema_decay`` it also keeps an exponential moving
average of the generator's weights (Karras et al. 2018; Yazici et al. 2019), which is what generates:
the average of many nearby generators draws steadier images than the last one, at the cost of one
weighted sum per step.
"""

from __future__ import annotations

import keras
from keras import layers, ops

MINIBATCH_DIMS = 8  # dimensions of each minibatch-discrimination kernel


def _upsamplings(resolution: int) -> int:
    if resolution not in (32, 64, 128):
        raise ValueError(f"resolution must be 32, 64 or 128, got {resolution}")
    return {32: 3, 64: 4, 128: 5}[resolution]


@keras.saving.register_keras_serializable(package="visrec")
class ConditionalBatchNorm(layers.Layer):
    """Batch normalisation whose scale and shift are learnt per category (de Vries et al. 2017, as
    in SNGAN and BigGAN generators): the category steers every layer of the generator, not only
    its input, which is what lets a small generator draw the requested silhouette early."""

    def __init__(self, n_classes: int, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.n_classes, self.momentum = n_classes, momentum
        self.norm = layers.BatchNormalization(momentum=momentum, center=False, scale=False)

    def build(self, input_shape) -> None:
        channels = input_shape[-1]
        self.norm.build(input_shape)
        self.gamma = layers.Embedding(self.n_classes, channels, embeddings_initializer="ones", name="gamma")
        self.beta = layers.Embedding(self.n_classes, channels, embeddings_initializer="zeros", name="beta")
        self.gamma.build((None,))
        self.beta.build((None,))

    def call(self, x, labels, training=False):
        x = self.norm(x, training=training)
        return x * self.gamma(labels)[:, None, None, :] + self.beta(labels)[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "n_classes": self.n_classes, "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="visrec")
class Generator(keras.Model):
    """(latent, category) -> image of ``resolution`` x ``resolution`` x 3 in [-1, 1]."""

    def __init__(self, n_classes: int, latent_dim: int = 64, resolution: int = 64, width: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.n_classes, self.latent_dim, self.resolution, self.width = (
            n_classes,
            latent_dim,
            resolution,
            width,
        )
        steps = _upsamplings(resolution)
        top = width * 2 ** (steps - 1)
        self.label_embedding = layers.Embedding(n_classes, 32, name="label_embedding")
        self.project = layers.Dense(4 * 4 * top, use_bias=False, name="project")
        self.reshape = layers.Reshape((4, 4, top))
        self.blocks = []
        for k in range(steps - 1):
            channels = top // 2 ** (k + 1)
            self.blocks += [
                ConditionalBatchNorm(n_classes, name=f"bn{k}"),
                layers.ReLU(),
                layers.Conv2DTranspose(channels, 4, strides=2, padding="same", use_bias=False, name=f"up{k}"),
            ]
        self.blocks += [ConditionalBatchNorm(n_classes, name="bn_out"), layers.ReLU()]
        self.to_rgb = layers.Conv2DTranspose(
            3, 4, strides=2, padding="same", activation="tanh", name="to_rgb"
        )

    def call(self, inputs, training=False):
        z, labels = inputs
        x = ops.concatenate([z, self.label_embedding(labels)], axis=-1)
        x = self.reshape(self.project(x))
        for layer in self.blocks:
            x = layer(x, labels, training=training) if isinstance(layer, ConditionalBatchNorm) else layer(x)
        return self.to_rgb(x)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "n_classes": self.n_classes,
            "latent_dim": self.latent_dim,
            "resolution": self.resolution,
            "width": self.width,
        }


@keras.saving.register_keras_serializable(package="visrec")
class Discriminator(keras.Model):
    """(image, category) -> a real/fake logit, with a projection on the category."""

    def __init__(
        self, n_classes: int, resolution: int = 64, width: int = 32, minibatch_kernels: int = 0, **kwargs
    ):
        super().__init__(**kwargs)
        self.n_classes, self.resolution, self.width = n_classes, resolution, width
        self.minibatch_kernels = minibatch_kernels
        steps = _upsamplings(resolution)
        self.convs = [
            layers.SpectralNormalization(
                layers.Conv2D(width * 2**k, 4, strides=2, padding="same"), name=f"conv{k}"
            )
            for k in range(steps)
        ]
        features = width * 2 ** (steps - 1)
        self.pool = layers.GlobalAveragePooling2D()
        self.head = layers.SpectralNormalization(layers.Dense(1), name="head")
        if minibatch_kernels:
            self.minibatch_projection = layers.Dense(
                minibatch_kernels * MINIBATCH_DIMS, use_bias=False, name="minibatch_projection"
            )
            self.minibatch_head = layers.Dense(1, use_bias=False, name="minibatch_head")
        self.label_projection = layers.Embedding(n_classes, features, name="label_projection")
        # The spectrally normalised features are small; normalising them lets the (unconstrained)
        # classifier reach confident logits in hundreds of steps instead of thousands. Without it the
        # classifier stayed near chance on the demo shop within the 2-minute budget, and so did the
        # category signal the generator gets from it.
        self.classifier_norm = layers.LayerNormalization(name="classifier_norm")
        self.classifier = layers.Dense(n_classes, name="classifier")

    def call(self, inputs, training=False):
        """(real/fake logit (batch, 1), category logits (batch, n_classes))."""
        images, labels = inputs
        x = images
        for conv in self.convs:
            x = ops.leaky_relu(conv(x, training=training), 0.2)
        h = self.pool(x)
        projection = ops.sum(self.label_projection(labels) * h, axis=-1, keepdims=True)
        logit = self.head(h, training=training) + projection
        if self.minibatch_kernels:
            logit = logit + self.minibatch_head(self.same_category_closeness(x, labels))
        return logit, self.classifier(self.classifier_norm(h))

    def same_category_closeness(self, x, labels):
        """Minibatch discrimination (Salimans et al. 2016) among images of the same category: for each
        image, how close the others of its category in the batch are, in ``minibatch_kernels`` learnt
        projections. A generator drawing one image per category is then visible to the discriminator."""
        batch = ops.shape(x)[0]
        m = ops.reshape(
            self.minibatch_projection(ops.reshape(x, (batch, -1))),
            (batch, self.minibatch_kernels, MINIBATCH_DIMS),
        )
        distance = ops.sum(ops.abs(m[:, None] - m[None, :]), axis=-1)  # (batch, batch, kernels)
        same = ops.cast(labels[:, None] == labels[None, :], x.dtype) * (1.0 - ops.eye(batch, dtype=x.dtype))
        return ops.sum(ops.exp(-distance) * same[:, :, None], axis=1) / (ops.sum(same, axis=1)[:, None] + 1.0)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "n_classes": self.n_classes,
            "resolution": self.resolution,
            "width": self.width,
            "minibatch_kernels": self.minibatch_kernels,
        }


def diff_augment(images, seed_generator, shift: float = 0.125, cutout: float = 0.5):
    """Differentiable augmentation (Zhao et al. 2020), applied alike to real and generated images
    before the discriminator: a random translation (zeros fill, up to ``shift`` of the side) and one
    random square cut out (``cutout`` of the side) per image. With a catalog of a few thousand images
    the discriminator otherwise memorises them and the generator collapses; colour is left alone."""
    shape = ops.shape(images)
    batch, size = shape[0], shape[1]
    limit = ops.cast(ops.cast(size, "float32") * shift, "int32")
    offsets = keras.random.randint((batch, 2), -limit, limit + 1, seed=seed_generator)
    grid = ops.arange(size)[None, :]
    rows, cols = grid - offsets[:, :1], grid - offsets[:, 1:]  # (batch, size): source index per target
    valid = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    rows, cols = ops.clip(rows, 0, size - 1), ops.clip(cols, 0, size - 1)
    images = ops.take_along_axis(images, rows[:, :, None, None], axis=1)
    images = ops.take_along_axis(images, cols[:, None, :, None], axis=2)
    side = ops.cast(ops.cast(size, "float32") * cutout, "int32")
    corner = keras.random.randint((batch, 2), 0, size - side + 1, seed=seed_generator)
    cut_rows = (grid >= corner[:, :1]) & (grid < corner[:, :1] + side)
    cut_cols = (grid >= corner[:, 1:]) & (grid < corner[:, 1:] + side)
    keep = valid & ~(cut_rows[:, :, None] & cut_cols[:, None, :])
    return images * ops.cast(keep, images.dtype)[..., None]


LOSSES = ("non_saturating", "hinge")


class _OptimizerPair:
    """The discriminator's and the generator's optimizers, seen by Keras's JAX trainer as one: it
    carries ``variables`` through each step and builds nothing (both are built by ``compile``)."""

    built = True

    def __init__(self, *optimizers):
        self.optimizers = optimizers

    @property
    def variables(self) -> list:
        return [v for optimizer in self.optimizers for v in optimizer.variables]

    def build(self, variables) -> None:
        pass


@keras.saving.register_keras_serializable(package="visrec")
class ConditionalGAN(keras.Model):
    """Generator and discriminator trained together: ``fit((images, labels))`` with images in [-1, 1].

    ``class_names`` travel with the model so a saved GAN knows what each label means."""

    def __init__(
        self,
        class_names: list[str],
        latent_dim: int = 64,
        resolution: int = 64,
        width: int = 32,
        label_smoothing: float = 0.1,
        class_weight: float = 1.0,
        augment: bool = True,
        seed: int = 42,
        minibatch_kernels: int = 0,
        ema_decay: float = 0.0,
        loss: str = "non_saturating",
        temperature: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 < temperature <= 1.0:
            raise ValueError(
                f"temperature must be in (0, 1] (1: the training distribution), got {temperature}"
            )
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no average), got {ema_decay}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.class_names = list(class_names)
        self.ema_decay, self.loss, self.temperature = ema_decay, loss, temperature
        self.latent_dim, self.resolution, self.width = latent_dim, resolution, width
        self.label_smoothing, self.class_weight, self.seed = label_smoothing, class_weight, seed
        self.augment, self.minibatch_kernels = augment, minibatch_kernels
        n = len(self.class_names)
        self.generator = Generator(n, latent_dim, resolution, width, name="generator")
        self.discriminator = Discriminator(n, resolution, width, minibatch_kernels, name="discriminator")
        self.ema_generator = None
        if ema_decay:
            self.ema_generator = Generator(n, latent_dim, resolution, width, name="ema_generator")
            self.ema_generator.trainable = False  # moved by the average, never by gradients
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    def build(self, input_shape=None) -> None:
        z = ops.zeros((1, self.latent_dim))
        y = ops.zeros((1,), dtype="int32")
        self.discriminator((self.generator((z, y)), y))
        if self.ema_generator is not None:
            self.ema_generator((z, y))
            for average, weight in zip(self.ema_generator.weights, self.generator.weights, strict=True):
                average.assign(ops.copy(weight))  # starts where the generator does (a buffer of its own)
        self.built = True

    @property
    def sampler(self) -> Generator:
        """The generator that draws images: the weights' moving average when there is one."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def _ema_decay_at(self, step):
        """The average's decay at generator step ``step``: ramped up from 0.1 (as TensorFlow's
        ExponentialMovingAverage with ``num_updates``) so that a short night's average does not keep
        the random initial weights."""
        step = ops.cast(step, "float32")
        return ops.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def compile(
        self,
        d_optimizer=None,
        g_optimizer=None,
        d_learning_rate: float = 2e-4,
        g_learning_rate: float = 2e-4,
        **kwargs,
    ):
        """Adam with beta_1 0.5 for both networks (the DCGAN settings, Radford et al. 2016) at their
        own learning rates (unequal ones: the two time-scale rule, Heusel et al. 2017), unless
        optimizers are given."""
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer or keras.optimizers.Adam(d_learning_rate, beta_1=0.5)
        self.g_optimizer = g_optimizer or keras.optimizers.Adam(g_learning_rate, beta_1=0.5)
        if keras.backend.backend() == "jax":
            # JAX's trainer threads `self.optimizer.variables` through each (stateless) step: make
            # them both optimizers' variables, built now on the weights each one updates.
            if not self.built:
                self.build()
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self.g_optimizer.build(self.generator.trainable_variables)
            self.optimizer = _OptimizerPair(self.d_optimizer, self.g_optimizer)

    def call(self, inputs, training=False):
        return (self.generator if training else self.sampler)(inputs, training=training)

    def generate(self, labels, seed: int | None = None, temperature: float | None = None):
        """Images in [-1, 1] for integer ``labels`` (one per label), from latents drawn at
        ``temperature`` (the model's own unless given): N(0, t^2) instead of the N(0, 1) it trained
        on. Below 1 the samples keep nearer the modes the generator learned best (more recognisable,
        less varied: the truncation trick of BigGAN, as Glow's temperature)."""
        labels = ops.convert_to_tensor(labels, dtype="int32")
        generator = keras.random.SeedGenerator(seed) if seed is not None else self.seed_generator
        z = keras.random.normal((ops.shape(labels)[0], self.latent_dim), seed=generator)
        scale = self.temperature if temperature is None else temperature
        return self.sampler((z * scale, labels), training=False)

    def _augment(self, images):
        return diff_augment(images, self.seed_generator) if self.augment else images

    def _noise(self, images):
        return keras.random.normal((ops.shape(images)[0], self.latent_dim), seed=self.seed_generator)

    # The losses, shared by every backend's step.
    def discriminator_loss(self, images, labels, z):
        """Real vs generated, plus the auxiliary classifier's loss on real images only. Non-saturating:
        cross-entropy with one-sided label smoothing (real targets 1 - s, fake 0); hinge (Lim & Ye
        2017, as SNGAN and BigGAN): real logits pushed above 1, generated ones below -1."""
        cce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        fake = self.generator((z, labels), training=True)
        real_logits, real_classes = self.discriminator((self._augment(images), labels), training=True)
        fake_logits, _ = self.discriminator((self._augment(fake), labels), training=True)
        if self.loss == "hinge":
            adversarial = ops.mean(ops.relu(1.0 - real_logits)) + ops.mean(ops.relu(1.0 + fake_logits))
        else:
            bce = keras.losses.BinaryCrossentropy(from_logits=True)
            adversarial = bce(ops.ones_like(real_logits) * (1.0 - self.label_smoothing), real_logits) + bce(
                ops.zeros_like(fake_logits), fake_logits
            )
        return adversarial + self.class_weight * cce(labels, real_classes)

    def generator_loss(self, labels, z):
        """Fool the discriminator (non-saturating cross-entropy, or the hinge generator's -logit),
        plus: be recognised as the requested category."""
        cce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        fake_logits, fake_classes = self.discriminator(
            (self._augment(self.generator((z, labels), training=True)), labels), training=True
        )
        if self.loss == "hinge":
            adversarial = -ops.mean(fake_logits)
        else:
            adversarial = keras.losses.BinaryCrossentropy(from_logits=True)(
                ops.ones_like(fake_logits), fake_logits
            )
        return adversarial + self.class_weight * cce(labels, fake_classes)

    def train_step(self, *args):
        """One discriminator update, then one generator update (Keras's per-backend pattern: JAX's
        trainer hands the step its state and takes the new one back)."""
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        return self._tf_train_step(*args)

    def _tf_train_step(self, data):
        import tensorflow as tf

        images, labels = data
        z = self._noise(images)
        with tf.GradientTape() as tape:
            d_loss = self.discriminator_loss(images, labels, z)
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights, strict=True))
        z = self._noise(images)
        with tf.GradientTape() as tape:
            g_loss = self.generator_loss(labels, z)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights, strict=True))
        if self.ema_generator is not None:
            decay = self._ema_decay_at(self.g_optimizer.iterations)
            for average, weight in zip(self.ema_generator.weights, self.generator.weights, strict=True):
                average.assign(decay * average + (1.0 - decay) * weight)
        return self._logs(d_loss, g_loss)

    def _logs(self, d_loss, g_loss) -> dict:
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    def _jax_train_step(self, state, data):
        """The same two updates as pure functions of the state, as JAX requires: every variable is
        read from (and written to) a stateless scope over the state's values, and each network's
        gradients come from ``jax.value_and_grad`` over its own weights."""
        import jax

        groups = (self.trainable_variables, self.non_trainable_variables, self.optimizer.variables,
                  self.metrics_variables)  # fmt: skip
        variables, values = {}, {}
        for group, group_values in zip(groups, state, strict=True):
            for variable, value in zip(group, group_values, strict=True):
                variables[id(variable)], values[id(variable)] = variable, value

        def run(fn, overrides: dict):
            """``fn()`` with every variable at its current value (or ``overrides``); returns its
            result and the values of every variable after it."""
            mapping = [(variables[k], overrides.get(k, v)) for k, v in values.items()]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                out = fn()
            return out, {k: scope.get_current_value(v) for k, v in variables.items()}

        def update(network, optimizer, loss_fn):
            weights = [id(v) for v in network.trainable_variables]

            def loss_of(weight_values):
                loss, after = run(loss_fn, dict(zip(weights, weight_values, strict=True)))
                return loss, {k: v for k, v in after.items() if k not in weights}

            (loss, after), grads = jax.value_and_grad(loss_of, has_aux=True)([values[k] for k in weights])
            values.update(after)  # batch-norm statistics, the random seed's state
            slots = [id(v) for v in optimizer.variables]
            new_weights, new_slots = optimizer.stateless_apply(
                [values[k] for k in slots], grads, [values[k] for k in weights]
            )
            values.update(zip(weights, new_weights, strict=True))
            values.update(zip(slots, new_slots, strict=True))
            return loss

        def step(fn):
            """``fn()`` with its variable updates kept (the noise draws advance the seed)."""
            out, after = run(fn, {})
            values.update(after)
            return out

        images, labels = data
        z = step(lambda: self._noise(images))
        d_loss = update(
            self.discriminator, self.d_optimizer, lambda: self.discriminator_loss(images, labels, z)
        )
        z = step(lambda: self._noise(images))
        g_loss = update(self.generator, self.g_optimizer, lambda: self.generator_loss(labels, z))
        if self.ema_generator is not None:
            decay = self._ema_decay_at(values[id(self.g_optimizer.iterations)])
            for average, weight in zip(self.ema_generator.weights, self.generator.weights, strict=True):
                values[id(average)] = decay * values[id(average)] + (1.0 - decay) * values[id(weight)]
        logs = step(lambda: self._logs(d_loss, g_loss))
        return logs, tuple([values[id(v)] for v in group] for group in groups)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "class_names": self.class_names,
            "latent_dim": self.latent_dim,
            "resolution": self.resolution,
            "width": self.width,
            "label_smoothing": self.label_smoothing,
            "class_weight": self.class_weight,
            "augment": self.augment,
            "seed": self.seed,
            "minibatch_kernels": self.minibatch_kernels,
            "ema_decay": self.ema_decay,
            "loss": self.loss,
            "temperature": self.temperature,
        }

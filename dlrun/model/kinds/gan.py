"""The ``gan`` model kind: a generative adversarial network with its own training step (book 8.5,
keras-io ``dcgan_overriding_train_step.py``), trained by ``fit`` on images alone.

Wiring (what the runner does with it):

- **build**: make the generator (input ``(latent_dim,)``, output an image) and the discriminator
  (input that image shape, output ``(1,)``, a probability that the image is *generated*) from
  the recipe with dlrun's builder, then ``GAN(generator, discriminator, latent_dim,
  label_noise=0.05)``; the shapes are checked here.
- **compile**: ``model.compile(d_optimizer=..., g_optimizer=..., loss_fn="binary_crossentropy")``
  — two optimizer instances, one per network; ``loss``/``metrics`` are refused. ``model.optimizer``
  stays ``None``: learning-rate callbacks (ReduceLROnPlateau, schedules) have no optimizer to act on
  and must be refused for this kind at validation. Mixed precision is handled: under a
  ``mixed_float16`` policy both optimizers are wrapped in a ``LossScaleOptimizer`` and each
  step scales its own loss.
- **fit**: ``fit(x)`` (``(x, y)`` accepted, ``y`` ignored); logs ``d_loss`` and ``g_loss``.
  ``validation_data`` is allowed (``val_d_loss``, ``val_g_loss`` from a fixed latent draw) but
  says little about a GAN.
- **checkpoint**: ``save_weights`` holds both networks and both optimizers' variables (paths
  ``d_optimizer/…``, ``g_optimizer/…``: the attribute names must not change); it does NOT hold
  seed-generator states — the GAN's latent/label-noise generator is ``model.seed_generator``
  whose state variable ``latent_seed_generator/seed_generator_state`` is in ``model.variables``,
  so ``dlrun.training.checkpoints._seed_variables`` saves and restores it with the dropout ones.
  To restore, build the optimizers first: ``model.load_weights`` does (``build_optimizers``);
  ``checkpoints.restore_model`` calls ``model.optimizer.build(...)``, which must be skipped when
  ``model.optimizer is None``. With ``keras.utils.set_random_seed`` and op determinism, a run
  stopped after k steps and resumed this way ends with exactly an uninterrupted run's weights.

The book's settings: latent_dim 32, batch 20, label noise 0.05, discriminator
``RMSprop(8e-4, clipvalue=1.0, decay=1e-8)``, generator ``RMSprop(4e-4, clipvalue=1.0,
decay=1e-8)``. Keras 3 has no ``decay``: ``book.book_gan_optimizers`` gives the same rates with an
``InverseTimeDecay(decay_steps=1, decay_rate=1e-8)`` schedule (a 1e-4 relative change over
10,000 steps). Labels as in the book: generated 1, real 0; the generator learns from "all real".
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from dlrun.errors import ModelBuildError
from dlrun.model.kinds.parts import (SavesSeedState, check_output, images_only, loss_scaled, refuse_compile_args,
                                     require_model, with_models)

_EVAL_SEED = 4321  # validation's latent points: a fixed draw that leaves the training RNG alone


@keras.saving.register_keras_serializable(package="dlrun")
class GAN(SavesSeedState, keras.Model):
    """Alternating discriminator and generator updates on batches of real images.

    Args:
        generator: ``keras.Model`` ``(latent_dim,)`` → image.
        discriminator: ``keras.Model`` image → ``(1,)`` sigmoid (1 = generated).
        latent_dim: size of the random latent vectors.
        label_noise: uniform noise in ``[0, label_noise)`` added to the discriminator's labels.
        seed: seed of the latent and label-noise draws (default: from Keras' global seed).

    Example:

        gan = GAN(generator, discriminator, latent_dim=32)
        gan.compile(d_optimizer=keras.optimizers.RMSprop(8e-4, clipvalue=1.0),
                    g_optimizer=keras.optimizers.RMSprop(4e-4, clipvalue=1.0))
        gan.fit(images, epochs=20, batch_size=20)
    """

    def __init__(self, generator, discriminator, latent_dim: int, label_noise: float = 0.05,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_networks(generator, discriminator, int(latent_dim))
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim, self.label_noise, self.seed = int(latent_dim), float(label_noise), seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="latent_seed_generator")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self._compile_args = None  # serialized d_optimizer, g_optimizer, loss_fn, for get_compile_config
        self.built = True  # the networks are built models: nothing waits for a first call

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def compile(self, d_optimizer="rmsprop", g_optimizer="rmsprop", loss_fn="binary_crossentropy", **kwargs):
        refuse_compile_args("GAN", kwargs, "it trains with loss_fn on its discriminator's outputs and logs d_loss and "
                                           "g_loss itself")
        kwargs.pop("optimizer", None)
        d_optimizer, g_optimizer = keras.optimizers.get(d_optimizer), keras.optimizers.get(g_optimizer)
        if d_optimizer is g_optimizer:
            raise ModelBuildError("GAN: d_optimizer and g_optimizer must be two optimizer instances (each keeps "
                                  "the state of its own network)")
        loss_fn = keras.losses.get(loss_fn)
        self._compile_args = {name: keras.saving.serialize_keras_object(value) for name, value in
                              (("d_optimizer", d_optimizer), ("g_optimizer", g_optimizer), ("loss_fn", loss_fn))}
        super().compile(optimizer=None, **kwargs)
        self.d_optimizer, self.g_optimizer = loss_scaled(self, d_optimizer), loss_scaled(self, g_optimizer)
        self.loss_fn = loss_fn

    def get_compile_config(self):
        return dict(self._compile_args) if self._compile_args else None

    def compile_from_config(self, config):
        self.compile(**{k: keras.saving.deserialize_keras_object(v) for k, v in config.items()})
        self.build_optimizers()

    def build_optimizers(self) -> None:
        """Create both optimizers' variables (before their saved values are loaded)."""
        for optimizer, network in ((self.d_optimizer, self.discriminator), (self.g_optimizer, self.generator)):
            if not optimizer.built:
                optimizer.build(network.trainable_variables)

    def load_weights(self, filepath, *args, **kwargs):
        if self._compile_args:  # else Keras skips an unbuilt optimizer's saved state with a mere warning
            self.build_optimizers()
        super().load_weights(filepath, *args, **kwargs)

    def call(self, inputs, training=None):
        return ops.cast(self.generator(inputs, training=training), "float32")

    def train_step(self, data):
        real = ops.cast(images_only(data), "float32")
        n = ops.shape(real)[0]
        # The discriminator learns generated (1) from real (0), on noisy labels.
        z = keras.random.normal((n, self.latent_dim), seed=self.seed_generator)
        images = ops.concatenate([self(z, training=False), real], axis=0)
        labels = ops.concatenate([ops.ones((n, 1)), ops.zeros((n, 1))], axis=0)
        labels = labels + self.label_noise * keras.random.uniform(ops.shape(labels), seed=self.seed_generator)
        d_net, g_net = self.discriminator, self.generator
        with tf.GradientTape() as tape:
            d_loss = self._mean_loss(labels, d_net(images, training=True))
            scaled = self.d_optimizer.scale_loss(d_loss)  # unchanged unless loss scaling is on
        self.d_optimizer.apply_gradients(zip(tape.gradient(scaled, d_net.trainable_variables),
                                             d_net.trainable_variables))
        # The generator learns to make the discriminator say "real"; only its weights move.
        z = keras.random.normal((n, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self._mean_loss(ops.zeros((n, 1)), d_net(g_net(z, training=True), training=True))
            scaled = self.g_optimizer.scale_loss(g_loss)
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled, g_net.trainable_variables),
                                             g_net.trainable_variables))
        return self._track(d_loss, g_loss)

    def test_step(self, data):
        real = ops.cast(images_only(data), "float32")
        n = ops.shape(real)[0]
        fake = self(keras.random.normal((n, self.latent_dim), seed=_EVAL_SEED), training=False)
        labels = ops.concatenate([ops.ones((n, 1)), ops.zeros((n, 1))], axis=0)
        d_loss = self._mean_loss(labels, self.discriminator(ops.concatenate([fake, real], axis=0), training=False))
        g_loss = self._mean_loss(ops.zeros((n, 1)), self.discriminator(fake, training=False))
        return self._track(d_loss, g_loss)

    def generate(self, z):
        """Generated images of the latent points ``z`` (NumPy, float32)."""
        return ops.convert_to_numpy(self(ops.convert_to_tensor(z), training=False))

    def _mean_loss(self, labels, predictions):
        return ops.mean(self.loss_fn(labels, ops.cast(predictions, "float32")))

    def _track(self, d_loss, g_loss) -> dict:
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    def get_config(self):
        return {**super().get_config(), "generator": keras.saving.serialize_keras_object(self.generator),
                "discriminator": keras.saving.serialize_keras_object(self.discriminator),
                "latent_dim": self.latent_dim, "label_noise": self.label_noise, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**with_models(config, ("generator", "discriminator")))


def _check_networks(generator, discriminator, latent_dim: int) -> None:
    """The generator takes ``(latent_dim,)``; the discriminator takes what it makes and gives ``(1,)``."""
    require_model("GAN generator", generator)
    require_model("GAN discriminator", discriminator)
    g_input = tuple(generator.inputs[0].shape[1:])
    if g_input != (latent_dim,):
        raise ModelBuildError(f"GAN generator: takes inputs of shape {g_input}, latent_dim is {latent_dim}: "
                              f"it must take ({latent_dim},)")
    image_shape = tuple(discriminator.inputs[0].shape[1:])
    check_output("GAN generator", generator, image_shape, hint=" (the discriminator's input shape)")
    check_output("GAN discriminator", discriminator, (1,),
                 hint=" — end it with Dense(1, activation='sigmoid'), the probability that an image is generated")

"""The ``vae`` model kind: a variational autoencoder with its own training step (book 8.4,
keras-io ``generative/vae.py``).

Wiring (what the runner does with it):

- **build**: make the encoder body and the decoder from the recipe (layer lists or graphs, by
  dlrun's builder) and pass them through ``build_encoder(input_shape, latent_dim, body)``
  (adds the ``z_mean``/``z_log_var`` heads unless the body already ends in them) and
  ``build_decoder(latent_dim, body, output_shape)`` (checks it gives back the input's shape),
  then ``VAE(encoder, decoder, kl_weight=..., reconstruction=...)``.
- **compile**: ``model.compile(optimizer=...)`` and nothing else — ``loss``/``metrics`` are
  refused (the loss is reconstruction + kl_weight × KL). Under a ``mixed_float16`` policy Keras
  wraps the optimizer in a ``LossScaleOptimizer`` and ``train_step`` scales the loss for it.
- **fit**: ``fit(x)`` on the images alone (``(x, y)`` is accepted, ``y`` ignored);
  ``validation_data=x_val`` gives ``val_loss``, ``val_reconstruction_loss``, ``val_kl_loss``.
  Logged per epoch: ``loss``, ``reconstruction_loss``, ``kl_loss``.
- **checkpoint**: what dlrun's checkpoints already hold for any model — ``save_weights`` (weights
  and optimizer variables) plus the seed-generator states, among them the ``Sampling`` layer's
  (``dlrun.training.checkpoints._seed_variables`` finds it): a resumed run draws the same ε.
  ``model.save("x.keras")`` and ``keras.saving.load_model`` (safe mode) round-trip, compiled.
  Evaluation draws ε from a fixed seed, so it changes no random state (and is repeatable).

Losses (keras-io's reduction): reconstruction summed over the pixels, KL summed over the latent
dimensions, both averaged over the batch. The book's loss is the per-pixel mean and
``5e-4 × mean over latent dims``, i.e. (reconstruction + 0.392·KL) / 784 at 28×28 and 2-D latent:
``kl_weight=0.392`` gives its balance (``book.book_kl_weight``).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from dlrun.errors import ModelBuildError
from dlrun.model.kinds.parts import (SavesSeedState, assemble, images_only, refuse_compile_args, require_model,
                                     with_models)

RECONSTRUCTION = ("binary_crossentropy", "mse")
_EVAL_SEED = 1234  # evaluation's ε: a fixed draw, so evaluate() leaves the training RNG alone


@keras.saving.register_keras_serializable(package="dlrun")
class Sampling(keras.layers.Layer):
    """``z = z_mean + exp(z_log_var / 2) · ε`` with ``ε ~ N(0, I)`` drawn from the layer's own
    seed generator (a variable: checkpoints save it), or from ``seed`` when one is given."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, seed=None):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(ops.shape(z_mean), dtype=z_mean.dtype,
                                      seed=self.seed_generator if seed is None else seed)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def build_encoder(input_shape, latent_dim: int, body, name: str = "encoder"):
    """The encoder ``input → [z_mean, z_log_var]``: ``body`` (a list of built layers, or a
    ``keras.Model``) followed by two ``Dense(latent_dim)`` heads named ``z_mean`` and
    ``z_log_var``. A ``keras.Model`` body that already has those two outputs is used as it is."""
    if isinstance(body, keras.Model) and len(body.outputs) == 2:
        _check_heads(name, body, latent_dim)
        return body
    trunk = assemble(name, input_shape, body)
    features = trunk.outputs[0]
    if len(trunk.outputs) != 1 or len(features.shape) != 2:
        raise ModelBuildError(f"{name}: ends with shape {tuple(features.shape[1:])}, the latent heads need a flat "
                              f"vector — end it with Flatten (and a Dense layer, as the book's Dense(32))")
    z_mean = keras.layers.Dense(latent_dim, name="z_mean", dtype="float32")(features)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var", dtype="float32")(features)
    return keras.Model(trunk.inputs, [z_mean, z_log_var], name=name)


def build_decoder(latent_dim: int, body, output_shape, name: str = "decoder"):
    """The decoder ``z → image``: ``body`` (built layers or a ``keras.Model``) on a
    ``(latent_dim,)`` input, checked to give ``output_shape`` (the encoder's input shape)."""
    return assemble(name, (latent_dim,), body, output_shape)


def _check_heads(role: str, encoder, latent_dim: int | None = None) -> int:
    """The encoder has one input and outputs ``z_mean, z_log_var`` (a keras-io encoder's third
    output, its own ``z``, is ignored): returns the latent size."""
    shapes = [tuple(out.shape[1:]) for out in encoder.outputs]
    if len(encoder.inputs) != 1 or len(shapes) not in (2, 3) or len(shapes[0]) != 1 or shapes[1] != shapes[0]:
        raise ModelBuildError(f"{role}: must have one input and the outputs z_mean, z_log_var of one shape "
                              f"(latent_dim,); it has {len(encoder.inputs)} input(s) and outputs {shapes}")
    if latent_dim is not None and shapes[0][0] != latent_dim:
        raise ModelBuildError(f"{role}: its z_mean has size {shapes[0][0]}, latent_dim is {latent_dim}")
    return shapes[0][0]


@keras.saving.register_keras_serializable(package="dlrun")
class VAE(SavesSeedState, keras.Model):
    """A variational autoencoder trained by ``fit(x)``; calling it reconstructs from ``z_mean``.

    Args:
        encoder: ``keras.Model`` image → ``[z_mean, z_log_var]`` (see ``build_encoder``).
        decoder: ``keras.Model`` ``(latent_dim,)`` → image of the encoder's input shape.
        kl_weight: weight of the KL divergence in the loss.
        reconstruction: ``"binary_crossentropy"`` (pixels in [0, 1], a sigmoid decoder) or ``"mse"``.
        seed: the sampling layer's seed (default: from Keras' global seed).

    Example:

        vae = VAE(encoder, decoder)
        vae.compile(optimizer="rmsprop")
        vae.fit(x_train, epochs=10, batch_size=16, validation_data=x_val)
    """

    def __init__(self, encoder, decoder, kl_weight: float = 1.0, reconstruction: str = "binary_crossentropy",
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if reconstruction not in RECONSTRUCTION:
            raise ModelBuildError(f"VAE: reconstruction must be one of {', '.join(RECONSTRUCTION)}, "
                                  f"not {reconstruction!r}")
        require_model("VAE encoder", encoder)
        require_model("VAE decoder", decoder)
        self.latent_dim = _check_heads("VAE encoder", encoder)
        image_shape = tuple(encoder.inputs[0].shape[1:])
        assemble("VAE decoder", (self.latent_dim,), decoder, image_shape)  # checks its shapes
        self.encoder, self.decoder = encoder, decoder
        self.kl_weight, self.reconstruction, self.seed = float(kl_weight), reconstruction, seed
        self.sampling = Sampling(seed, name="sampling")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        self.built = True  # the parts are built models: nothing waits for a first call

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def compile(self, optimizer="rmsprop", **kwargs):
        refuse_compile_args("VAE", kwargs, "its loss is the reconstruction loss plus kl_weight × the KL "
                                           "divergence, and it logs loss, reconstruction_loss and kl_loss itself")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips this for a model whose compile() is overridden; ours takes its own config back.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=None):
        z_mean, _ = self._encode(inputs, training)
        return ops.cast(self.decoder(z_mean, training=training), "float32")

    def train_step(self, data):
        x = images_only(data)
        with tf.GradientTape() as tape:
            losses = self._loss_terms(x, None, training=True)
            scaled = self.optimizer.scale_loss(losses["loss"])  # unchanged unless loss scaling is on
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._track(losses)

    def test_step(self, data):
        return self._track(self._loss_terms(images_only(data), _EVAL_SEED, training=False))

    def generate(self, z):
        """Decoded images of the latent points ``z`` (NumPy, float32)."""
        return ops.convert_to_numpy(ops.cast(self.decoder(ops.convert_to_tensor(z), training=False), "float32"))

    def encode(self, x, batch_size: int = 256):
        """``z_mean`` of the images ``x`` (NumPy)."""
        return self.encoder.predict(x, batch_size=batch_size, verbose=0)[0]

    def _encode(self, x, training):
        outputs = self.encoder(x, training=training)
        return ops.cast(outputs[0], "float32"), ops.cast(outputs[1], "float32")

    def _loss_terms(self, x, seed, training: bool) -> dict:
        x = ops.cast(x, "float32")
        z_mean, z_log_var = self._encode(x, training)
        z = self.sampling([z_mean, z_log_var], seed=seed)
        reconstruction = ops.cast(self.decoder(z, training=training), "float32")
        if self.reconstruction == "mse":
            per_value = ops.square(x - reconstruction)
        else:
            per_value = ops.binary_crossentropy(x, reconstruction)
        reconstruction_loss = ops.mean(ops.sum(per_value, axis=tuple(range(1, len(x.shape)))))
        kl = -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
        kl_loss = ops.mean(ops.sum(kl, axis=1))
        return {"loss": reconstruction_loss + self.kl_weight * kl_loss,
                "reconstruction_loss": reconstruction_loss, "kl_loss": kl_loss}

    def _track(self, losses: dict) -> dict:
        for tracker in self.metrics:
            tracker.update_state(losses[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.metrics}

    def get_config(self):
        return {**super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder), "kl_weight": self.kl_weight,
                "reconstruction": self.reconstruction, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**with_models(config, ("encoder", "decoder")))

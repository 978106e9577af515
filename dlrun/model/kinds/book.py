"""The book's chapter 8 architectures and settings (Deep Learning with Python, 1st ed.):
the 8.4 VAE and the 8.5 deep convolutional GAN, as Keras 3 models, for recipes and tests.

The VAE is built from layer lists through ``build_encoder``/``build_decoder``, as the builder
will build a recipe's. The GAN takes a smaller ``filters`` for CPU tests; its discriminator,
three unpadded stride-2 convolutions as in the book, needs images of at least 28×28.
"""

from __future__ import annotations

import math

from dlrun.errors import ModelBuildError

BOOK_VAE_BATCH_SIZE = 16  # 8.4: vae.fit(..., epochs=10, batch_size=16), optimizer 'rmsprop'
BOOK_GAN_BATCH_SIZE = 20  # 8.5: 10,000 iterations of 20 real + 20 generated images
BOOK_GAN_LATENT_DIM = 32
BOOK_GAN_LABEL_NOISE = 0.05


def book_kl_weight(image_shape=(28, 28, 1), latent_dim: int = 2) -> float:
    """The KL weight that gives the book's loss balance under the VAE's summed losses: the book
    averages the reconstruction over pixels and weighs a mean over latent dims by 5e-4."""
    return math.prod(image_shape) * 1e-3 / latent_dim


def book_vae_parts(image_shape=(28, 28, 1), latent_dim: int = 2):
    """The 8.4 encoder (four 3×3 convolutions, one strided, then Dense(32)) and decoder (Dense,
    Reshape, a strided Conv2DTranspose, a sigmoid Conv2D) for images of even height and width."""
    from keras import layers

    from dlrun.model.kinds.vae import build_decoder, build_encoder

    height, width, channels = image_shape
    if height % 2 or width % 2:
        raise ModelBuildError(f"book VAE: image height and width must be even, not {height}×{width}")
    encoder = build_encoder(image_shape, latent_dim, [
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu", strides=2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Flatten(),
        layers.Dense(32, activation="relu"),
    ])
    before_flattening = (height // 2, width // 2, 64)
    decoder = build_decoder(latent_dim, [
        layers.Dense(math.prod(before_flattening), activation="relu"),
        layers.Reshape(before_flattening),
        layers.Conv2DTranspose(32, 3, padding="same", activation="relu", strides=2),
        layers.Conv2D(channels, 3, padding="same", activation="sigmoid", dtype="float32"),
    ], image_shape)
    return encoder, decoder


def book_vae(image_shape=(28, 28, 1), latent_dim: int = 2, kl_weight: float | None = None, seed: int | None = None):
    """The 8.4 VAE (default KL weight: the book's balance, see ``book_kl_weight``)."""
    from dlrun.model.kinds.vae import VAE

    weight = book_kl_weight(image_shape, latent_dim) if kl_weight is None else kl_weight
    return VAE(*book_vae_parts(image_shape, latent_dim), kl_weight=weight, seed=seed, name="vae")


def book_gan_models(image_shape=(32, 32, 3), latent_dim: int = BOOK_GAN_LATENT_DIM, filters: int = 128):
    """The 8.5 generator (Dense → (h/2, w/2, filters), 5×5 convolutions of 2·filters, one strided
    transposed convolution, a tanh 7×7 output) and discriminator (four convolutions of ``filters``
    with LeakyReLU, Dropout(0.4), a sigmoid Dense(1)). The book: 32×32×3, filters 128."""
    from keras import layers

    from dlrun.model.kinds.parts import assemble

    height, width, channels = image_shape
    if height % 2 or width % 2:
        raise ModelBuildError(f"book GAN: image height and width must be even, not {height}×{width}")
    start = (height // 2, width // 2, filters)
    wide = 2 * filters
    generator = assemble("generator", (latent_dim,), [
        layers.Dense(math.prod(start)), layers.LeakyReLU(),
        layers.Reshape(start),
        layers.Conv2D(wide, 5, padding="same"), layers.LeakyReLU(),
        layers.Conv2DTranspose(wide, 4, strides=2, padding="same"), layers.LeakyReLU(),
        layers.Conv2D(wide, 5, padding="same"), layers.LeakyReLU(),
        layers.Conv2D(wide, 5, padding="same"), layers.LeakyReLU(),
        layers.Conv2D(channels, 7, activation="tanh", padding="same", dtype="float32"),
    ], image_shape)
    discriminator = assemble("discriminator", image_shape, [
        layers.Conv2D(filters, 3), layers.LeakyReLU(),
        layers.Conv2D(filters, 4, strides=2), layers.LeakyReLU(),
        layers.Conv2D(filters, 4, strides=2), layers.LeakyReLU(),
        layers.Conv2D(filters, 4, strides=2), layers.LeakyReLU(),
        layers.Flatten(),
        layers.Dropout(0.4),
        layers.Dense(1, activation="sigmoid", dtype="float32"),
    ], (1,))
    return generator, discriminator


def book_gan(image_shape=(32, 32, 3), latent_dim: int = BOOK_GAN_LATENT_DIM, filters: int = 128,
             seed: int | None = None):
    """The 8.5 GAN, uncompiled (compile it with ``book_gan_optimizers()``)."""
    from dlrun.model.kinds.gan import GAN

    return GAN(*book_gan_models(image_shape, latent_dim, filters), latent_dim=latent_dim,
               label_noise=BOOK_GAN_LABEL_NOISE, seed=seed, name="gan")


def book_gan_optimizers():
    """``{"d_optimizer": ..., "g_optimizer": ...}`` as the book's RMSprop(lr, clipvalue=1.0,
    decay=1e-8): Keras 3 dropped ``decay``; ``InverseTimeDecay`` with one step per decay step
    is the same rate, ``lr / (1 + 1e-8 · iterations)``."""
    import keras

    def rmsprop(rate: float):
        schedule = keras.optimizers.schedules.InverseTimeDecay(rate, decay_steps=1, decay_rate=1e-8)
        return keras.optimizers.RMSprop(learning_rate=schedule, clipvalue=1.0)

    return {"d_optimizer": rmsprop(8e-4), "g_optimizer": rmsprop(4e-4)}

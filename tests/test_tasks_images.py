"""Pixels in and out for the image tasks (dlrun/tasks/images.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.errors import UsageError
from dlrun.tasks.images import Preprocessing, load_image, preprocessing, save_image, tile_grid


@pytest.mark.parametrize("name,module,mode", [
    ("VGG19", "vgg19", "caffe"), ("vgg16", "vgg16", "caffe"), ("ResNet50", "resnet", "caffe"),
    ("InceptionV3", "inception_v3", "tf"), ("xception", "xception", "tf"), ("DenseNet121", "densenet", "torch"),
    ("EfficientNetB0", "efficientnet", "none"),
])
def test_an_application_name_gives_its_preprocessing_and_its_inverse(name, module, mode):
    import keras

    prep = preprocessing(name)
    assert prep.mode == mode
    pixels = np.random.default_rng(0).random((2, 5, 4, 3)).astype("float32") * 255
    expected = getattr(keras.applications, module).preprocess_input(pixels.copy())
    np.testing.assert_allclose(prep.forward(pixels), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(prep.inverse(prep.forward(pixels)), pixels, atol=1e-3)


def test_other_preprocessing_specs():
    assert preprocessing(None) == Preprocessing("none")
    assert preprocessing(1 / 255) == Preprocessing("rescale", 1 / 255)
    assert preprocessing("tf") == Preprocessing("tf")
    assert preprocessing(1 / 255).to_pixels(np.array([-0.5, 0.5, 2.0])).tolist() == [0, 127, 255]
    with pytest.raises(UsageError, match="did you mean 'VGG19'"):
        preprocessing("VGG91")
    with pytest.raises(UsageError, match="positive"):
        preprocessing(0)


def test_load_and_save_images(tmp_path):
    pixels = np.zeros((10, 20, 3), "float32")
    pixels[:, 10:] = [255, 0, 0]
    path = save_image(pixels, tmp_path / "sub" / "red.png")
    assert load_image(path).shape == (10, 20, 3) and load_image(path)[0, 15].tolist() == [255, 0, 0]
    gray = load_image(path, size=(5, 8), channels=1)
    assert gray.shape == (5, 8, 1) and gray[0, 0, 0] == 0 and gray[0, 7, 0] > 50
    with pytest.raises(UsageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "not.png").write_text("text")
    with pytest.raises(UsageError, match="cannot be read"):
        load_image(tmp_path / "not.png")


def test_tile_grid_places_tiles_row_by_row():
    tiles = [np.full((2, 3), i, "float32") for i in range(5)]
    grid = tile_grid(tiles, per_row=2, margin=1, fill=-1)
    assert grid.shape == (3 * 2 + 2, 2 * 3 + 1)
    assert grid[0, 0] == 0 and grid[0, 4] == 1 and grid[3, 0] == 2 and grid[6, 0] == 4 and grid[6, 4] == -1

"""Looking inside a convnet (the book's 5.4): activations, filter patterns, Grad-CAM heatmaps.

Wiring (``task: explain`` in a recipe, ``dlrun explain RUN --image path``): each function takes
a built ``keras.Model`` — a trained run's ``TrainedModel(...).model`` or a named
``keras.applications`` base built by ``dlrun.model.pretrained.build_application`` — and images
as pixels (``images.load_image(path, size=model's input size, channels=model's channels)``),
plus the :func:`~dlrun.tasks.images.preprocessing` the model expects: for a run, the rescale
factor of its image source (``rescale: 1/255``) or none when the model rescales itself; for a
base, its application name (``preprocessing("VGG16")``). They write PNGs under the directory
they are given (the run's ``explain/`` folder, then logged as MLflow artifacts) and return what
they wrote with the facts worth printing. Long loops report ``progress(step, total)``.

- :func:`layer_activations` (5.4.1): one PNG per layer, every channel of the image's activation
  as a tile (conv and pooling layers unless ``layers`` names others);
- :func:`filter_patterns` (5.4.2): per layer, a grid of the inputs that most excite its first
  ``filters`` filters, found by gradient ascent from a gray noisy image;
- :func:`grad_cam` (5.4.3): the class-activation heatmap of the predicted (or a given) class at
  the last convolution layer (or a named one), superimposed on the image; the array is returned.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dlrun.errors import UsageError
from dlrun.tasks.images import colorize, preprocessing as as_preprocessing, resize, safe_name, save_image, tile_grid
from dlrun.tasks.layers import (LayerTap, check_feature_map, conv_layers, flexible_prefix, last_conv_layer,
                                output_layer, spatial_input)

Progress = Callable[[int, int], None]
_MIN_TILE_PX = 32  # smaller feature maps are enlarged (nearest) so a 4×4 channel stays visible


@dataclass(frozen=True)
class LayerPicture:
    """One PNG about one layer: ``shape`` is the activation ``(h, w, channels)`` or, for filter
    patterns, ``(filters, size, size)``; ``activation`` is the filters' mean activation
    before and after the ascent (filter patterns only)."""

    layer: str
    path: Path
    shape: tuple
    activation: tuple[float, float] | None = None


def _batch(image) -> np.ndarray:
    image = np.asarray(image, dtype="float32")
    if image.ndim != 3:
        raise UsageError(f"image: expected (height, width, channels) pixels, got shape {image.shape}")
    return image[None]


def layer_activations(model, image, out_dir, *, layers: Sequence[str] | None = None, preprocessing=None,
                      images_per_row: int = 16, max_channels: int | None = None,
                      progress: Progress | None = None) -> list[LayerPicture]:
    """Every channel of each layer's activation for ``image`` as a grid, one PNG per layer (5.4.1).

    Args:
        layers: layer names; default every convolution and pooling layer.
        images_per_row: tiles per row (the book's 16).
        max_channels: draw only the first N channels of each layer.

    Each channel is standardized as in the book (mean 128, 64 per standard deviation) and drawn
    with the viridis colormap. Files: ``out_dir/NN_<layer>.png`` in layer order.
    """
    names = list(layers) if layers else [layer.name for layer in conv_layers(model)]
    if not names:
        raise UsageError(f"model '{model.name}' has no convolution or pooling layer; name the layers to draw")
    features, _ = LayerTap(model, names)(as_preprocessing(preprocessing).forward(_batch(image)))
    pictures = []
    for i, name in enumerate(names):
        check_feature_map(name, features[name])
        activation = np.asarray(features[name][0])
        channels = activation.shape[-1] if max_channels is None else min(max_channels, activation.shape[-1])
        tiles = [colorize(_standardize(activation[..., c]) / 255.0) for c in range(channels)]
        grid = tile_grid([_enlarge(t) for t in tiles], images_per_row, margin=2, fill=255)
        path = save_image(grid, Path(out_dir) / f"{i:02d}_{safe_name(name)}.png")
        pictures.append(LayerPicture(name, path, tuple(activation.shape)))
        if progress:
            progress(i + 1, len(names))
    return pictures


def _standardize(channel: np.ndarray) -> np.ndarray:
    """The book's display of one channel: mean 128, 64 per standard deviation, clipped to 0–255."""
    channel = channel - channel.mean()
    channel = channel / (channel.std() + 1e-5)
    return np.clip(channel * 64 + 128, 0, 255)


def _enlarge(tile: np.ndarray) -> np.ndarray:
    factor = max(1, math.ceil(_MIN_TILE_PX / max(tile.shape[:2])))
    return tile.repeat(factor, axis=0).repeat(factor, axis=1)


def filter_patterns(model, out_dir, *, layers: Sequence[str] | None = None, filters: int | Sequence[int] = 64,
                    steps: int = 40, step_size: float = 1.0, size: int | None = None, preprocessing=None,
                    images_per_row: int = 8, seed: int = 0, progress: Progress | None = None) -> list[LayerPicture]:
    """The input pattern each filter responds to most, by gradient ascent in input space (5.4.2).

    Args:
        layers: layer names; default every convolution layer.
        filters: how many filters per layer (the first N), or their indices. Default 64 (8×8).
        steps, step_size: ascent steps and size in pixels per step (the book: 40 steps of 1).
        size: the square image size; default the model's input size, else 150 (the book's). A
            Sequential classifier built for one size runs its convolution layers at any size.
        seed: the starting noise (gray 128 + uniform 0–20, the book's).

    All the filters of a layer ascend together as one batch; each gradient is normalized by its
    RMS as in the book. Files: ``out_dir/NN_<layer>.png``, a grid with 5-pixel margins.
    """
    import tensorflow as tf

    names = list(layers) if layers else [layer.name for layer in conv_layers(model, pooling=False)]
    if not names:
        raise UsageError(f"model '{model.name}' has no convolution layer; name the layers to draw")
    prep = as_preprocessing(preprocessing)
    net = flexible_prefix(model, names)
    (height, width), channels = spatial_input(model)
    only_size = spatial_input(net)[0]  # (None, None) when the layers take any size
    if size is not None and only_size[0] is not None and only_size != (size, size):
        raise UsageError(f"filter patterns: model '{model.name}' takes {height}×{width} images only, not {size}")
    if size is not None or height is None:
        height = width = size or 150
    rng = np.random.default_rng(seed)
    pictures = []
    for i, name in enumerate(names):
        tap = LayerTap(net, [name])
        check_feature_map(name, tap.layers[name].output)
        n_channels = int(tap.layers[name].output.shape[-1])
        indices = list(range(min(filters, n_channels))) if isinstance(filters, int) else list(filters)
        if not indices or max(indices) >= n_channels or min(indices) < 0:
            raise UsageError(f"filter patterns: layer '{name}' has filters 0–{n_channels - 1}, not {indices}")
        ascent_step = _filter_ascent_step(tap, name, tf.one_hot(indices, n_channels), prep, step_size)
        pixels = tf.constant(rng.random((len(indices), height, width, channels), dtype="float32") * 20 + 128)
        means = []  # the filters' mean activation before each step, and after the last
        for step in range(steps):
            per_filter, pixels = ascent_step(pixels)
            means.append(float(tf.reduce_mean(per_filter)))
            if progress:
                progress(i * steps + step + 1, len(names) * steps)
        means.append(float(tf.reduce_mean(ascent_step(pixels)[0])))
        tiles = [_pattern(p) for p in pixels.numpy()]
        path = save_image(tile_grid(tiles, images_per_row, margin=5), Path(out_dir) / f"{i:02d}_{safe_name(name)}.png")
        pictures.append(LayerPicture(name, path, (len(indices), height, width), (means[0], means[-1])))
    return pictures


def _filter_ascent_step(tap: LayerTap, name: str, one_hot_filters, prep, step_size: float):
    """One gradient ascent step for a batch of images, image ``i`` raising filter ``i``'s mean activation."""
    import tensorflow as tf

    mask = one_hot_filters[:, None, None, :]

    @tf.function
    def ascent_step(pixels):
        with tf.GradientTape() as tape:
            tape.watch(pixels)
            features, _ = tap(prep.forward(pixels))
            per_filter = tf.reduce_mean(tf.reduce_sum(features[name] * mask, axis=-1), axis=(1, 2))
            total = tf.reduce_sum(per_filter)  # each image's gradient is its own filter's
        grads = tape.gradient(total, pixels)
        grads /= tf.sqrt(tf.reduce_mean(tf.square(grads), axis=(1, 2, 3), keepdims=True)) + 1e-5
        return per_filter, pixels + step_size * grads

    return ascent_step


def _pattern(x: np.ndarray) -> np.ndarray:
    """The book's ``deprocess_image``: centered, 0.1 per standard deviation around 0.5, to 0–255."""
    x = (x - x.mean()) / (x.std() + 1e-5) * 0.1 + 0.5
    return np.clip(x, 0, 1) * 255


# ---------------------------------------------------------------------------- Grad-CAM


@dataclass
class GradCam:
    """A class-activation heatmap: ``heatmap`` (h, w) in [0, 1] at ``layer``'s resolution, for
    class ``class_index``, whose model output (probability for softmax/sigmoid models) is ``score``."""

    heatmap: np.ndarray
    class_index: int
    score: float
    layer: str
    path: Path | None = None
    heatmap_path: Path | None = None

    def upsampled(self, size: tuple[int, int]) -> np.ndarray:
        """The heatmap resized (bilinear) to ``size`` = (height, width), e.g. the image's."""
        return np.clip(resize(self.heatmap, size), 0, 1)


def grad_cam_heatmaps(model, images, *, class_indices: Sequence[int] | None = None, layer: str | None = None,
                      preprocessing=None) -> list[GradCam]:
    """Grad-CAM for a batch of images (pixels ``(n, h, w, c)``), one :class:`GradCam` each.

    The gradient of the class score with respect to ``layer``'s output (default: the last
    convolution layer), averaged over the map, weighs that output's channels; the weighted sum,
    negatives dropped, scaled to a maximum of 1, is the heatmap (Selvaraju et al.; the book's
    Listing 5.42). The score is taken before a final softmax or sigmoid, as keras-io does: a
    confident softmax reads exactly 1.0 in float32 and its gradient vanishes. A one-unit
    (sigmoid) output counts as class 1 above 0 and class 0 below.
    """
    import tensorflow as tf

    name = layer or last_conv_layer(model).name
    tap = LayerTap(model, [name])
    x = tf.convert_to_tensor(as_preprocessing(preprocessing).forward(np.asarray(images, dtype="float32")))
    with _final_activation_removed(model) as activation, tf.GradientTape() as tape:
        features, logits = tap(x)
        feature_map = features[name]
        check_feature_map(name, feature_map)
        if isinstance(logits, (list, tuple, dict)):
            raise UsageError(f"Grad-CAM: model '{model.name}' has several outputs; it needs a classifier with one")
        logits = tf.reshape(logits, (tf.shape(logits)[0], -1))
        units = int(logits.shape[-1])
        one_unit = units == 1
        if class_indices is not None and len(class_indices) != len(logits):
            raise UsageError(f"Grad-CAM: {len(class_indices)} classes given for {len(logits)} images")
        if class_indices is not None and any(not 0 <= c < max(units, 2) for c in class_indices):
            raise UsageError(f"Grad-CAM: class {list(class_indices)} is not one of the model's classes 0–{max(units, 2) - 1}")
        if class_indices is None:
            predicted = logits[:, 0] > 0 if one_unit else tf.argmax(logits, axis=-1)
            classes = tf.cast(predicted, "int32")
        else:
            classes = tf.constant(list(class_indices), dtype="int32")
        if one_unit:
            class_scores = tf.where(classes == 1, logits[:, 0], -logits[:, 0])
        else:
            class_scores = tf.gather(logits, classes, axis=1, batch_dims=1)
        total = tf.reduce_sum(class_scores)  # images are independent: each gets its own gradient
    grads = tape.gradient(total, feature_map)
    weights = tf.reduce_mean(grads, axis=(1, 2))  # (n, channels)
    heatmaps = tf.nn.relu(tf.einsum("nhwc,nc->nhw", feature_map, weights)).numpy()
    outputs = _outputs(activation, logits).numpy()
    results = []
    for heatmap, cls, out in zip(heatmaps, classes.numpy(), outputs):
        top = heatmap.max()
        score = out[cls] if not one_unit else out[0] if cls == 1 else (1 - out[0] if activation else -out[0])
        results.append(GradCam(heatmap / top if top > 0 else heatmap, int(cls), float(score), name))
    return results


def _outputs(activation, logits):
    import tensorflow as tf

    if activation is None:
        return logits
    return tf.nn.softmax(logits) if activation.__name__ == "softmax" else tf.sigmoid(logits)


@contextlib.contextmanager
def _final_activation_removed(model):
    """The output layer's softmax/sigmoid swapped for linear while inside; yields the one removed."""
    import keras

    layer = output_layer(model)
    activation = getattr(layer, "activation", None)
    if getattr(activation, "__name__", None) not in ("softmax", "sigmoid"):
        yield None
        return
    layer.activation = keras.activations.linear
    try:
        yield activation
    finally:
        layer.activation = activation


def grad_cam(model, image, out_path=None, *, class_index: int | None = None, layer: str | None = None,
             preprocessing=None, alpha: float = 0.4) -> GradCam:
    """Grad-CAM of one image (pixels ``(h, w, c)``) for the predicted or a given class (5.4.3).

    With ``out_path`` it writes the heatmap superimposed on the image (jet colormap, ``alpha``
    its weight) there and the bare heatmap beside it as ``<stem>_heatmap.png``.

    Example::

        cam = grad_cam(model, load_image("elephant.jpg", (224, 224)), "explain/grad_cam.png",
                       preprocessing="VGG16")
        cam.class_index, cam.score, cam.heatmap.shape     # 386, 0.91, (14, 14)
    """
    cam = grad_cam_heatmaps(model, _batch(image), class_indices=None if class_index is None else [class_index],
                            layer=layer, preprocessing=preprocessing)[0]
    if out_path is not None:
        out_path = Path(out_path)
        cam.path = save_image(superimpose(image, cam.heatmap, alpha), out_path)
        cam.heatmap_path = save_image(colorize(cam.heatmap, "jet"), out_path.with_name(f"{out_path.stem}_heatmap.png"))
    return cam


def superimpose(image, heatmap, alpha: float = 0.4) -> np.ndarray:
    """``image`` (pixels) blended with ``heatmap`` resized to it and drawn in the jet colormap."""
    image = np.asarray(image, dtype="float32")
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    colored = colorize(np.clip(resize(heatmap, rgb.shape[:2]), 0, 1), "jet").astype("float32")
    return (1 - alpha) * rgb + alpha * colored

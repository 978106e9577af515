"""DeepDream (the book's 8.2): gradient ascent on an image to excite chosen layers of a convnet.

Wiring (``task: deep_dream`` in a recipe): the model is a convnet base — the book's
``InceptionV3(weights="imagenet", include_top=False)`` built by
``dlrun.model.pretrained.build_application`` (``weights: null`` or a local file offline), or a
trained run's model — and the image is pixels from ``images.load_image(path)`` at its own size.
The recipe gives the layers with their weights (the book: ``mixed2: 0.2, mixed3: 3.0,
mixed4: 2.0, mixed5: 1.5``), ``step``, ``num_octave``, ``octave_scale``, ``iterations`` per
octave, ``max_loss``, ``save_every`` and the preprocessing (``InceptionV3`` for the book's base,
a run's rescale factor for its model). :func:`deep_dream` writes ``<prefix>.png`` and every
``save_every`` iterations ``<prefix>_iter_NNNN.png`` into the run's folder, and returns them
with the loss of every step (for the run's metrics and the MLflow artifacts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from dlrun.errors import UsageError
from dlrun.tasks.images import preprocessing as as_preprocessing, save_image
from dlrun.tasks.layers import LayerTap, flexible_prefix


@dataclass
class DreamResult:
    """The dreamed image (``uint8`` pixels), where it was written, the images saved on the way and the loss
    before each step as ``(octave, iteration, loss)``."""

    image: np.ndarray
    path: Path
    saved: list[Path] = field(default_factory=list)
    losses: list[tuple[int, int, float]] = field(default_factory=list)
    octave_shapes: list[tuple[int, int]] = field(default_factory=list)


def octave_shapes(shape: tuple[int, int], num_octave: int, octave_scale: float) -> list[tuple[int, int]]:
    """The image sizes from the smallest octave to the original (the book's ``successive_shapes``)."""
    if num_octave < 1 or octave_scale <= 1:
        raise UsageError(f"deep dream: num_octave must be ≥ 1 and octave_scale > 1, not {num_octave}, {octave_scale}")
    shapes = [tuple(int(dim / octave_scale ** i) for dim in shape) for i in range(num_octave)]
    if min(min(s) for s in shapes) < 1:
        raise UsageError(f"deep dream: {num_octave} octaves of scale {octave_scale} shrink a {shape} image to nothing")
    return shapes[::-1]


def dream_loss(features: Mapping, layer_weights: Mapping[str, float]):
    """Σ weight · mean of squared activations, borders left out (the book's loss)."""
    import tensorflow as tf

    loss = tf.zeros(())
    for name, weight in layer_weights.items():
        activation = features[name]
        scaling = tf.reduce_prod(tf.cast(tf.shape(activation), "float32"))
        if len(activation.shape) == 4 and activation.shape[1] > 4 and activation.shape[2] > 4:
            activation = activation[:, 2:-2, 2:-2, :]  # border pixels make artifacts
        loss += weight * tf.reduce_sum(tf.square(activation)) / scaling
    return loss


def deep_dream(model, image, layer_weights: Mapping[str, float], out_dir, *, preprocessing=None,
               step: float = 0.01, num_octave: int = 3, octave_scale: float = 1.4, iterations: int = 20,
               max_loss: float | None = 10.0, save_every: int | None = None, prefix: str = "dream",
               progress: Callable[[int, int], None] | None = None) -> DreamResult:
    """Dream on ``image`` (pixels ``(h, w, c)``) with the book's octave loop (Listing 8.13).

    Args:
        layer_weights: ``{layer name: weight}`` of the activations to maximize.
        step: the ascent step in the model's input space; each gradient is first divided by its
            mean absolute value (the book's 0.01 is for InceptionV3's [-1, 1] inputs).
        num_octave, octave_scale: how many scales, and the ratio between them (3 and 1.4).
        iterations: ascent steps per octave (20).
        max_loss: an octave stops once its loss exceeds this (the book's 10; None: never).
        save_every: also save the image every N iterations, counted across octaves.

    At each larger octave the detail lost by shrinking is put back (the original at this size
    minus the shrunk original enlarged).

    Example::

        model = keras.applications.InceptionV3(weights="imagenet", include_top=False)
        result = deep_dream(model, load_image("sky.jpg"), {"mixed4": 1.0, "mixed5": 1.5},
                            "out", preprocessing="InceptionV3")
    """
    import tensorflow as tf

    if not layer_weights:
        raise UsageError("deep dream: name at least one layer to maximize, with its weight")
    prep = as_preprocessing(preprocessing)
    tap = LayerTap(flexible_prefix(model, list(layer_weights)), layer_weights)
    original = tf.constant(prep.forward(np.asarray(image, dtype="float32"))[None])
    shapes = octave_shapes(tuple(original.shape[1:3]), num_octave, octave_scale)

    @tf.function
    def ascent_step(img):
        with tf.GradientTape() as tape:
            tape.watch(img)
            features, _ = tap(img)
            loss = dream_loss(features, layer_weights)
        grads = tape.gradient(loss, img)
        grads /= tf.maximum(tf.reduce_mean(tf.abs(grads)), 1e-7)
        return loss, img + step * grads

    out_dir = Path(out_dir)
    result = DreamResult(image=np.asarray(image), path=out_dir / f"{prefix}.png", octave_shapes=shapes)
    shrunk_original = tf.image.resize(original, shapes[0])
    img = original
    done, total = 0, iterations * len(shapes)
    for octave, shape in enumerate(shapes):
        img = tf.image.resize(img, shape)
        for i in range(iterations):
            loss, stepped = ascent_step(img)
            result.losses.append((octave, i, float(loss)))
            done += 1
            if max_loss is not None and float(loss) > max_loss:
                break  # the book checks before stepping: an octave ends once it is dreamy enough
            img = stepped
            if save_every and done % save_every == 0:
                result.saved.append(save_image(prep.to_pixels(img[0]), out_dir / f"{prefix}_iter_{done:04d}.png"))
            if progress:
                progress(done, total)
        upscaled_shrunk = tf.image.resize(shrunk_original, shape)
        same_size_original = tf.image.resize(original, shape)
        img += same_size_original - upscaled_shrunk  # reinject the detail lost by shrinking
        shrunk_original = tf.image.resize(original, shape)
    if progress and done < total:
        progress(total, total)
    result.image = prep.to_pixels(img[0])
    save_image(result.image, result.path)
    return result

"""Neural style transfer (the book's 8.3): an image with one picture's content and another's style.

Wiring (``task: style_transfer`` in a recipe): the model is a convnet base — the book's
``VGG19(weights="imagenet", include_top=False)`` from ``dlrun.model.pretrained.build_application``
(``weights: null`` or a local file offline) — and the two images are pixels from
``images.load_image``: the content image at the size to generate (the book: height 400, width in
proportion), the style image at any size (it is resized to the content's). The recipe gives the
content layer, the style layers, the three weights, ``iterations``, ``optimizer`` (``lbfgs`` as
the book, or ``sgd``/``adam`` as keras-io), ``save_every`` and the preprocessing (``VGG19``).
:func:`style_transfer` writes ``<prefix>.png`` and ``<prefix>_iter_NNNN.png`` into the run's
folder and returns them with the loss after every iteration and its three parts at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dlrun.errors import UsageError
from dlrun.tasks.images import preprocessing as as_preprocessing, resize, save_image
from dlrun.tasks.layers import LayerTap, check_feature_map, flexible_prefix

BOOK_CONTENT_LAYER = "block5_conv2"
BOOK_STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
# keras-io's gradient descent: SGD from 100, times 0.96 every 100 steps; Adam's step in pixel units.
_DEFAULT_RATES = {"sgd": None, "adam": 5.0}


@dataclass
class StyleResult:
    """The generated image (``uint8`` pixels), its path, the images saved on the way, the loss
    before the first iteration and after each, and the weighted parts of the last loss."""

    image: np.ndarray
    path: Path
    saved: list[Path] = field(default_factory=list)
    start_loss: float = float("nan")
    losses: list[float] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)


def gram_matrix(features):
    """Channel-by-channel inner products of a ``(h, w, c)`` feature map: its texture."""
    import tensorflow as tf

    flat = tf.reshape(tf.transpose(features, (2, 0, 1)), (tf.shape(features)[-1], -1))
    return tf.matmul(flat, flat, transpose_b=True)


def style_loss(style_gram, combination, image_size: int):
    """The book's ``style_loss``: squared Gram difference over 4 · 3² · (height · width)²."""
    import tensorflow as tf

    return tf.reduce_sum(tf.square(style_gram - gram_matrix(combination))) / (4.0 * 9.0 * float(image_size) ** 2)


def content_loss(base, combination):
    import tensorflow as tf

    return tf.reduce_sum(tf.square(combination - base))


def total_variation_loss(x):
    """Differences between neighbouring pixels, to the power 1.25: keeps the image smooth."""
    import tensorflow as tf

    a = tf.square(x[:, :-1, :-1, :] - x[:, 1:, :-1, :])
    b = tf.square(x[:, :-1, :-1, :] - x[:, :-1, 1:, :])
    return tf.reduce_sum(tf.pow(a + b, 1.25))


def style_transfer(model, content, style, out_dir, *, content_layer: str = BOOK_CONTENT_LAYER,
                   style_layers: Sequence[str] = BOOK_STYLE_LAYERS, content_weight: float = 0.025,
                   style_weight: float = 1.0, total_variation_weight: float = 1e-4, preprocessing=None,
                   iterations: int = 20, optimizer="lbfgs", learning_rate: float | None = None,
                   maxfun: int = 20, save_every: int | None = 1, prefix: str = "style",
                   progress: Callable[[int, int], None] | None = None) -> StyleResult:
    """Generate an image with ``content``'s layout and ``style``'s textures (Listings 8.14–8.21).

    Args:
        content, style: pixels ``(h, w, 3)``; the style image is resized to the content's size.
        content_layer, style_layers: layers of ``model`` (the book's VGG19 names by default).
        content_weight, style_weight, total_variation_weight: the book's 0.025, 1.0 and 1e-4;
            the style weight is shared among the style layers.
        optimizer: ``lbfgs`` — one iteration is one ``scipy.optimize.fmin_l_bfgs_b`` call of up to
            ``maxfun`` evaluations, as the book — or ``sgd`` (keras-io: from 100, × 0.96 every 100
            steps), ``adam`` (``learning_rate`` 5) or a Keras optimizer; then one iteration is one step.
        save_every: save the image every N iterations (the book: every one); None: the last only.

    The image starts as the content image and is optimized in the model's input space.
    """
    import tensorflow as tf

    prep = as_preprocessing(preprocessing)
    content = np.asarray(content, dtype="float32")
    style = resize(np.asarray(style, dtype="float32"), content.shape[:2])
    names = [content_layer, *[name for name in style_layers if name != content_layer]]
    tap = LayerTap(flexible_prefix(model, names), names)
    base = tf.constant(prep.forward(content)[None])
    content_features = tap(base)[0][content_layer]
    style_features = tap(tf.constant(prep.forward(style)[None]))[0]
    for name in style_layers:
        check_feature_map(name, style_features[name])
    style_grams = {name: gram_matrix(style_features[name][0]) for name in style_layers}
    image_size = content.shape[0] * content.shape[1]

    @tf.function
    def loss_and_grads(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            features = tap(x)[0]
            parts = {
                "content": content_weight * content_loss(content_features, features[content_layer]),
                "style": tf.add_n([style_weight / len(style_layers)
                                   * style_loss(style_grams[name], features[name][0], image_size)
                                   for name in style_layers]),
                "total_variation": total_variation_weight * total_variation_loss(x),
            }
            loss = tf.add_n(list(parts.values()))
        return loss, parts, tape.gradient(loss, x)

    out_dir = Path(out_dir)
    result = StyleResult(image=content.astype("uint8"), path=out_dir / f"{prefix}.png")
    result.start_loss = float(loss_and_grads(base)[0])
    steps = _lbfgs_iterations(loss_and_grads, base, maxfun) if optimizer == "lbfgs" \
        else _descent_iterations(loss_and_grads, base, _optimizer(optimizer, learning_rate))
    x = base.numpy()
    for i, (x, loss) in zip(range(1, iterations + 1), steps):
        result.losses.append(loss)
        if save_every and i % save_every == 0:
            result.saved.append(save_image(prep.to_pixels(x[0]), out_dir / f"{prefix}_iter_{i:04d}.png"))
        if progress:
            progress(i, iterations)
    final = tf.constant(x, dtype="float32")
    _, parts, _ = loss_and_grads(final)
    result.parts = {name: float(value) for name, value in parts.items()}
    result.image = prep.to_pixels(final[0])
    save_image(result.image, result.path)
    return result


def _lbfgs_iterations(loss_and_grads, start, maxfun: int):
    """``(image, loss)`` after each ``fmin_l_bfgs_b`` call, as the book's loop (float64 for scipy)."""
    import tensorflow as tf
    from scipy.optimize import fmin_l_bfgs_b

    shape = tuple(start.shape)

    def loss_and_flat_grads(flat):
        loss, _, grads = loss_and_grads(tf.constant(flat.reshape(shape), dtype="float32"))
        return float(loss), grads.numpy().astype("float64").ravel()

    x = start.numpy().astype("float64").ravel()
    while True:
        x, loss, _ = fmin_l_bfgs_b(loss_and_flat_grads, x, maxfun=maxfun)
        yield x.reshape(shape).astype("float32"), float(loss)


def _descent_iterations(loss_and_grads, start, optimizer):
    """``(image, loss)`` after each gradient step (keras-io's loop)."""
    import tensorflow as tf

    image = tf.Variable(start)
    _, _, grads = loss_and_grads(start)
    while True:
        optimizer.apply_gradients([(grads, image)])
        # this step's loss and the next step's gradient; a tensor, not the variable, keeps one trace
        loss, _, grads = loss_and_grads(tf.convert_to_tensor(image))
        yield image.numpy(), float(loss)


def _optimizer(optimizer, learning_rate):
    import keras

    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    if optimizer not in _DEFAULT_RATES:
        raise UsageError(f"style transfer: optimizer must be lbfgs, sgd, adam or a Keras optimizer, not {optimizer!r}")
    rate = learning_rate if learning_rate is not None else _DEFAULT_RATES[optimizer]
    if optimizer == "sgd":
        rate = rate if rate is not None else keras.optimizers.schedules.ExponentialDecay(100.0, 100, 0.96)
        return keras.optimizers.SGD(rate)
    return keras.optimizers.Adam(rate)

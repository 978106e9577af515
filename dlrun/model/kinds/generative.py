"""The ``vae`` and ``gan`` kinds of a recipe: their parts built from the recipe's layer lists,
compiled (a VAE with its optimizer, a GAN with two), checked on a few images before a run, and
the samples they write (image grids while training; a VAE's latent grid and scatter after).

The images are the data's ``x`` as the preprocessing leaves them (``(height, width, channels)``);
labels are ignored by training and colour the VAE's latent scatter.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dlrun.errors import DataError, ModelBuildError
from dlrun.model.kinds.parts import check_output

_SCATTER_ROWS = 2000  # images encoded for the latent scatter
_IMAGES_HINT = " (the data's images; the last layer's filters are their channels)"


def _image_shape(spec, input_shape, who: str) -> tuple:
    shape = tuple(spec.input_shape) if spec.input_shape is not None else tuple(input_shape or ())
    if len(shape) == 2:
        raise ModelBuildError(f"model: {who} takes images (height, width, channels); the data's samples are "
                              f"{shape}: add a channel axis (preprocessing: reshape: [{shape[0]}, {shape[1]}, 1])")
    if len(shape) != 3:
        raise ModelBuildError(f"model: {who} takes images (height, width, channels); the data's samples have shape "
                              f"{shape}")
    return shape


def part_model(part: str, input_shape, layer_specs, context):
    """A functional ``keras.Model`` named ``part`` through the recipe layers ``model.<part>``; a
    layer that does not fit its input is named with the shape it got."""
    import keras

    from dlrun.model.builder import first_line, instantiate_layer

    x = inputs = keras.Input(shape=tuple(input_shape), name=f"{part}_input")
    for index, layer_spec in enumerate(layer_specs):
        layer = instantiate_layer(layer_spec, index, context, part)
        try:
            x = layer(x)
        except Exception as exc:  # noqa: BLE001 - Keras raises ValueError/TypeError on a misfit
            raise ModelBuildError(f"model.{part}[{index}] ({layer_spec.name}) does not fit its input of shape "
                                  f"{tuple(x.shape[1:])}: {first_line(exc)}") from exc
    return keras.Model(inputs, x, name=part)


# --------------------------------------------------------------------------- vae


def build_vae(spec, input_shape, name: str, input_dtype, context):
    """The recipe's encoder layers, then the latent heads; its decoder layers back to the image."""
    from dlrun.model.kinds.vae import VAE, build_decoder, build_encoder

    shape = _image_shape(spec, input_shape, "a VAE")
    body = part_model("encoder", shape, spec.encoder, context)
    encoder = build_encoder(shape, spec.latent_dim, body)  # refuses a body that does not end flat
    body = part_model("decoder", (spec.latent_dim,), spec.decoder, context)
    check_output("model.decoder", body, shape, hint=_IMAGES_HINT)
    decoder = build_decoder(spec.latent_dim, body, shape)
    return VAE(encoder, decoder, kl_weight=spec.kl_weight, reconstruction=spec.reconstruction, name="vae")


def compile_vae(model, spec) -> None:
    from dlrun.model.builder import make_object

    model.compile(optimizer=make_object("optimizer", spec.optimizer))


def check_vae(model, x, y) -> list[str]:
    if model.reconstruction == "binary_crossentropy":
        _check_range(x, (0.0, 1.0), "model.reconstruction binary_crossentropy compares pixels in [0, 1]",
                     "rescale them (preprocessing: rescale, scale: 0.00392156862745098) or use reconstruction: mse")
    return _test_batch(model, x, "VAE")


# --------------------------------------------------------------------------- gan


def build_gan(spec, input_shape, name: str, input_dtype, context):
    """The generator ``(latent_dim,) → image`` and the discriminator ``image → (1,)``."""
    from dlrun.model.kinds.gan import GAN

    shape = _image_shape(spec, input_shape, "a GAN")
    generator = part_model("generator", (spec.latent_dim,), spec.generator, context)
    check_output("model.generator", generator, shape, hint=_IMAGES_HINT)
    discriminator = part_model("discriminator", shape, spec.discriminator, context)
    return GAN(generator, discriminator, latent_dim=spec.latent_dim, label_noise=spec.label_noise, name="gan")


def compile_gan(model, spec) -> None:
    """``compile.optimizer`` trains the discriminator, ``compile.generator_optimizer`` (default: a
    second optimizer like the first) the generator."""
    from dlrun.model.builder import make_object

    d_optimizer = make_object("optimizer", spec.optimizer)
    g_optimizer = make_object("optimizer", spec.generator_optimizer or spec.optimizer)  # a new instance
    model.compile(d_optimizer=d_optimizer, g_optimizer=g_optimizer)


def check_gan(model, x, y) -> list[str]:
    from dlrun.model.kinds.samples import output_range

    low_high = output_range(model)
    if low_high is not None:
        activation = "tanh" if low_high[0] < 0 else "sigmoid"
        _check_range(x, low_high, f"the generator ends in {activation}, so it makes pixels in "
                                  f"[{low_high[0]:g}, {low_high[1]:g}] and the real images must lie there too",
                     "rescale them (preprocessing: rescale, e.g. scale: 0.00784313725490196, offset: -1 for "
                     "[-1, 1])")
    return _test_batch(model, x, "GAN")


# --------------------------------------------------------------------------- shared


def _check_range(x, bounds: tuple[float, float], why: str, fix: str) -> None:
    values = np.asarray(x)
    if values.dtype.kind not in "biuf" or not values.size:
        return
    low, high = float(values.min()), float(values.max())
    if low < bounds[0] - 1e-6 or high > bounds[1] + 1e-6:
        raise DataError(f"data: {why}; the data's are in [{low:g}, {high:g}]: {fix}")


def _test_batch(model, x, who: str) -> list[str]:
    from dlrun.data.dataset import sample_shapes
    from dlrun.model.builder import first_line

    few = np.asarray(x)[:2]
    try:
        return list(model.test_on_batch(few, return_dict=True))
    except Exception as exc:  # noqa: BLE001
        raise ModelBuildError(f"the images do not fit the {who}: samples {sample_shapes(few)}, model input "
                              f"{tuple(model.inputs[0].shape[1:]) if getattr(model, 'inputs', None) else '?'} — "
                              f"{first_line(exc)}") from exc


def image_samplers(model, spec, folder: Path, on_file) -> list:
    """A grid of ``spec.images`` generated images every ``spec.every`` epochs, from fixed latent points."""
    from dlrun.model.kinds.samples import SampleImages

    return [SampleImages(spec.every, folder, n=spec.images, seed=spec.seed, on_image=on_file)]


def finish_vae(model, spec, data, folder: Path, on_file) -> list[Path]:
    """After training: the decoded latent grid (a 2-D latent space) and the latent means of the
    test images (else the validation or training images) coloured by label."""
    from dlrun.model.kinds.samples import save_latent_grid, save_latent_scatter

    written = []
    if model.latent_dim == 2:
        written.append(save_latent_grid(model, folder / "latent_grid.png", n=spec.latent_grid))
    images, labels = _some_images(data)
    if images is not None and len(images):
        written.append(save_latent_scatter(model, images, labels, folder / "latent_scatter.png"))
    for path in written:
        on_file(path)
    return written


def _some_images(data):
    """Up to ``_SCATTER_ROWS`` images and labels of the test part, else validation, else training."""
    for part in (data.test, data.validation, data.train):
        if part is None:
            continue
        if isinstance(part, tuple):
            x, y = part[0], part[1] if len(part) > 1 else None
        else:  # a batched tf.data pipeline
            xs, ys = [], []
            for batch in part.take(math.ceil(_SCATTER_ROWS / max(1, _batch_len(part)))):
                xs.append(np.asarray(batch[0]))
                ys.append(np.asarray(batch[1]) if len(batch) > 1 else None)
            x = np.concatenate(xs) if xs else None
            y = np.concatenate(ys) if ys and all(v is not None for v in ys) else None
        if x is None:
            continue
        x, y = np.asarray(x)[:_SCATTER_ROWS], None if y is None else np.asarray(y)[:_SCATTER_ROWS]
        return x, _label_numbers(y, len(x))
    return None, None


def _batch_len(dataset) -> int:
    spec = dataset.element_spec[0] if isinstance(dataset.element_spec, tuple) else dataset.element_spec
    return int(spec.shape[0] or 32)


def _label_numbers(y, n: int) -> np.ndarray:
    """Class numbers to colour by: one-hot rows → their class; no labels → all 0."""
    if y is None:
        return np.zeros(n)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    return y.reshape(len(y), -1)[:, 0] if y.ndim > 1 else y

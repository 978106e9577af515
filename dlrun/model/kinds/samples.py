"""Pictures of what the generative kinds learned, as PNG files: a grid of generated images
(GAN or VAE), the VAE's decoded latent grid (the book's Listing 8.28 figure), the latent
scatter of encoded images coloured by label, and the ``SampleImages`` callback that writes a
grid every N epochs from one fixed latent batch, so the grids of a run can be compared.

Wiring: the runner adds ``SampleImages(every_n_epochs, run_dir / "samples", n,
on_image=<log as MLflow artifact>)`` to a ``vae``/``gan`` job's callbacks and, after a VAE's
training, writes ``save_latent_grid`` (2-D latent only) and ``save_latent_scatter`` of the
test images. The model needs only ``latent_dim`` and ``generate(z)`` (both kinds have them).
The callback's latent batch comes from its own NumPy generator: it never touches the model's
random state, so a resumed run stays exact.

Image grids are pixel arrays written by ``matplotlib.image.imsave`` (scaled up by whole
factors, no figure); the scatter is drawn on an Agg canvas, never through pyplot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import keras
import numpy as np

_MIN_PIXELS = 256  # small grids (8×8 digits) are scaled up by a whole factor to at least this


def fixed_latents(latent_dim: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points of N(0, I) in ``latent_dim`` dimensions, the same for the same seed."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype("float32")


def save_image_grid(images, path, ncols: int | None = None, value_range: tuple[float, float] | None = None) -> Path:
    """Write ``images`` (N, H, W) or (N, H, W, 1 or 3) as one grid PNG. ``value_range``: the
    pixel values shown black and white (default: the batch's minimum and maximum)."""
    import matplotlib.image

    images = np.asarray(images, dtype="float32")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3) or not len(images):
        raise ValueError(f"images must be (N, H, W), (N, H, W, 1) or (N, H, W, 3), not {images.shape}")
    low, high = value_range if value_range is not None else (float(images.min()), float(images.max()))
    scaled = np.clip((images - low) / ((high - low) or 1.0), 0.0, 1.0)
    grid = _tile(scaled, ncols or math.ceil(math.sqrt(len(images))))
    factor = max(1, math.ceil(_MIN_PIXELS / max(grid.shape[:2])))
    grid = grid.repeat(factor, axis=0).repeat(factor, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(path, grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, format="png")
    return path


def _tile(images: np.ndarray, ncols: int) -> np.ndarray:
    """Images side by side, ``ncols`` a row, a one-pixel white line between them."""
    n, height, width = images.shape[:3]
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (height + 1) - 1, ncols * (width + 1) - 1, *images.shape[3:]), dtype="float32")
    for index, image in enumerate(images):
        row, col = divmod(index, ncols)
        grid[row * (height + 1):row * (height + 1) + height, col * (width + 1):col * (width + 1) + width] = image
    return grid


def output_range(model) -> tuple[float, float] | None:
    """The value range of what ``model`` (a VAE's decoder, a GAN's generator) generates, from its
    last activation: sigmoid (0, 1), tanh (-1, 1); None when it is not bounded that way."""
    net = next((getattr(model, part) for part in ("generator", "decoder") if hasattr(model, part)), model)
    activation = getattr(getattr(net, "layers", [None])[-1], "activation", None)
    return {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}.get(getattr(activation, "__name__", ""))


def save_generated_grid(model, path, n: int = 16, seed: int = 0, z=None) -> Path:
    """A grid of ``n`` images that ``model`` (a GAN or VAE) generates from fixed latent points
    (``z``, or ``n`` points drawn with ``seed``)."""
    z = fixed_latents(model.latent_dim, n, seed) if z is None else np.asarray(z, dtype="float32")
    return save_image_grid(model.generate(z), path, value_range=output_range(model))


def save_latent_grid(model, path, n: int = 15, span: tuple[float, float] = (0.05, 0.95)) -> Path:
    """The book's Listing 8.28 figure: an ``n``×``n`` grid of images decoded from a 2-D latent
    space, at the standard normal's quantiles ``span`` (so the grid covers the prior evenly);
    the second latent dimension grows downwards, the first to the right."""
    from scipy.stats import norm

    if model.latent_dim != 2:
        raise ValueError(f"a latent grid needs a 2-D latent space; this model's has {model.latent_dim} dimensions")
    quantiles = norm.ppf(np.linspace(span[0], span[1], n))
    z = np.array([[x, y] for y in quantiles for x in quantiles], dtype="float32")
    return save_image_grid(model.generate(z), path, ncols=n, value_range=output_range(model))


def save_latent_scatter(model, x, labels, path, batch_size: int = 256) -> Path:
    """The latent means of the images ``x`` (``model.encode``; or ``x`` are latent points already
    when ``model`` is None) as points coloured by ``labels``. A latent space of more than two
    dimensions is shown on its first two principal components."""
    codes = np.asarray(x if model is None else model.encode(x, batch_size=batch_size), dtype="float32")
    axes_names = ("z[0]", "z[1]")
    if codes.shape[1] > 2:
        from sklearn.decomposition import PCA

        codes, axes_names = PCA(n_components=2).fit_transform(codes), ("PC 1 of z", "PC 2 of z")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = ax.scatter(codes[:, 0], codes[:, 1], c=np.asarray(labels), cmap="tab10", s=4)
    fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(axes_names[0])
    ax.set_ylabel(axes_names[1])
    ax.set_title(f"Latent means of {len(codes)} images")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


class SampleImages(keras.callbacks.Callback):
    """Every ``every_n_epochs`` epochs, write a grid of ``n`` images the model generates from
    one fixed latent batch (drawn once with ``seed``) to ``folder/samples-epoch-NNNN.png``
    (NNNN: the epoch, 1-based) and pass its path to ``on_image`` (e.g. to log it to MLflow).
    ``written`` lists the files. The model needs ``latent_dim`` and ``generate(z)``.

    Example:

        vae.fit(x, epochs=30, callbacks=[SampleImages(5, run_dir / "samples")])
    """

    def __init__(self, every_n_epochs: int, folder, n: int = 16, seed: int = 0,
                 on_image: Callable[[Path], None] | None = None):
        super().__init__()
        if every_n_epochs < 1 or n < 1:
            raise ValueError(f"every_n_epochs and n must be at least 1, not {every_n_epochs} and {n}")
        self.every_n_epochs, self.folder, self.n, self.seed = every_n_epochs, Path(folder), n, seed
        self.on_image = on_image
        self.written: list[Path] = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        z = fixed_latents(self.model.latent_dim, self.n, self.seed)
        path = save_generated_grid(self.model, self.folder / f"samples-epoch-{epoch + 1:04d}.png", z=z)
        self.written.append(path)
        if self.on_image is not None:
            self.on_image(path)

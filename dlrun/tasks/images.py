"""Images in and out for the tasks that look at or optimize images (explain, dream, style).

Every task takes images as **pixels**: float arrays ``(height, width, channels)`` in 0–255, RGB or
grayscale, as :func:`load_image` returns them, and a :class:`Preprocessing` that says how pixels
become what the model takes (a run's ``rescale: 1/255``, or a ``keras.applications`` module's
``preprocess_input``) and how to turn the model's space back into pixels for saving. Both
directions are plain arithmetic, so they work on NumPy arrays and on TensorFlow tensors alike —
gradients flow through ``forward`` when a task optimizes pixels (filter patterns, 5.4.2).

PNG files are written with Pillow (installed with matplotlib); nothing here opens a window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dlrun.errors import UsageError, did_you_mean

# keras.applications' three preprocessing modes (keras/src/applications/imagenet_utils.py).
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype="float32")
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype="float32")
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype="float32")
MODES = ("none", "rescale", "caffe", "tf", "torch")


@dataclass(frozen=True)
class Preprocessing:
    """How pixels (0–255) become model inputs (``forward``) and back (``inverse``).

    Modes: ``none`` (the model takes pixels, e.g. it starts with a ``Rescaling`` layer),
    ``rescale`` (``pixels * scale``, a run's ``rescale: 1/255``), and keras.applications'
    ``caffe`` (RGB→BGR, ImageNet mean subtracted: VGG16/19, ResNet50), ``tf`` (to [-1, 1]:
    InceptionV3, Xception, MobileNetV2) and ``torch`` (to [0, 1], ImageNet mean and std: DenseNet).
    """

    mode: str = "none"
    scale: float = 1.0

    def forward(self, pixels):
        if self.mode == "rescale":
            return pixels * self.scale
        if self.mode == "caffe":
            return pixels[..., ::-1] - _CAFFE_MEAN_BGR
        if self.mode == "tf":
            return pixels / 127.5 - 1.0
        if self.mode == "torch":
            return (pixels / 255.0 - _TORCH_MEAN) / _TORCH_STD
        return pixels

    def inverse(self, x):
        if self.mode == "rescale":
            return x / self.scale
        if self.mode == "caffe":
            return (x + _CAFFE_MEAN_BGR)[..., ::-1]
        if self.mode == "tf":
            return (x + 1.0) * 127.5
        if self.mode == "torch":
            return (x * _TORCH_STD + _TORCH_MEAN) * 255.0
        return x

    def to_pixels(self, x) -> np.ndarray:
        """A model-space array back to displayable ``uint8`` pixels (clipped to 0–255)."""
        return np.clip(np.asarray(self.inverse(np.asarray(x, dtype="float32"))), 0, 255).astype("uint8")


def preprocessing(spec=None) -> Preprocessing:
    """A :class:`Preprocessing` from what a recipe or a run says.

    ``spec``: None or ``"none"``; a number (a rescale factor such as ``1/255``); a mode name
    (``caffe``, ``tf``, ``torch``); or a ``keras.applications`` model or module name (``VGG19``,
    ``vgg19``, ``InceptionV3``, ``inception_v3``), whose ``preprocess_input`` is matched to its mode.

    Example::

        prep = preprocessing("InceptionV3")      # Preprocessing(mode='tf')
        x = prep.forward(load_image("sky.jpg"))  # ready for the model
    """
    if spec is None:
        return Preprocessing()
    if isinstance(spec, Preprocessing):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if spec <= 0:
            raise UsageError(f"preprocessing: a rescale factor must be positive, not {spec}")
        return Preprocessing("rescale", float(spec))
    if not isinstance(spec, str):
        raise UsageError(f"preprocessing: expected a mode, a factor or a keras.applications name, not {spec!r}")
    if spec in MODES and spec != "rescale":
        return Preprocessing(spec)
    return _application_preprocessing(spec)


def _application_preprocessing(name: str) -> Preprocessing:
    import keras

    module_name = name
    cls = getattr(keras.applications, name, None)
    if cls is not None and callable(cls) and name[:1].isupper():
        module_name = cls.__module__.rsplit(".", 1)[-1]
    module = getattr(keras.applications, module_name, None)
    if module is None or not hasattr(module, "preprocess_input"):
        known = [n for n in dir(keras.applications) if not n.startswith("_")] + list(MODES)
        raise UsageError(f"preprocessing: '{name}' is neither a mode ({', '.join(MODES)}) nor a "
                         f"keras.applications model{did_you_mean(name, known)}")
    # Match the module's own function against each mode on a probe of distinct pixel values.
    probe = np.linspace(0, 255, 12, dtype="float32").reshape(1, 2, 2, 3)
    expected = np.asarray(module.preprocess_input(probe.copy()), dtype="float32")
    for mode in ("none", "caffe", "tf", "torch"):
        if np.allclose(Preprocessing(mode).forward(probe), expected, atol=1e-3):
            return Preprocessing(mode)
    raise UsageError(f"preprocessing: keras.applications.{module_name}.preprocess_input is none of the "
                     f"modes {', '.join(MODES)}; pass the model pixels in a mode it takes")


# ---------------------------------------------------------------------------- files


def load_image(path, size: tuple[int, int] | None = None, channels: int = 3) -> np.ndarray:
    """An image file as float32 pixels ``(height, width, channels)`` in 0–255.

    ``size`` is ``(height, width)`` (bilinear resize, as ``keras.utils.load_img``); ``channels``
    1 reads it as grayscale, 3 as RGB.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"image: {path} does not exist or is not a file")
    if channels not in (1, 3):
        raise UsageError(f"image: channels must be 1 or 3, not {channels}")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None:
                img = img.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype="float32")
    except OSError as exc:
        raise UsageError(f"image: {path} cannot be read as an image ({exc})") from None
    return array[..., None] if channels == 1 else array


def save_image(pixels, path) -> Path:
    """Write pixels (``(h, w)``, ``(h, w, 1)`` or ``(h, w, 3)``, 0–255) as a PNG; returns the path."""
    from PIL import Image

    array = np.clip(np.asarray(pixels, dtype="float32"), 0, 255).astype("uint8")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def resize(array, size: tuple[int, int]) -> np.ndarray:
    """A float ``(h, w)`` or ``(h, w, c)`` array resized bilinearly to ``size`` = (height, width)."""
    from PIL import Image

    array = np.asarray(array, dtype="float32")
    planes = array[..., None] if array.ndim == 2 else array
    out = np.stack([np.asarray(Image.fromarray(planes[..., c], mode="F")
                               .resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR))
                    for c in range(planes.shape[-1])], axis=-1)
    return out[..., 0] if array.ndim == 2 else out


# ---------------------------------------------------------------------------- drawing


def colorize(values, cmap: str = "viridis") -> np.ndarray:
    """A 2-D array in [0, 1] as ``uint8`` RGB through a matplotlib colormap."""
    import matplotlib

    colors = matplotlib.colormaps[cmap](np.clip(np.asarray(values, dtype="float32"), 0, 1))[..., :3]
    return (colors * 255).astype("uint8")


def tile_grid(tiles: Sequence[np.ndarray], per_row: int, margin: int = 1, fill: float = 0) -> np.ndarray:
    """Tiles of one shape ``(h, w)`` or ``(h, w, c)`` side by side, ``per_row`` to a row."""
    if not tiles:
        raise ValueError("tile_grid needs at least one tile")
    h, w = tiles[0].shape[:2]
    per_row = max(1, min(per_row, len(tiles)))
    rows = -(-len(tiles) // per_row)
    grid = np.full((rows * h + (rows - 1) * margin, per_row * w + (per_row - 1) * margin)
                   + tiles[0].shape[2:], fill, dtype="float32")
    for i, tile in enumerate(tiles):
        r, c = divmod(i, per_row)
        grid[r * (h + margin): r * (h + margin) + h, c * (w + margin): c * (w + margin) + w] = tile
    return grid


def safe_name(name: str) -> str:
    """A layer name usable as a file name (Keras names may hold ``/`` in nested scopes)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)

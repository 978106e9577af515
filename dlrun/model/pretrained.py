"""``keras.applications`` bases (VGG16, MobileNetV2, …) as a recipe layer and as a feature extractor.

Design: the recipe layer ``Pretrained`` returns the application itself, a nested functional
``keras.Model``, built for inputs of any height and width (``input_shape`` (None, None, C))
unless the recipe gives ``input_shape``. When the builder adds it to the Sequential, Keras runs
it on the previous layer's output, so the real output shape (VGG16 at 150×150: 4×4×512) flows on
to Flatten/Dense without the factory needing to know the input shape. The nested model keeps
its name (``vgg16``), so ``fit.fine_tune.layer`` can find it, and it saves in ``model.keras``.

``weights``: ``imagenet`` (downloaded by Keras into its cache; offline this fails fast with a
clear error), a local ``.h5``/``.keras``/``.weights.h5`` file (relative to the recipe), or null.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from dlrun.errors import ModelBuildError, did_you_mean

# A download that stalls must not hang a run forever (urllib waits indefinitely by default).
DOWNLOAD_SOCKET_TIMEOUT_S = 60


def make_pretrained(args: dict, context, where: str):
    """The recipe layer ``Pretrained: {application: VGG16, weights: imagenet, trainable: false}``."""
    input_shape = args.get("input_shape")
    base = build_application(
        args["application"],
        weights=args.get("weights", "imagenet"),
        include_top=bool(args.get("include_top", False)),
        pooling=args.get("pooling"),
        input_shape=tuple(input_shape) if input_shape is not None else None,
        name=args.get("name"),
        base_dir=Path(context.base_dir),
        where=where,
    )
    trainable = args.get("trainable", False)
    if not isinstance(trainable, bool):
        raise ModelBuildError(f"{where}: trainable must be true or false, not {trainable!r}")
    base.trainable = trainable  # the book's conv_base.trainable = False (5.3.1)
    context.facts.setdefault("pretrained", {})[base.name] = {
        "application": args["application"],
        "weights": args.get("weights", "imagenet"),
        "trainable": trainable,
        "layers": len(base.layers),
        "params": int(base.count_params()),
    }
    return base


def build_application(application: str, *, weights, include_top: bool = False, pooling=None,
                      input_shape=None, name: str | None = None, base_dir: Path = Path("."),
                      where: str = "Pretrained"):
    """``keras.applications.<application>(...)`` with dlrun's errors; ``input_shape`` None means
    any height and width with 3 channels (include_top false)."""
    import keras

    cls = getattr(keras.applications, application, None)
    if not isinstance(application, str) or cls is None or not callable(cls):
        names = [n for n in dir(keras.applications) if n[:1].isupper()]
        raise ModelBuildError(f"{where}.application: unknown keras.applications model '{application}'"
                              f"{did_you_mean(str(application), names)}")
    if pooling not in (None, "avg", "max"):
        raise ModelBuildError(f"{where}.pooling: '{pooling}' is not one of avg, max or null")
    resolved = _resolve_weights(weights, base_dir, where)
    kwargs = {"include_top": include_top, "weights": resolved, "pooling": pooling}
    if input_shape is not None:  # else keras.applications takes (None, None, 3) when include_top is false
        kwargs["input_shape"] = tuple(input_shape)
    if name is not None:
        kwargs["name"] = name
    try:
        with _download_timeout():
            return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001
        if weights == "imagenet" and _is_download_failure(exc):
            raise ModelBuildError(
                f"{where}.weights: the ImageNet weights of {application} can't be downloaded "
                f"({_first_line(exc)}) — this machine seems to have no internet access. Put the weights file "
                f"in Keras' cache (~/.keras/models/), give a local file (weights: path/to/weights.h5) "
                f"or use weights: null (random initial weights)") from exc
        raise ModelBuildError(f"{where} ({application}): {_first_line(exc)}") from exc


def _resolve_weights(weights, base_dir: Path, where: str):
    if weights is None or weights == "imagenet":
        return weights
    if not isinstance(weights, str):
        raise ModelBuildError(f"{where}.weights: expected imagenet, a weights file path or null, not {weights!r}")
    from dlrun.data.files import resolve_path

    path = resolve_path(weights, base_dir).resolve()
    if not path.is_file():
        raise ModelBuildError(f"{where}.weights: no such weights file: {path} — give imagenet, a local "
                              f".h5/.keras/.weights.h5 file (relative to the recipe) or null")
    if not path.name.endswith((".h5", ".keras", ".hdf5")):
        raise ModelBuildError(f"{where}.weights: {path.name} is not a Keras weights file (.h5, .weights.h5, .keras)")
    return str(path)


def _is_download_failure(exc: BaseException) -> bool:
    """keras.utils.get_file turns URLError/HTTPError into ``Exception('URL fetch failure on …')``."""
    import urllib.error

    seen = exc
    while seen is not None:
        if isinstance(seen, (urllib.error.URLError, socket.timeout, ConnectionError)):
            return True
        if "URL fetch failure" in str(seen) or "Name or service not known" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _download_timeout():
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _first_line(exc: Exception) -> str:
    from dlrun.model.builder import first_line

    return first_line(exc)

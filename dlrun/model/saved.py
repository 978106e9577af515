"""Load a saved ``.keras`` model — always in Keras' safe mode.

A ``.keras`` file can carry Python code (a ``Lambda`` layer's bytecode); safe mode refuses to
deserialize it. ``safe_mode=True`` alone is not enough: ``keras.config.enable_unsafe_deserialization()``
anywhere in the process switches a global that outranks the argument, so the load also runs
inside Keras' safe-mode scope. Custom classes come from the recipe's ``plugins`` modules, and
dlrun's own model kinds (VAE, GAN) are registered first.
"""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path

from dlrun.errors import ModelBuildError


def load_keras_model(path: str | Path, *, plugins: tuple[str, ...] = (), compile: bool = True,
                     where: str = "model", precision: str = "float32"):
    """``keras.saving.load_model(path, safe_mode=True)`` with dlrun's errors. ``precision``: the
    run's ``fit.precision`` (a saved Sequential or functional model does not record its own policy,
    and a mixed_float16 one needs it to compile with loss scaling and load its optimizer's state)."""
    import keras

    from dlrun.model.builder import first_line
    from dlrun.model.kinds import register_kinds
    from dlrun.model.plugins import import_plugins
    from dlrun.model.precision import precision_policy

    path = Path(path)
    if not path.is_file():
        raise ModelBuildError(f"{where}: no such model file: {path}")
    if path.suffix == ".keras" and not _keras_archive(path):  # Keras: "File not found", "no item named …"
        raise ModelBuildError(f"{where}: {path} is not a Keras model file (truncated or corrupt): train the run "
                              f"again, or restore the file")
    import_plugins(plugins)  # their register_keras_serializable classes become known to Keras
    register_kinds()  # dlrun's own model kinds (VAE, GAN)
    try:
        with _safe_mode_scope(), precision_policy(precision):
            return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises ValueError/TypeError/OSError…
        text = str(exc)
        if "safe_mode" in text or "arbitrary code" in text:
            raise ModelBuildError(
                f"{where}: {path.name} contains Python code (a Lambda layer or a Python function) and is not "
                f"loaded: dlrun keeps Keras' safe mode on. Rebuild the model from a recipe, with custom code "
                f"in a `plugins:` module") from exc
        raise ModelBuildError(f"{where}: cannot load {path}: {first_line(exc)}") from exc


def _keras_archive(path: Path) -> bool:
    """Whether ``path`` is a zip archive with a model config in it, as every ``.keras`` file is."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "config.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _safe_mode_scope():
    try:  # not exported by Keras; without it the explicit safe_mode=True still applies
        from keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return SafeModeScope(True)

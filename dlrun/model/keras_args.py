"""Keras objects written inside a layer's arguments, made into Keras objects.

A recipe writes them the way it writes layers: ``kernel_regularizer: {L2: {l2: 0.001}}``,
``kernel_regularizer: l2``, ``layer: {LSTM: {units: 32}}`` (Bidirectional, TimeDistributed).
"""

from __future__ import annotations

from typing import Any

from dlrun.errors import ModelBuildError

_WRAPPED_LAYER_ARGS = ("layer", "backward_layer")
_NESTED_MODULES = {"_regularizer": "regularizers", "_initializer": "initializers", "_constraint": "constraints"}


def _split(value: Any) -> tuple[str, dict] | None:
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
        return name, dict(args or {})
    return None


def keras_layer(name: str, args: dict, where: str):
    """``keras.layers.<name>(**args)`` with nested Keras objects in ``args`` built first."""
    import keras

    from dlrun.model.builder import first_line

    cls = getattr(keras.layers, name, None)
    if cls is None:  # the recipe validator normally catches this first
        raise ModelBuildError(f"{where}: unknown layer '{name}'")
    args = {key: _nested(key, value, f"{where}.{key}") for key, value in args.items()}
    try:
        return cls(**args)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad arguments
        raise ModelBuildError(f"{where}: {first_line(exc)}") from exc


def _nested(key: str, value: Any, where: str) -> Any:
    import keras

    from dlrun.model.builder import first_line

    parsed = _split(value)
    if parsed is None:
        return value
    name, args = parsed
    if key in _WRAPPED_LAYER_ARGS:
        return keras_layer(name, args, f"{where} ({name})")
    module = next((getattr(keras, m) for suffix, m in _NESTED_MODULES.items() if key.endswith(suffix)), None)
    if module is None or (isinstance(value, str) and not args):
        return value  # Keras resolves plain names ('l2', 'he_normal') itself
    try:
        return module.get({"class_name": name, "config": args})
    except Exception as exc:  # noqa: BLE001
        raise ModelBuildError(f"{where}: {first_line(exc)}") from exc

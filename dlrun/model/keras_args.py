"""Keras objects written inside a layer's arguments, made into Keras objects.

A recipe writes them the way it writes layers: ``kernel_regularizer: {L2: {l2: 0.001}}``,
``kernel_regularizer: l2``, ``layer: {LSTM: {units: 32}}`` (Bidirectional, TimeDistributed).
"""

from __future__ import annotations

from typing import Any

from dlrun.errors import ModelBuildError

from dlrun.recipe.catalog import NESTED_ARGS as _NESTED_MODULES
from dlrun.recipe.catalog import WRAPPED_LAYER_ARGS as _WRAPPED_LAYER_ARGS
_ACTIVATION_ARGS = ("activation", "recurrent_activation")


def _keras_alias(kind: str, name: str) -> bool:
    """Keras resolves snake_case names of its classes itself (``l2``, ``glorot_uniform``)."""
    from dlrun.model.plugins import keras_knows

    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    return kind != "activation" and keras_knows(kind, camel)


def _split(value: Any) -> tuple[str, dict] | None:
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
        return name, dict(args or {})
    return None


def resolve_read_args(owner: str, args: dict, base_dir) -> dict:
    """``args`` with every file argument Keras reads (a ``vocabulary`` file, a ``*_path``…:
    :func:`dlrun.recipe.reads.is_read_arg`) resolved against the recipe's folder, where the
    recipe loader checked it — not against the working directory, where Keras would look."""
    from dlrun.recipe.reads import is_read_arg, resolve_read

    if base_dir is None:
        return args
    return {arg: str(resolve_read(value, base_dir)) if is_read_arg(owner, arg, value) else value
            for arg, value in args.items()}


def keras_layer(name: str, args: dict, where: str, plugins: tuple[str, ...] = (), base_dir=None):
    """``keras.layers.<name>(**args)`` with nested Keras objects in ``args`` built first;
    a name Keras does not know comes from the recipe's ``plugins`` modules; ``base_dir``: the
    recipe's folder, against which file arguments resolve."""
    import keras

    from dlrun.model import plugins as plugin_lookup
    from dlrun.model.builder import first_line
    from dlrun.recipe.catalog import REFUSED

    if name in REFUSED["layer"]:  # the recipe validator refuses these first
        raise ModelBuildError(f"{where}: {REFUSED['layer'][name]}")
    cls = plugin_lookup.keras_class("layer", name) or plugin_lookup.find("layer", name, plugins, where)
    args = resolve_read_args(name, args, base_dir)
    args = {key: _nested(key, value, f"{where}.{key}", plugins, base_dir) for key, value in args.items()}
    try:
        return cls(**args)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad arguments
        raise ModelBuildError(f"{where}: {first_line(exc)}") from exc


def _nested(key: str, value: Any, where: str, plugins: tuple[str, ...] = (), base_dir=None) -> Any:
    import keras

    from dlrun.model import plugins as plugin_lookup
    from dlrun.model.builder import first_line

    parsed = _split(value)
    if parsed is None:
        return value
    name, args = parsed
    if key in _WRAPPED_LAYER_ARGS:
        return keras_layer(name, args, f"{where} ({name})", plugins, base_dir)
    kind = next((m[:-1] for suffix, m in _NESTED_MODULES.items() if key.endswith(suffix)), None)
    kind = kind or ("activation" if key in _ACTIVATION_ARGS and isinstance(value, str) else None)
    if kind and plugins and not plugin_lookup.keras_knows(kind, name) and not _keras_alias(kind, name):
        return plugin_lookup.make(kind, name, resolve_read_args(name, args, base_dir), plugins, where)  # a custom one
    module = next((getattr(keras, m) for suffix, m in _NESTED_MODULES.items() if key.endswith(suffix)), None)
    if module is None or (isinstance(value, str) and not args):
        return value  # Keras resolves plain names ('l2', 'he_normal') itself
    try:
        return module.get({"class_name": name, "config": args})
    except Exception as exc:  # noqa: BLE001
        raise ModelBuildError(f"{where}: {first_line(exc)}") from exc


def optimizer_args(args: dict) -> dict:
    """An optimizer's arguments, a ``learning_rate`` written as a Keras schedule
    (``{ExponentialDecay: {initial_learning_rate: 0.01, decay_steps: 100, decay_rate: 0.9}}``)
    made into that ``keras.optimizers.schedules`` object. Errors name the argument; the
    caller adds where it is."""
    import keras

    from dlrun.model.builder import first_line

    parsed = _split(args.get("learning_rate"))
    if parsed is None or isinstance(args["learning_rate"], str):
        return args
    name, schedule_args = parsed
    cls = getattr(keras.optimizers.schedules, name, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.optimizers.schedules.LearningRateSchedule)):
        raise ModelBuildError(f"learning_rate: unknown learning-rate schedule '{name}'")
    try:
        return {**args, "learning_rate": cls(**schedule_args)}
    except Exception as exc:  # noqa: BLE001
        raise ModelBuildError(f"learning_rate ({name}): {first_line(exc)}") from exc

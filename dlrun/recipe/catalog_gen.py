"""Regenerate ``keras_catalog.json`` from the installed Keras.

    python -m dlrun.recipe.catalog_gen

The catalog lets ``dlrun validate`` check Keras names and argument names without
importing TensorFlow; ``tests/test_catalog.py`` fails when it is out of date.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

CATALOG_PATH = Path(__file__).with_name("keras_catalog.json")

# Keras' base Layer pops these from **kwargs (keras/src/layers/layer.py).
_LAYER_KWARGS = ["input_dim", "input_shape"]
# compile() understands these metric strings itself (keras/src/trainers/compile_utils.py).
_COMPILE_METRIC_STRINGS = ["accuracy", "acc", "crossentropy", "ce"]
_SKIP = {"Layer", "Loss", "Metric", "Optimizer", "Callback", "CallbackList", "History",
         "ProgbarLogger", "LambdaCallback", "Wrapper", "InputSpec", "LossScaleOptimizer",
         "MultiOptimizer", "OptimizerMap", "LearningRateSchedule"}


def default_kind(value) -> str | None:
    """The kind of value an argument's default is, which a recipe's value must share
    (:mod:`dlrun.recipe.arguments`); None when the default says nothing (None, a callable…)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (tuple, list)):
        return "sequence"
    return None


def _parameters(cls: type) -> tuple[list[str], list[str], bool, dict[str, str]]:
    """(argument names, required argument names, accepts **kwargs, the kinds of the defaults)
    of ``cls.__init__``."""
    params = inspect.signature(cls.__init__).parameters.values()
    names, required, var_kw, kinds = [], [], False, {}
    for p in params:
        if p.name == "self" or p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        names.append(p.name)
        if p.default is p.empty:
            required.append(p.name)
        elif default_kind(p.default):
            kinds[p.name] = default_kind(p.default)
    return names, required, var_kw, kinds


def _classes(module, base: type) -> dict[str, dict]:
    out = {}
    for name in sorted(dir(module)):
        obj = getattr(module, name)
        if name.startswith("_") or name in _SKIP or not inspect.isclass(obj) or not issubclass(obj, base):
            continue
        out[name] = _class_entry(obj, base)
    return out


def _class_entry(cls: type, base: type) -> dict:
    names, required, var_kw, kinds = _parameters(cls)
    if var_kw:  # **kwargs are forwarded to the base class: take its named arguments too
        for klass in cls.__mro__[1:]:
            if klass is object:
                break
            extra, _, more, extra_kinds = _parameters(klass)
            kinds |= {n: k for n, k in extra_kinds.items() if n not in names}
            names += [n for n in extra if n not in names]
            if not more:
                break
        if issubclass(cls, base) and base.__name__ == "Layer":
            names += [n for n in _LAYER_KWARGS if n not in names]
    entry = {"args": names, "required": required}
    if kinds:
        entry["defaults"] = kinds
    return entry


def _applications(module) -> dict[str, dict]:
    """``keras.applications`` model functions (VGG16, Xception…) with their argument names."""
    out = {}
    for name in sorted(dir(module)):
        obj = getattr(module, name)
        if name[:1].isupper() and inspect.isfunction(obj):
            out[name] = {"args": list(inspect.signature(obj).parameters), "required": []}
    return out


def build_catalog() -> dict:
    import keras
    from keras.src.losses import ALL_OBJECTS_DICT as LOSSES
    from keras.src.metrics import ALL_OBJECTS_DICT as METRICS
    from keras.src.activations import ALL_OBJECTS_DICT as ACTIVATIONS

    def named_objects(table: dict, base: type) -> dict[str, dict]:
        out = {}
        for key, obj in sorted(table.items()):
            if inspect.isclass(obj):
                out[key] = _class_entry(obj, base)
            else:  # a plain function: no constructor arguments
                out[key] = {"args": [], "required": [], "function": True}
        return out

    optimizers = _classes(keras.optimizers, keras.optimizers.Optimizer)
    metrics = named_objects(METRICS, keras.metrics.Metric)
    for name in _COMPILE_METRIC_STRINGS:
        # compile() picks the binary/categorical/sparse variant from the loss for these words,
        # so they cannot carry arguments (keras.metrics.Accuracy would be exact equality).
        metrics[name] = {"args": [], "required": [], "function": True, "compile_alias": True}
    return {
        "keras_version": keras.__version__,
        "regularizers": _classes(keras.regularizers, keras.regularizers.Regularizer),
        "initializers": _classes(keras.initializers, keras.initializers.Initializer),
        "constraints": _classes(keras.constraints, keras.constraints.Constraint),
        "applications": _applications(keras.applications),
        "layers": _classes(keras.layers, keras.layers.Layer),
        "optimizers": optimizers,
        "losses": named_objects(LOSSES, keras.losses.Loss),
        "metrics": metrics,
        "callbacks": _classes(keras.callbacks, keras.callbacks.Callback),
        # An optimizer's learning_rate may be one of these (ExponentialDecay, CosineDecay…).
        "schedules": _classes(keras.optimizers.schedules, keras.optimizers.schedules.LearningRateSchedule),
        "activations": sorted(ACTIVATIONS),
    }


def main() -> None:
    CATALOG_PATH.write_text(json.dumps(build_catalog(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {CATALOG_PATH}")


if __name__ == "__main__":
    main()

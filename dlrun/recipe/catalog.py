"""Check Keras names and argument names in a recipe without importing Keras.

The names come from ``keras_catalog.json``, generated from the installed Keras by
:mod:`dlrun.recipe.catalog_gen` (a test keeps the two in sync).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, Iterator

from dlrun.errors import did_you_mean
from dlrun.recipe import graph_check, kinds_check
from dlrun.recipe.arguments import non_finite_leaves, value_problems
from dlrun.recipe.safe_paths import callback_path_issues
from dlrun.recipe.yaml_source import Path_, format_path

CATALOG_FILE = "keras_catalog.json"
# Arguments dlrun fills in itself, so a recipe may leave them out.
_FILLED_BY_DLRUN = {
    "ModelCheckpoint": {"filepath"},
    "TensorBoard": set(),
    "CSVLogger": {"filename"},
    "BackupAndRestore": {"backup_dir"},
}
_ACTIVATION_ARGS = {"activation", "recurrent_activation"}
# Layer arguments that are Keras objects themselves, checked against these catalog tables.
NESTED_ARGS = {"_regularizer": "regularizers", "_initializer": "initializers", "_constraint": "constraints"}
WRAPPED_LAYER_ARGS = {"layer", "backward_layer"}  # Bidirectional, TimeDistributed
# Layers dlrun builds itself (dlrun.model.recipe_layers), written in a recipe like Keras layers.
RECIPE_LAYERS = {
    "Pretrained": {
        "args": ["application", "weights", "include_top", "pooling", "trainable", "name", "input_shape"],
        "required": ["application"],
        "defaults": {"application": "str", "weights": "str", "include_top": "bool", "pooling": "str",
                     "trainable": "bool", "input_shape": "sequence"},
        "doc": "a keras.applications base (VGG16, Xception…) used as a layer",
    },
    "PretrainedEmbedding": {
        "args": ["path", "trainable", "mask_zero", "name"],
        "required": ["path"],
        "defaults": {"path": "str", "trainable": "bool", "mask_zero": "bool"},
        "doc": "an Embedding initialized from a GloVe-format vector file for the vectorizer's vocabulary",
    },
    "SavedModel": {
        "args": ["path", "trainable", "name"],
        "required": ["path"],
        "defaults": {"path": "str", "trainable": "bool"},
        "doc": "a model saved earlier (another run's model.keras) used as a layer, frozen unless trainable",
    },
}
# Keras classes a recipe may not name: they run Python code (a lambda, a loaded graph, a Jax/Torch
# module) that YAML cannot carry safely. Custom code belongs in a `plugins:` module.
_PLUGIN_HINT = "write it as a class or function in a module listed under `plugins:`"
REFUSED = {
    "layer": {
        "Lambda": f"Lambda layers run Python code and are not allowed in a recipe; {_PLUGIN_HINT}",
        "TFSMLayer": f"TFSMLayer loads a TensorFlow graph from a file and is not allowed in a recipe; {_PLUGIN_HINT}",
        "JaxLayer": f"JaxLayer wraps Python functions and is not allowed in a recipe; {_PLUGIN_HINT}",
        "FlaxLayer": f"FlaxLayer wraps a Python module and is not allowed in a recipe; {_PLUGIN_HINT}",
        "TorchModuleWrapper": f"TorchModuleWrapper wraps a Python module and is not allowed in a recipe; {_PLUGIN_HINT}",
    },
}
# Arguments the book's Keras 2 code uses that Keras 3 removed.
_KERAS2_ARGS = {
    "lr": " — Keras 3 calls it 'learning_rate'",
    "decay": " — removed in Keras 3; use a learning-rate schedule or ReduceLROnPlateau",
    "input_length": " — removed in Keras 3; the input shape comes from the data",
}


@cache
def catalog() -> dict:
    from importlib import resources

    return json.loads(resources.files("dlrun.recipe").joinpath(CATALOG_FILE).read_text())


def _split_object(value: Any) -> tuple[str, dict] | None:
    """``name`` or ``{name: args}`` → (name, args); None when malformed (schema reports it)."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
        if args is None:
            args = {}
        if isinstance(name, str) and isinstance(args, dict):
            return name, args
    return None


def _lookup(kind: str, name: str, table: dict, case_insensitive: bool) -> tuple[str | None, str]:
    if name in table:
        return name, ""
    if case_insensitive:
        lowered = {k.lower(): k for k in table}
        if name.lower() in lowered:
            return lowered[name.lower()], ""
    return None, f"unknown {kind} '{name}'{did_you_mean(name, table)}"


def check_object(
    kind: str, table: dict, value: Any, path: Path_, *, case_insensitive: bool = False, plugins: bool = False
) -> Iterator[tuple[Path_, str, bool]]:
    """Yield (path, message, at_key) for each problem of one Keras object. With ``plugins`` a name
    Keras does not know may be a plugin's: it is looked up when the model is built."""
    parsed = _split_object(value)
    if parsed is None:
        return
    name, args = parsed
    arg_path = path if isinstance(value, str) else path + (name,)
    infinite = set()
    for arg, arg_value in args.items():  # whatever the object, Keras' or a plugin's, at any depth
        for leaf, bad in non_finite_leaves(arg_value):
            infinite.add(arg)
            owner, key = (leaf[-2], leaf[-1]) if len(leaf) > 1 and isinstance(leaf[-2], str) else (
                name, format_path((arg, *leaf)))
            yield arg_path + (arg, *leaf), f"{owner} {key} must be a finite number (got {bad})", False
    if name in REFUSED.get(kind, {}):
        yield (path if isinstance(value, str) else path + (name,)), REFUSED[kind][name], not isinstance(value, str)
        return
    canonical, problem = _lookup(kind, name, table, case_insensitive)
    if canonical is None:
        if not plugins:
            problem += f" (a custom {kind} needs a `plugins:` module)"
            yield (path if isinstance(value, str) else path + (name,)), problem, not isinstance(value, str)
        return
    entry = table[canonical]
    if kind == "callback" and canonical == "LearningRateScheduler":  # a named schedule, not Python code
        from dlrun.training.schedules import schedule_problems  # plain Python, no TensorFlow

        for where, problem in schedule_problems(args):
            yield arg_path + where, problem, bool(where)
        return
    if entry.get("compile_alias") and args:
        yield arg_path, (f"'{name}' lets Keras pick the variant that fits the loss and takes no arguments; "
                         f"to pass arguments name the class, e.g. SparseCategoricalAccuracy"), True
        return
    if entry.get("function") and args:
        yield arg_path, f"{name} is a function and takes no arguments; use its class form to pass arguments", True
        return
    unknown = [arg for arg in args if arg not in entry["args"]]
    for arg, arg_value in args.items():
        if arg in infinite:
            continue
        if arg not in entry["args"]:
            hint = _KERAS2_ARGS.get(arg) or did_you_mean(arg, entry["args"])
            yield arg_path + (arg,), f"{canonical} has no argument '{arg}'{hint}", True
            continue
        wrong = list(value_problems(canonical, arg, arg_value, entry))
        if wrong:
            yield from ((arg_path + (arg,), problem, False) for problem in wrong)
        elif arg in _ACTIVATION_ARGS and isinstance(arg_value, str):
            acts = catalog()["activations"]
            if arg_value not in acts and not plugins:
                yield arg_path + (arg,), f"unknown activation '{arg_value}'{did_you_mean(arg_value, acts)}", False
        else:
            yield from _check_nested(canonical, arg, arg_value, arg_path + (arg,), plugins)
    filled = _FILLED_BY_DLRUN.get(canonical, set())
    for req in entry["required"]:
        misspelt = any(did_you_mean(arg, [req]) for arg in unknown)  # already reported as a typo
        if req not in args and req not in filled and not misspelt:
            yield arg_path, f"{canonical} needs the argument '{req}'", False


def _snake_to_camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _check_nested(owner: str, arg: str, value: Any, path: Path_, plugins: bool) -> Iterator[tuple[Path_, str, bool]]:
    """Keras objects inside a layer's arguments: a wrapped layer, regularizers, initializers…"""
    cat = catalog()
    if owner in RECIPE_LAYERS:
        if owner == "Pretrained" and arg == "application" and isinstance(value, str):
            if value not in cat["applications"]:
                yield path, (f"unknown keras.applications model '{value}'"
                             f"{did_you_mean(value, cat['applications'])}"), False
        return
    if arg == "learning_rate" and isinstance(value, dict) and owner in cat["optimizers"]:
        yield from check_object("learning-rate schedule", cat["schedules"], value, path, plugins=plugins)
        return
    if arg in WRAPPED_LAYER_ARGS and isinstance(value, (str, dict)):
        yield from check_object("layer", cat["layers"], value, path, plugins=plugins)
        return
    table = next((cat[t] for suffix, t in NESTED_ARGS.items() if arg.endswith(suffix)), None)
    if table is None:
        return
    if isinstance(value, str):
        if value not in table and _snake_to_camel(value) not in table and not plugins:
            yield path, f"unknown {arg.rsplit('_', 1)[-1]} '{value}'{did_you_mean(value, table)}", False
    elif isinstance(value, dict):
        yield from check_object(arg.rsplit("_", 1)[-1], table, value, path, plugins=plugins)


def layer_table() -> dict:
    """Keras layers and dlrun's own recipe layers."""
    return {**catalog()["layers"], **RECIPE_LAYERS}


def check_recipe_objects(raw: dict) -> Iterator[tuple[Path_, str, bool]]:
    """Every Keras object of a raw recipe mapping: layers, optimizer, loss, metrics, callbacks."""
    cat = catalog()
    plugins = isinstance(raw.get("plugins"), list) and bool(raw["plugins"])  # unknown names may be theirs
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("layers"), list):
        for i, layer in enumerate(model["layers"]):
            yield from check_object("layer", layer_table(), layer, ("model", "layers", i), plugins=plugins)
    for path, layer in [*graph_check.graph_layers(raw), *kinds_check.part_layers(raw)]:
        yield from check_object("layer", layer_table(), layer, path, plugins=plugins)
    yield from graph_check.check_graph(raw, layer_table())
    yield from graph_check.check_dict_data_transforms(raw)
    comp = raw.get("compile")
    if isinstance(comp, dict):
        for key in ("optimizer", "generator_optimizer"):
            if key in comp:
                yield from check_object("optimizer", cat["optimizers"], comp[key], ("compile", key),
                                        case_insensitive=True, plugins=plugins)
        losses = list(graph_check.per_output(comp.get("loss"), "loss"))
        for sub, loss in losses:  # one loss per output of a graph model
            yield from check_object("loss", cat["losses"], loss, ("compile", "loss") + sub, plugins=plugins)
        if "loss" in comp and not losses:
            yield from check_object("loss", cat["losses"], comp["loss"], ("compile", "loss"), plugins=plugins)
        for sub, metric in graph_check.per_output(comp.get("metrics"), "metrics"):
            yield from check_object("metric", cat["metrics"], metric, ("compile", "metrics") + sub, plugins=plugins)
        if isinstance(comp.get("metrics"), list):
            for i, metric in enumerate(comp["metrics"]):
                yield from check_object("metric", cat["metrics"], metric, ("compile", "metrics", i), plugins=plugins)
    fit = raw.get("fit")
    fine_tune = fit.get("fine_tune") if isinstance(fit, dict) else None
    if isinstance(fine_tune, dict) and "optimizer" in fine_tune:
        yield from check_object("optimizer", cat["optimizers"], fine_tune["optimizer"],
                                ("fit", "fine_tune", "optimizer"), case_insensitive=True, plugins=plugins)
    if isinstance(fit, dict) and isinstance(fit.get("callbacks"), list):
        for i, callback in enumerate(fit["callbacks"]):
            yield from check_object("callback", cat["callbacks"], callback, ("fit", "callbacks", i), plugins=plugins)
            parsed = _split_object(callback)
            for arg, problem in callback_path_issues(*parsed) if parsed else ():
                yield ("fit", "callbacks", i, parsed[0], arg), problem, False
            if parsed and parsed[0] == "LearningRateScheduler" and _scheduled_optimizer(comp):
                yield (("fit", "callbacks", i, parsed[0]), "the optimizer's learning_rate is already a schedule "
                       "(compile.optimizer): use one or the other", True)
    yield from kinds_check.kind_issues(raw)


def _scheduled_optimizer(comp: Any) -> bool:
    """compile.optimizer gives its learning_rate as a Keras schedule object."""
    parsed = _split_object(comp.get("optimizer")) if isinstance(comp, dict) else None
    return bool(parsed) and isinstance(parsed[1].get("learning_rate"), dict)

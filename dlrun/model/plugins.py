"""Custom Keras classes and functions from the modules a recipe lists under ``plugins:``.

Only those modules are imported, and only when a model is built or trained — never by
``dlrun validate`` (see :mod:`dlrun.recipe.plugins`). A recipe name resolves in Keras first;
only a name Keras does not know is looked up here: an attribute (class or function) of a
plugin module, else an object a plugin registered with
``keras.saving.register_keras_serializable`` (``package>Name`` or ``Name``).
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any, Iterable

from dlrun.errors import ModelBuildError, UsageError, did_you_mean

# Catalog tables of Keras' own names, by the kind a recipe uses them as.
_TABLES = {"layer": "layers", "loss": "losses", "metric": "metrics", "optimizer": "optimizers",
           "callback": "callbacks", "regularizer": "regularizers", "initializer": "initializers",
           "constraint": "constraints", "activation": "activations"}
# Kinds whose functions are used as they are (a loss function); the others are called with the args.
_USED_AS_IS = {"loss", "metric", "activation", "regularizer", "initializer", "constraint"}

_imported: dict[str, ModuleType] = {}


class PluginError(UsageError):
    """A module listed under ``plugins:`` cannot be imported (exit code 2)."""


def import_plugins(names: Iterable[str]) -> list[ModuleType]:
    """Import the recipe's plugin modules (once per process); a failure names the module."""
    modules = []
    for index, name in enumerate(names):
        if name not in _imported:
            try:
                _imported[name] = importlib.import_module(name)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of foreign code
                raise PluginError(f"plugins[{index}]: cannot import '{name}': {type(exc).__name__}: "
                                  f"{_first_line(exc)}{_import_hint(name, exc)}") from exc
        modules.append(_imported[name])
    return modules


def _import_hint(name: str, exc: BaseException) -> str:
    missing = getattr(exc, "name", None)
    if isinstance(exc, ModuleNotFoundError) and missing and (name == missing or name.startswith(missing + ".")):
        return " — install it, or add the folder that holds it to PYTHONPATH"
    return ""


def keras_knows(kind: str, name: str) -> bool:
    """Whether ``name`` is one of Keras' own (the catalog ``dlrun validate`` checks against)."""
    from dlrun.recipe.catalog import catalog

    table = catalog()[_TABLES[kind]]
    if kind == "optimizer":
        return name.lower() in {k.lower() for k in table}
    return name in table


def find(kind: str, name: str, plugins: tuple[str, ...], where: str) -> Any:
    """The class or function ``name`` from the recipe's plugins; ModelBuildError naming them if absent."""
    if not plugins:  # custom code only through an explicit plugins list
        raise ModelBuildError(f"{where}: unknown {kind} '{name}' (a custom {kind} needs a `plugins:` module)")
    for module in import_plugins(plugins):
        obj = getattr(module, name, None)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            return obj
    import keras

    for key, obj in keras.saving.get_custom_objects().items():
        if key == name or key.rsplit(">", 1)[-1] == name:
            return obj
    from dlrun.recipe.catalog import catalog

    hint = did_you_mean(name, catalog()[_TABLES[kind]])
    raise ModelBuildError(f"{where}: unknown {kind} '{name}'{hint}: neither Keras nor the plugins searched "
                          f"({', '.join(plugins)}) define it")


def make(kind: str, name: str, args: dict, plugins: tuple[str, ...], where: str) -> Any:
    """A plugin's object for the recipe: a class called with ``args``; a function used as it is
    (losses, metrics, activations…) or called with ``args`` (a layer or callback factory)."""
    obj = find(kind, name, plugins, where)
    if inspect.isfunction(obj) and kind in _USED_AS_IS:
        if args:
            raise ModelBuildError(f"{where}: {name} is a function ({obj.__module__}) and takes no arguments")
        return obj
    try:
        return obj(**args)
    except Exception as exc:  # noqa: BLE001 - the plugin's own errors, shown in the recipe's terms
        raise ModelBuildError(f"{where} ({obj.__module__}.{name}): {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]

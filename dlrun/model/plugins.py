"""Custom Keras classes and functions from the modules a recipe lists under ``plugins:``.

Only those modules are imported, and only when a model is built or trained — never by
``dlrun validate`` (see :mod:`dlrun.recipe.plugins`, which also refuses standard-library
modules). A recipe name resolves in Keras first; only a name Keras does not know is looked up
here: a class of a plugin module, else an object a plugin registered with
``keras.saving.register_keras_serializable`` (``package>Name`` or ``Name``).

What a recipe may reach is checked before anything is called: a class must subclass the Keras
base of the kind the recipe uses it as (a ``keras.layers.Layer`` for a layer…); a function is
only ever handed to Keras as it is (a loss, a metric, an activation…), never called by dlrun,
and only when it is registered with Keras — so ``plugins: [subprocess]`` cannot build a
``Popen``, nor ``plugins: [numpy]`` turn ``numpy.save`` into a loss.
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
# The Keras base class each kind's classes must subclass (``keras.<module>.<Base>``).
_BASES = {"layer": ("layers", "Layer"), "loss": ("losses", "Loss"), "metric": ("metrics", "Metric"),
          "optimizer": ("optimizers", "Optimizer"), "callback": ("callbacks", "Callback"),
          "regularizer": ("regularizers", "Regularizer"), "initializer": ("initializers", "Initializer"),
          "constraint": ("constraints", "Constraint")}
# Kinds Keras takes as a plain function (a loss function), which dlrun hands over as it is.
_USED_AS_IS = {"loss", "metric", "activation", "regularizer", "initializer", "constraint"}

_imported: dict[str, ModuleType] = {}


class PluginError(UsageError):
    """A module listed under ``plugins:`` cannot be imported (exit code 2)."""


def import_plugins(names: Iterable[str]) -> list[ModuleType]:
    """Import the recipe's plugin modules (once per process); a failure names the module."""
    from dlrun.recipe.plugins import module_name

    modules = []
    for index, name in enumerate(names):
        if name not in _imported:
            try:
                module_name(name)  # the recipe validator refuses these first
            except ValueError as exc:
                raise PluginError(f"plugins[{index}]: {exc}") from None
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


def keras_class(kind: str, name: str):
    """Keras' own class ``name`` of this kind, or None: only what the catalog lists (classes of
    the kind's base), never another attribute of a Keras module (``keras.layers.deserialize``)."""
    import keras

    if not keras_knows(kind, name):
        return None
    module, _ = _BASES[kind]
    cls = getattr(getattr(keras, module), name, None)
    return cls if inspect.isclass(cls) else None


def _base(kind: str):
    import keras

    if kind not in _BASES:
        return None
    module, base = _BASES[kind]
    return getattr(getattr(keras, module), base)


def _registered(obj: Any) -> bool:
    import keras

    return any(value is obj for value in keras.saving.get_custom_objects().values())


def _refusal(kind: str, obj: Any) -> str | None:
    """Why ``obj`` may not be used as a ``kind`` from a recipe, or None when it may."""
    base = _base(kind)
    if inspect.isclass(obj):
        if base is not None and issubclass(obj, base):
            return None
        wanted = f"a subclass of keras.{_BASES[kind][0]}.{_BASES[kind][1]}" if base else "a registered function"
        return f"is a class, not {wanted}"
    if callable(obj) and kind in _USED_AS_IS:
        if inspect.isfunction(obj) and _registered(obj):
            return None
        return ("is a function not registered with Keras: decorate it with "
                "@keras.saving.register_keras_serializable() to use it as a " + kind)
    what = "a function" if callable(obj) else f"a {type(obj).__name__}"
    if base is None:
        return f"is {what}, not a registered function"
    return f"is {what}, not a Keras {kind} class (a subclass of keras.{_BASES[kind][0]}.{_BASES[kind][1]})"


def find(kind: str, name: str, plugins: tuple[str, ...], where: str) -> Any:
    """The Keras class (or registered function) ``name`` from the recipe's plugins, checked
    for its kind before anything is called; ModelBuildError naming the plugins otherwise."""
    if not plugins:  # custom code only through an explicit plugins list
        raise ModelBuildError(f"{where}: unknown {kind} '{name}' (a custom {kind} needs a `plugins:` module)")
    candidates = []
    if not name.startswith("_"):  # module internals (__loader__, _helpers) are never recipe objects
        for module in import_plugins(plugins):
            if hasattr(module, name):
                candidates.append((f"{module.__name__}.{name}", getattr(module, name)))
    import keras

    candidates += [(f"registered '{key}'", obj) for key, obj in keras.saving.get_custom_objects().items()
                   if key == name or key.rsplit(">", 1)[-1] == name]
    refused = []
    for label, obj in candidates:
        problem = _refusal(kind, obj)
        if problem is None:
            return obj
        refused.append(f"{label} {problem}")
    if refused:
        raise ModelBuildError(f"{where}: {'; '.join(refused)} — a recipe builds only Keras objects from its "
                              f"plugins, and never calls anything else")
    from dlrun.recipe.catalog import catalog

    hint = did_you_mean(name, catalog()[_TABLES[kind]])
    raise ModelBuildError(f"{where}: unknown {kind} '{name}'{hint}: neither Keras nor the plugins searched "
                          f"({', '.join(plugins)}) define it")


def make(kind: str, name: str, args: dict, plugins: tuple[str, ...], where: str) -> Any:
    """A plugin's object for the recipe: a Keras class called with ``args``, or a registered
    function handed to Keras as it is (losses, metrics, activations…)."""
    obj = find(kind, name, plugins, where)
    if not inspect.isclass(obj):
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

"""A recipe's ``plugins:`` list, seen from ``dlrun validate``: which modules a recipe would import.

A plugin is an importable module (installed, or on ``PYTHONPATH``) that defines custom layers,
losses, metrics, callbacks… The recipe names the module explicitly; nothing else from a recipe
ever runs Python code. This module only *finds* plugins — it never imports them (nor their
parent packages, whose ``__init__`` is code too): importing happens in
:mod:`dlrun.model.plugins`, when a model is built.

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_NAME = 200


def module_name(text: str) -> str:
    """Pydantic check of one ``plugins`` entry: a dotted module name of the user's own — never a
    path, a module of Python's standard library (``subprocess``, ``os``…: not Keras plugins, and
    some act on import), a dunder module (``__main__``) or dlrun itself."""
    if len(text) > MAX_NAME or not _MODULE_NAME.fullmatch(text):
        raise ValueError("not an importable module name: write a dotted Python module name such as "
                         "my_pkg.layers (not a file path)")
    top = text.split(".", 1)[0]
    if top in sys.stdlib_module_names:
        raise ValueError(f"'{text}' is a module of Python's standard library, not a plugin: a plugin is a module "
                         f"of your own that defines Keras layers, losses, metrics or callbacks")
    if any(part.startswith("__") and part.endswith("__") for part in text.split(".")) or top == "dlrun":
        raise ValueError(f"'{text}' is not a plugin: a plugin is a module of your own that defines Keras layers, "
                         f"losses, metrics or callbacks")
    return text


@dataclass(frozen=True)
class PluginStatus:
    name: str
    origin: str | None  # the file it would be imported from; None when not importable here

    @property
    def found(self) -> bool:
        return self.origin is not None


def locate_module(name: str) -> str | None:
    """Where ``import name`` would load ``name`` from, or None — found the way the import system
    does (``sys.meta_path`` finders, so editable installs count), without running any module code."""
    if name in sys.modules:
        return getattr(sys.modules[name], "__file__", None) or "(already imported)"
    parts = name.split(".")
    search_path = None
    spec = None
    for depth in range(len(parts)):
        full = ".".join(parts[: depth + 1])
        spec = _find_spec(full, search_path)
        if spec is None:
            return None
        if depth < len(parts) - 1:
            search_path = spec.submodule_search_locations
            if search_path is None:  # a plain module has no submodules
                return None
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        return spec.origin
    locations = list(spec.submodule_search_locations or [])
    return locations[0] if locations else spec.origin or "(found)"


def _find_spec(full: str, search_path):
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(full, search_path)
        except (ImportError, ValueError, OSError):
            continue
        if spec is not None:
            return spec
    return None


def plugin_report(names: list[str]) -> list[PluginStatus]:
    return [PluginStatus(name, locate_module(name)) for name in names]

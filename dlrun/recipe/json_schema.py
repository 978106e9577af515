"""The JSON Schema of recipe files (``dlrun schema``), for editors that complete and check YAML.

Generated from the pydantic recipe schema (:mod:`dlrun.recipe.schema`) and the Keras catalog
(:mod:`dlrun.recipe.json_schema_keras`). JSON Schema draft-07: every yaml-language-server
version (VS Code's YAML extension, Neovim, Helix, Emacs…) and most other editors read it;
2019-09/2020-12 only arrived in yaml-language-server 1.20.

A recipe *file* is not always a whole recipe: with ``extends:`` it may hold only the keys it
changes, and a ``plugins:`` module may define names Keras does not know. So the schema is
built in layers, each one the pydantic schema walked with a different rule:

- the **shape** (``definitions/Recipe``): every key, type and Keras name an editor offers,
  unknown keys refused, but nothing required and any Keras name allowed;
- ``complete.*`` — the required keys, applied when the file has no ``extends``;
  ``partial.*`` — what must be complete even then (list items: lists replace the base's whole);
- ``known.*`` — Keras names from the catalog only, applied when the file lists no ``plugins``.

``definitions/fragment`` is the schema of a ``configs/`` fragment (a part of a recipe that
recipes extend): the shape, partial and known rules, no required keys.

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from dlrun.recipe.catalog import catalog
from dlrun.recipe.json_schema_keras import keras_definitions, ref
from dlrun.recipe.kinds_check import LOSS_OPTIONAL_KINDS as OWN_LOSS_KINDS
from dlrun.recipe.schema import Recipe

DIALECT = "http://json-schema.org/draft-07/schema#"
FRAGMENT = "#/definitions/fragment"
REGENERATE = "dlrun schema -o dlrun.schema.json"
_REF_PREFIX = "#/definitions/"

# Where the pydantic schema says KerasObject, the kind of Keras object it is: (model, field) → kind.
KERAS_OBJECT_KINDS = {
    ("SequentialModel", "layers"): "layer",
    ("GraphModel", "shared"): "layer",
    ("GraphNode", "layer"): "layer",
    ("CompileSpec", "optimizer"): "optimizer",
    ("CompileSpec", "generator_optimizer"): "optimizer",
    ("VaeModel", "encoder"): "layer",
    ("VaeModel", "decoder"): "layer",
    ("GanModel", "generator"): "layer",
    ("GanModel", "discriminator"): "layer",
    ("CompileSpec", "loss"): "loss",
    ("CompileSpec", "metrics"): "metric",
    ("FitSpec", "callbacks"): "callback",
    ("FineTune", "optimizer"): "optimizer",
}
# Keys a recipe file may hold that are not Recipe fields: read by the loader (dlrun.recipe.loading).
_FILE_KEYS = {"extends": {
    "description": "recipe files this one builds on, relative to this file; its own keys win, mappings "
                   "merge key by key, lists and Keras objects are replaced whole",
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
}}
_NAME_DEFAULT = "default: the file name without .yaml"
_DIMENSION = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
# A search dimension as a recipe writes it (dlrun.recipe.search_schema.SearchParam's recipe form).
SEARCH_PARAM = {
    "description": "{choice: [...]}, {int: [low, high], step: n}, {float: [low, high], step: x} or "
                   "{log_uniform: [low, high]}",
    "type": "object",
    "properties": {
        "choice": {"type": "array", "minItems": 1, "items": {"type": ["boolean", "number", "string", "null"]}},
        "int": {**_DIMENSION, "items": {"type": "integer"}},
        "float": _DIMENSION,
        "log_uniform": {**_DIMENSION, "items": {"type": "number", "exclusiveMinimum": 0}},
        "step": {"type": "number", "exclusiveMinimum": 0, "description": "int and float only"},
    },
    "anyOf": [{"required": [kind], "propertyNames": {"enum": [kind] + (["step"] if stepped else [])}}
              for kind, stepped in (("choice", False), ("int", True), ("float", True), ("log_uniform", False))],
}
# A --set path (dlrun.recipe.loading.parse_dotted): names and [index] parts, dot-separated.
_SPACE_KEY = {"pattern": r"^[^.\[\]]+(\.?\[[0-9]+\]|\.[^.\[\]]+)*$",
              "errorMessage": "a dotted recipe path, e.g. model.layers[0].Dense.units"}


_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")
_SUBSCHEMAS = ("items", "additionalProperties", "propertyNames", "not", "if", "then", "else", "contains")


def _walk(schema: Any, visit: Callable[[dict], dict]) -> Any:
    """``schema`` with every subschema in it (depth first) replaced by ``visit(subschema)``; keys
    that are not schemas (a property *named* ``required``, an enum value) are left alone."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_walk(item, visit) for item in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _walk(item, visit) for name, item in out[key].items()}
    for key in _SUBSCHEMAS:
        if isinstance(out.get(key), dict):
            out[key] = _walk(out[key], visit)
    return visit(out)


def _ref_name(schema: Any) -> str | None:
    target = schema.get("$ref") if isinstance(schema, dict) else None
    return target[len(_REF_PREFIX):] if target and target.startswith(_REF_PREFIX) else None


def _keys_by_pattern(node: dict) -> dict:
    """pydantic writes ``dict[NodeName, X]`` as ``patternProperties`` alone, which lets any other
    key through; as ``propertyNames`` + ``additionalProperties`` other keys are refused (as pydantic
    refuses them) and an editor completes the values of new keys."""
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
        node = dict(node)
        (pattern, values), = node.pop("patternProperties").items()
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
        node["additionalProperties"] = values
    return node


def _pydantic_definitions() -> dict:
    """The pydantic schema as definitions, Recipe among them, with the recipe forms pydantic cannot
    know (Keras objects, search dimensions, ``pruning: true``) put in."""
    root = Recipe.model_json_schema(ref_template=_REF_PREFIX + "{model}")
    defs = root.pop("$defs")
    defs["Recipe"] = root
    defs = {name: _walk(schema, _keys_by_pattern) for name, schema in defs.items()}
    root = defs["Recipe"]
    for (model, field), kind in KERAS_OBJECT_KINDS.items():
        def to_kind(node: dict, kind=kind) -> dict:
            return ref(f"keras.{kind}") if _ref_name(node) == "KerasObject" else node

        defs[model]["properties"][field] = _walk(defs[model]["properties"][field], to_kind)
    del defs["KerasObject"]
    left = [name for name, schema in defs.items() if '"#/definitions/KerasObject"' in json.dumps(schema)]
    if left:
        raise ValueError(f"KerasObject fields without a kind in KERAS_OBJECT_KINDS: {', '.join(left)}")
    defs["SearchParam"] = SEARCH_PARAM
    defs["SearchSpec"]["properties"]["space"]["propertyNames"] = _SPACE_KEY
    defs["PruningSpec"] = {"anyOf": [{"type": "boolean"}, defs["PruningSpec"]]}
    root["properties"] = {**_FILE_KEYS, **root["properties"]}
    root["properties"]["name"]["description"] = _NAME_DEFAULT
    root["required"] = [key for key in root["required"] if key != "name"]  # the loader fills it in
    return defs


def _shape(node: dict) -> dict:
    """One schema mapping as the shape has it: nothing required, unions that may overlap."""
    node = {key: value for key, value in node.items() if key not in ("required", "discriminator", "title")}
    if "oneOf" in node:
        node["anyOf"] = node.pop("oneOf")
    return node


def _given(key: str) -> dict:
    """``key`` is there and not null (a resolved recipe writes the keys left out as nulls)."""
    return {"required": [key], "properties": {key: {"not": {"type": "null"}}}}


class _Rule:
    """The pydantic definitions walked once with one rule: what of each schema to keep.

    ``overlay(schema)`` is a schema that checks only what the rule adds to the shape, or None
    when it adds nothing there. Union members keep what tells them apart (their ``type`` and
    ``const`` keys) so that a rule for one member is not satisfied by another."""

    def __init__(self, prefix: str, defs: dict, required: bool, keras: Callable[[str], dict | None]):
        self.prefix, self.defs, self.required, self.keras = prefix, defs, required, keras
        self.out: dict[str, dict | None] = {}

    def overlay(self, schema: Any, complete: bool = True) -> dict | None:
        if not isinstance(schema, dict):
            return None
        name = _ref_name(schema)
        if name is not None:
            return self._definition(name, complete)
        members = schema.get("anyOf") or schema.get("oneOf")
        if members:
            found = [self.overlay(member, complete) for member in members]
            if all(found_one is None for found_one in found):
                return None
            return {"anyOf": [f if f is not None else self._skeleton(m) for f, m in zip(found, members)]}
        checks: dict[str, Any] = {}
        properties = {key: sub for key, value in schema.get("properties", {}).items()
                      if (sub := self.overlay(value, complete)) is not None}
        if properties:
            checks["properties"] = properties
        values = self.overlay(schema.get("additionalProperties"), complete)
        if values is not None:
            checks["additionalProperties"] = values
        items = self.overlay(schema.get("items"), True)  # a list replaces the base's whole
        if items is not None:
            checks["items"] = items
        required = schema.get("required", []) if self.required and complete else []
        if required:
            checks["required"] = required
        if not checks:
            return None
        skeleton = self._skeleton(schema)
        checks["required"] = list(dict.fromkeys(skeleton.pop("required", []) + checks.get("required", [])))
        if not checks["required"]:
            del checks["required"]
        for key, kind in skeleton.get("properties", {}).items():
            checks.setdefault("properties", {}).setdefault(key, kind)
        return {**{k: v for k, v in skeleton.items() if k != "properties"}, **checks}

    def _definition(self, name: str, complete: bool) -> dict | None:
        if name.startswith("keras."):
            return self.keras(name.removeprefix("keras."))
        key = f"{self.prefix if complete or not self.required else 'partial'}.{name}"
        if key not in self.out:
            self.out[key] = None  # a recursive definition refers to itself as nothing more to check
            self.out[key] = self.overlay(self.defs[name], complete)
        return ref(key) if self.out[key] is not None else None

    def _skeleton(self, schema: dict) -> dict:
        """What tells a union member apart: its type, its fixed values, its required fixed keys."""
        name = _ref_name(schema)
        if name is not None:
            return {"type": ["string", "object"]} if name.startswith("keras.") else self._skeleton(self.defs[name])
        if "anyOf" in schema or "oneOf" in schema:
            return {"anyOf": [self._skeleton(m) for m in schema.get("anyOf") or schema["oneOf"]]}
        out = {key: schema[key] for key in ("type", "const", "enum") if key in schema}
        fixed = {key: {"const": value["const"]} for key, value in schema.get("properties", {}).items()
                 if isinstance(value, dict) and "const" in value}
        if fixed:
            out["properties"] = fixed
            required = [key for key in schema.get("required", []) if key in fixed]
            if required:
                out["required"] = required
        return out


def _complete_recipe(defs: dict, rule: _Rule) -> None:
    """A recipe without a ``task`` has ``data``; every evaluation protocol but ``baseline`` trains a
    model: then ``model`` and ``compile`` too, and a model of layers its ``compile.loss``."""
    name = rule.prefix + ".Recipe"
    trains = {"if": {"properties": {"evaluation": {"properties": {"protocol": {"const": "baseline"}},
                                                   "required": ["protocol"]}},
                     "required": ["evaluation"]},
              "else": {"required": ["model", "compile"],
                       "properties": {"model": {"type": "object"}, "compile": {"type": "object"}}}}
    own_losses = {"required": ["type"], "properties": {"type": {"enum": list(OWN_LOSS_KINDS)}}}
    loss = {"if": {"required": ["model"], "properties": {"model": {"not": own_losses}}},  # a layer model's loss
            "then": {"properties": {"compile": {"required": ["loss"]}}}}
    fits = {"if": {"required": ["task"]}, "else": {"allOf": [{"required": ["data"]}, trains, loss]}}
    defs[name] = {"allOf": [defs[name], fits]} if name in defs else fits


def recipe_json_schema() -> dict:
    """The JSON Schema of a recipe file (and, at :data:`FRAGMENT`, of a ``configs/`` fragment)."""
    pydantic_defs = _pydantic_definitions()
    complete = _Rule("complete", pydantic_defs, required=True, keras=lambda kind: None)
    complete.overlay(ref("Recipe"))
    complete.overlay(ref("Recipe"), complete=False)
    known = _Rule("known", pydantic_defs, required=False, keras=lambda kind: ref(f"known.{kind}"))
    known.overlay(ref("Recipe"))
    defs = {name: _walk(schema, _shape) for name, schema in pydantic_defs.items()}
    # HoldoutPart's own check, in the shape: extends replaces a part whole (loading._REPLACED_WHOLE).
    defs["HoldoutPart"].update(oneOf=[_given(key) for key in ("first", "last", "fraction")],
                               then=_given("fraction"), **{"if": _given("shuffle")})
    defs.update(keras_definitions())
    for rule in (complete, known):
        defs.update({name: schema for name, schema in rule.out.items() if schema is not None})
    _complete_recipe(defs, complete)
    # A graph node's own check: only for a whole recipe, as extends merges a node key by key.
    defs["complete.GraphNode"]["oneOf"] = [_given(key) for key in ("layer", "shared")]
    for task in ("DeepDreamTask", "StyleTransferTask", "ExplainTask"):  # a task's network: a base or a run
        defs[f"complete.{task}"]["oneOf"] = [_given(key) for key in ("base", "run")]
    defs["complete.ExplainTask"].update(  # something to draw; an image for what looks at one
        anyOf=[_given(key) for key in ("activations", "filters", "grad_cam")],
        then=_given("image"), **{"if": {"anyOf": [_given("activations"), _given("grad_cam")]}})
    fragment_rules = [ref("Recipe"),
                      {"if": {"required": ["plugins"], "properties": {"plugins": {"minItems": 1}}},
                       "else": ref("known.Recipe")}]
    if "partial.Recipe" in defs:
        fragment_rules.append(ref("partial.Recipe"))
    defs["fragment"] = {"description": "a part of a recipe that recipes take in with `extends:`",
                        "allOf": fragment_rules}
    return {
        "$schema": DIALECT,
        "$comment": f"Generated by `{REGENERATE}` from dlrun's recipe schema and the catalog of "
                    f"Keras {catalog()['keras_version']}: regenerate it rather than edit it.",
        "title": "dlrun recipe",
        "description": "An experiment for `dlrun train`, `kfold` and `tune`: data, preprocessing, model, "
                       "compile, fit, evaluation, tracking (and search).",
        "allOf": [ref("fragment"), {"if": {"required": ["extends"]}, "else": ref("complete.Recipe")}],
        "definitions": defs,
    }


def schema_text() -> str:
    """The schema as the committed file holds it: stable order, one trailing newline, indented but
    with short values on one line (a third of the size of plain ``indent=1``, as readable)."""
    return _dumps(recipe_json_schema(), "") + "\n"


_ONE_LINE = 100  # characters


def _dumps(value: Any, indent: str) -> str:
    flat = json.dumps(value, ensure_ascii=False)
    if len(flat) + len(indent) <= _ONE_LINE or not isinstance(value, (dict, list)) or not value:
        return flat
    inner = indent + " "
    if isinstance(value, list) and not any(isinstance(item, (dict, list)) for item in value):
        lines = [inner]  # a long list of names: as many to a line as fit
        for item in (json.dumps(item, ensure_ascii=False) for item in value):
            if len(lines[-1]) + len(item) + 2 > _ONE_LINE and lines[-1] != inner:
                lines.append(inner)
            lines[-1] += item + ", "
        return "[\n" + "\n".join(line.rstrip() for line in lines).rstrip(",") + "\n" + indent + "]"
    if isinstance(value, list):
        items = [inner + _dumps(item, inner) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    items = [f"{inner}{json.dumps(key, ensure_ascii=False)}: {_dumps(item, inner)}" for key, item in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + indent + "}"

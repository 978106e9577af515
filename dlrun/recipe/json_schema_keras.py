"""The Keras objects of a recipe as JSON Schema definitions, generated from the Keras catalog.

A Keras object is a name (``relu``, ``Flatten``) or a one-key mapping ``{Dense: {units: 64}}``.
Each kind (layer, optimizer, loss, metric, callback, and the regularizers, initializers,
constraints and learning-rate schedules inside arguments) gets two definitions:

- ``keras.<kind>`` — what an editor completes: the catalog's names usable alone as
  ``examples``, every class as a ``properties`` key whose value lists that class's argument
  names (unknown arguments refused, required ones asked for). Any *other* name passes: a
  ``plugins:`` module may define it. Refused classes (``Lambda``…) and classes used without
  their required arguments are errors, as in ``dlrun validate``.
- ``known.<kind>`` — the same places checked against the catalog's names only; the recipe
  schema applies it where the recipe lists no ``plugins`` (see :mod:`dlrun.recipe.json_schema`).

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

import hashlib
import json

from typing import Any

from dlrun.recipe.catalog import (NESTED_ARGS, RECIPE_LAYERS, REFUSED, WRAPPED_LAYER_ARGS, catalog, check_object,
                                  layer_table)

# kind → (catalog table, names compared without case): how check_recipe_objects looks names up.
KINDS = {
    "layer": ("layers", False),
    "optimizer": ("optimizers", True),
    "loss": ("losses", False),
    "metric": ("metrics", False),
    "callback": ("callbacks", False),
    "regularizer": ("regularizers", False),
    "initializer": ("initializers", False),
    "constraint": ("constraints", False),
    "schedule": ("schedules", False),
}
ACTIVATION_ARGS = ("activation", "recurrent_activation")
_NESTED_KINDS = {suffix: table.removesuffix("s") for suffix, table in NESTED_ARGS.items()}
_PLUGIN_CODE = "it runs Python code; write it as a class in a module listed under `plugins:`"
# Any value: the catalog knows argument names, not their types. Typed, so that an editor
# completing the name writes `name: ` (an untyped property is written without the colon).
_ANY_VALUE = {"type": ["string", "number", "boolean", "array", "object", "null"]}
_NOT_A_NAME_OR_MAPPING = {"not": {"type": ["string", "object"]}}  # such values are not checked by dlrun


def ref(name: str) -> dict:
    return {"$ref": f"#/definitions/{name}"}


def _table(kind: str) -> dict:
    return layer_table() if kind == "layer" else catalog()[KINDS[kind][0]]


def _case_insensitive_pattern(names: list[str]) -> str:
    """A regular expression for any of ``names`` in any case (JSON Schema patterns have no flags)."""
    def letters(name: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.upper() != c.lower() else _escape(c) for c in name)

    return "^(" + "|".join(letters(n) for n in names) + ")$"


def _escape(char: str) -> str:
    return "\\" + char if char in r".^$*+?()[]{}|\/-" else char


def _snake_to_camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _camel_to_snake(name: str) -> str:
    return "".join(("_" + c.lower()) if c.isupper() and i else c.lower() for i, c in enumerate(name))


def known_names(kind: str) -> list[str]:
    """Every name ``dlrun validate`` accepts for ``kind``: the catalog's, and for the kinds written
    inside arguments (``kernel_regularizer: l1_l2``) the snake_case spelling of a class name too."""
    names = list(_table(kind))
    if kind in _NESTED_KINDS.values():
        names += sorted({s for n in names if _snake_to_camel(s := _camel_to_snake(n)) == n} - set(names))
    return names


def required_arguments(kind: str, name: str) -> list[str]:
    """The arguments ``dlrun validate`` asks for (the catalog's required ones, less those dlrun
    fills in itself, such as ModelCheckpoint's filepath), found by asking it."""
    table = _table(kind)

    def missing(args: dict) -> int:  # only "needs the argument" counts: a probe value may be out of range
        return sum(1 for _, text, _ in check_object(kind, table, {name: args}, ()) if "needs the argument" in text)

    without = missing({})
    return [arg for arg in table[name].get("required", []) if missing({arg: 0}) < without]


# The value rules ``dlrun validate`` applies (dlrun.recipe.arguments), one shared definition each.
_RULE_DEFS: dict[str, dict] = {}


def _rule_schema(rule) -> dict:
    """A value rule as JSON Schema: its kinds, ranges and string choices."""
    bounds: dict[str, float] = {}
    if rule.low is not None:
        bounds["exclusiveMinimum" if rule.low_open else "minimum"] = rule.low
    if rule.high is not None:
        bounds["exclusiveMaximum" if rule.high_open else "maximum"] = rule.high
    plain = {"bool": {"type": "boolean"}, "null": {"type": "null"}, "mapping": {"type": "object"},
             "int": {"type": "integer", **bounds}, "number": {"type": "number", **bounds},
             "str": {"type": "string", **({"enum": list(rule.choices)} if rule.choices else {})},
             "ints": {"type": "array", "items": {"type": "integer", **bounds}},
             "list": {"type": "array", "items": {"anyOf": [{"not": {"type": "number"}}, {"type": "number", **bounds}]}}}
    options = [plain[k] for k in ("int", "number", "bool", "str", "null", "ints", "list", "mapping") if k in rule.kinds]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "errorMessage": f"must be {rule.describe()}"}


def _with_rule(kind: str, owner: str, arg: str, schema: dict) -> dict:
    from dlrun.recipe.arguments import rule_for

    entry = _table(kind).get(owner)
    rule = rule_for(owner, arg, entry) if entry is not None else None
    if rule is None:
        return schema
    body = _rule_schema(rule)
    key = "keras.value." + hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
    _RULE_DEFS[key] = body
    return ref(key) if schema == ref("keras.argument") else {"allOf": [schema, ref(key)]}


def _argument_schema(kind: str, owner: str, arg: str) -> dict:
    return _with_rule(kind, owner, arg, _plain_argument_schema(kind, owner, arg))


def _plain_argument_schema(kind: str, owner: str, arg: str) -> dict:
    if owner in RECIPE_LAYERS:
        return ref("keras.application") if (owner, arg) == ("Pretrained", "application") else ref("keras.argument")
    if arg in ACTIVATION_ARGS:
        return ref("keras.activation")
    if kind == "optimizer" and arg == "learning_rate":
        return ref("keras.learning_rate")
    if arg in WRAPPED_LAYER_ARGS:
        return ref("keras.wrapped_layer")
    nested = next((k for suffix, k in _NESTED_KINDS.items() if arg.endswith(suffix)), None)
    return ref(f"keras.nested_{nested}") if nested else ref("keras.argument")


def _arguments_schema(kind: str, name: str, entry: dict) -> dict:
    required = required_arguments(kind, name)
    schema: dict[str, Any] = {"type": "object" if required else ["object", "null"]}
    if kind == "layer" and name in RECIPE_LAYERS:
        schema["description"] = f"dlrun's {name} layer: {RECIPE_LAYERS[name]['doc']}"
    schema["properties"] = {arg: _argument_schema(kind, name, arg) for arg in entry["args"]}
    schema["additionalProperties"] = False
    if required:
        schema["required"] = required
    return schema


def _unknown(what: str) -> str:
    return f"unknown {what} (a custom {what} needs a `plugins:` module)"


def _refusal(condition: dict, why: str) -> list[dict]:
    """``if condition then`` an error saying ``why`` (a name or a mapping is never null); nothing
    when the condition lists no name."""
    names = condition.get("enum") or condition.get("anyOf")
    return [{"if": condition, "then": {"type": "null", "errorMessage": why}}] if names else []


def _kind_definitions(kind: str, defs: dict) -> None:
    table, case_insensitive = _table(kind), KINDS[kind][1]
    refused = REFUSED.get(kind, {})
    usable = [n for n in table if n not in refused]
    needs_arguments: list[str] = []
    calls: dict[str, dict] = {}
    shared: dict[str, str] = {}  # aliases (Conv2D, Convolution2D) share one arguments definition
    for name in usable:
        entry = table[name]
        if entry.get("function") or entry.get("compile_alias"):
            calls[name] = ref("keras.no_arguments")
            continue
        if kind == "callback" and name == "LearningRateScheduler":
            calls[name] = ref("keras.learning_rate_scheduler")
            needs_arguments.append(name)
            continue
        schema = _arguments_schema(kind, name, entry)
        if schema.get("required"):
            needs_arguments.append(name)
        key = repr(schema)
        if key not in shared:
            shared[key] = f"arguments.{kind}.{name}"
            defs[shared[key]] = schema
        calls[name] = ref(shared[key])
    bare = [n for n in usable if n not in needs_arguments]
    if case_insensitive:  # offer the lower-case spelling Keras users write (`rmsprop`) too
        bare += [n.lower() for n in bare if n.lower() not in table]
        calls.update({n.lower(): calls[n] for n in list(calls) if n.lower() not in calls})
    what = "learning-rate schedule" if kind == "schedule" else kind
    why_refused = f"not allowed in a recipe: {_PLUGIN_CODE}"
    defs[f"keras.{kind}"] = {
        "description": f"a Keras {what}: its name, or {{Name: {{argument: value}}}}",
        "anyOf": [{"type": "string", "examples": bare}, ref(f"keras.{kind}.call")],
    }
    # Beside the anyOf, not in it, so that an editor shows these messages (not "incorrect type").
    refusals = _refusal({"enum": list(refused)}, why_refused)
    refusals += _refusal({"type": "object", "anyOf": [{"required": [name]} for name in refused]}, why_refused)
    refusals += _refusal({"enum": needs_arguments},
                         f"this {what} needs arguments: write it as {{Name: {{argument: value}}}}")
    if refusals:
        defs[f"keras.{kind}"]["allOf"] = refusals
    defs[f"keras.{kind}.call"] = {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": calls,
        "additionalProperties": {"type": ["object", "null"], "description": f"a {what} of a `plugins:` module"},
    }
    unknown = _unknown(what)

    def is_known(names: list[str]) -> dict:
        return {"pattern": _case_insensitive_pattern(names)} if case_insensitive else {"enum": names}

    defs[f"known.{kind}"] = {"anyOf": [
        {"type": "string", **is_known(known_names(kind)), "errorMessage": unknown},
        {"type": "object", "propertyNames": {**is_known(list(table)), "errorMessage": unknown},
         "additionalProperties": ref("known.arguments")},
    ]}


def _learning_rate_scheduler(defs: dict) -> None:
    """LearningRateScheduler takes a named schedule (dlrun.training.schedules), never Python code."""
    # Plain Python, no TensorFlow: the recipe validator reads the same table (catalog.check_object).
    from dlrun.training.schedules import BASE_ARG, KERAS_ARGS, SCHEDULES

    def number(arg) -> dict:
        schema: dict[str, Any] = {"type": "integer" if arg.kind is int else "number"}
        if arg.positive:
            schema["exclusiveMinimum"] = 0
        if arg.low is not None and not (arg.positive and arg.low <= 0):
            schema["minimum"] = arg.low
        if arg.high is not None:
            schema["maximum"] = arg.high
        if arg.default is not None:
            schema["default"] = arg.default
        return schema

    common = {BASE_ARG: {"type": "number", "exclusiveMinimum": 0,
                         "description": "default: the optimizer's learning rate"},
              **{arg: ref("keras.argument") for arg in KERAS_ARGS}}
    defs["keras.learning_rate_scheduler"] = {
        "type": "object",
        "properties": {"schedule": {"enum": list(SCHEDULES), "enumDescriptions": [s.doc for s in SCHEDULES.values()]}},
        "required": ["schedule"],
        "anyOf": [{
            "properties": {"schedule": {"const": name}, **common,
                           **{arg: number(spec) for arg, spec in s.args.items()}},
            "required": ["schedule", *(arg for arg, spec in s.args.items() if spec.default is None)],
            "additionalProperties": False,
        } for name, s in SCHEDULES.items()],
    }


def _one_of(words) -> str:
    return "^(" + "|".join(sorted(words)) + ")$"


def keras_definitions() -> dict:
    """Every ``keras.*`` and ``known.*`` definition the recipe schema refers to."""
    defs: dict[str, Any] = {"keras.argument": _ANY_VALUE, "keras.no_arguments": {
        "type": ["object", "null"], "maxProperties": 0,
        "errorMessage": "this name takes no arguments; to pass arguments name its class "
                        "(e.g. SparseCategoricalAccuracy)",
    }}
    _RULE_DEFS.clear()
    for kind in KINDS:
        _kind_definitions(kind, defs)
    defs.update(sorted(_RULE_DEFS.items()))
    _learning_rate_scheduler(defs)
    activations = catalog()["activations"]
    defs["keras.activation"] = {"anyOf": [{"type": "string", "examples": activations}, {"not": {"type": "string"}}]}
    defs["keras.application"] = {"anyOf": [{"enum": list(catalog()["applications"])}, {"not": {"type": "string"}}]}
    defs["keras.learning_rate"] = {"anyOf": [{"not": {"type": "object"}}, ref("keras.schedule.call")]}
    defs["keras.wrapped_layer"] = {"anyOf": [ref("keras.layer"), _NOT_A_NAME_OR_MAPPING]}
    for kind in _NESTED_KINDS.values():
        defs[f"keras.nested_{kind}"] = {"anyOf": [ref(f"keras.{kind}"), _NOT_A_NAME_OR_MAPPING]}
    # Names inside arguments, where the recipe lists no plugins (catalog._check_nested).
    # patternProperties, not properties: an editor offers property names as completions.
    defs["known.arguments"] = {"patternProperties": {
        _one_of(ACTIVATION_ARGS): {"anyOf": [{"enum": activations, "errorMessage": _unknown("activation")},
                                             {"not": {"type": "string"}}]},
        _one_of(WRAPPED_LAYER_ARGS): {"anyOf": [ref("known.layer"), _NOT_A_NAME_OR_MAPPING]},
        "^learning_rate$": {"anyOf": [ref("known.schedule"), {"not": {"type": "object"}}]},
        **{f"{suffix}$": {"anyOf": [ref(f"known.{kind}"), _NOT_A_NAME_OR_MAPPING]}
           for suffix, kind in _NESTED_KINDS.items()},
    }}
    return defs

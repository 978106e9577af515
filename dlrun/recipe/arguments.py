"""The values of Keras arguments in a recipe, checked by ``dlrun validate`` without Keras.

Three rules, from the most general to the most precise:

* every number is finite (YAML's ``.nan``/``.inf`` train to a NaN loss or fail deep in Keras);
* a value has the kind of the argument's default, as the catalog recorded it from the installed
  Keras (``use_bias: "yes"`` is not true or false, ``padding: 3`` is not a string);
* the arguments a recipe uses most have a type and a range of their own (:data:`_RULES`):
  ``units`` a whole number ≥ 1, ``rate`` in [0, 1), ``learning_rate`` > 0…

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

_NAMES = {"int": "a whole number", "number": "a number", "bool": "true or false", "str": "a string",
          "null": "null", "ints": "a list of whole numbers", "list": "a list", "mapping": "a mapping"}


@dataclass(frozen=True)
class Rule:
    """The kinds a value may have (keys of :data:`_NAMES`), and the range numbers must be in
    (also each number of a list); ``choices``: the strings allowed, when a string is."""

    kinds: frozenset[str]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    label: str = ""  # what it must be, in words, when the kinds say it badly

    def describe(self) -> str:
        if self.label:
            return self.label
        numeric = next((_NAMES[k] for k in ("int", "number") if k in self.kinds), None)
        if numeric is None and self.kinds & {"ints", "list"}:
            numeric = _NAMES["list"]
        parts = []
        if numeric:
            parts.append(numeric + self._range())
            if numeric != _NAMES["list"] and self.kinds & {"ints", "list"}:
                parts.append("a list of them")
        for kind in ("str", "bool", "mapping", "null"):
            if kind in self.kinds:
                parts.append(" or ".join(repr(c) for c in self.choices) if kind == "str" and self.choices
                             else _NAMES[kind])
        return ", or ".join(parts) if len(parts) > 2 else " or ".join(parts)

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            return (f" in {'(' if self.low_open else '['}{_num(self.low)}, "
                    f"{_num(self.high)}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f" {'>' if self.low_open else '≥'} {_num(self.low)}"
        if self.high is not None:
            return f" {'<' if self.high_open else '≤'} {_num(self.high)}"
        return ""

    def fits(self, value: Any) -> bool:
        kind = _kind(value)
        if kind == "list":
            if "ints" in self.kinds and value and all(_kind(v) == "int" for v in value):
                return all(self._in_range(v) for v in value)
            return "list" in self.kinds and all(self._in_range(v) for v in value if _kind(v) in ("int", "number"))
        if kind == "int" and "int" not in self.kinds:
            kind = "number"
        if kind not in self.kinds:
            return False
        if kind == "str" and self.choices:
            return value in self.choices
        return kind not in ("int", "number") or self._in_range(value)

    def _in_range(self, number: float) -> bool:
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            return False
        return self.high is None or not (number > self.high or (self.high_open and number == self.high))


def _num(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "str"
    return "list" if isinstance(value, list) else "mapping" if isinstance(value, dict) else "other"


def _rule(*kinds: str, **bounds) -> Rule:
    return Rule(frozenset(kinds), **bounds)


_POSITIVE_INT = _rule("int", low=1)
_SIZE = _rule("int", "ints", low=1)  # an int, or one per spatial axis
_FRACTION = _rule("number", low=0, high=1, high_open=True)  # dropout rates: 1 would drop everything
_UNIT = _rule("number", low=0, high=1)
_NON_NEGATIVE_INT = _rule("int", low=0)
_POSITIVE = _rule("number", low=0, low_open=True)
_KERAS_OBJECT = _rule("str", "null", "mapping", label="a name or a one-key mapping {Name: {argument: value}}")
_DROPOUT_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                   "AlphaDropout")
_MONITORING = ("EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "OrbaxCheckpoint")

# The arguments recipes use most, by name (any Keras class that has it)…
_RULES: dict[str, Rule] = {
    "units": _POSITIVE_INT, "filters": _POSITIVE_INT, "depth_multiplier": _POSITIVE_INT,
    "num_heads": _POSITIVE_INT, "key_dim": _POSITIVE_INT, "input_dim": _POSITIVE_INT, "output_dim": _POSITIVE_INT,
    "n": _POSITIVE_INT, "height": _POSITIVE_INT, "width": _POSITIVE_INT, "num_classes": _POSITIVE_INT,
    "kernel_size": _SIZE, "dilation_rate": _SIZE, "strides": _rule("int", "ints", "null", low=1),
    "pool_size": _rule("int", "ints", "null", low=1),
    "dropout": _FRACTION, "recurrent_dropout": _FRACTION,
    "max_tokens": _rule("int", "null", low=2),  # Keras' lookups need room for the OOV token
    "output_sequence_length": _rule("int", "null", low=1),
    "learning_rate": _rule("number", "mapping", low=0, low_open=True),  # or a schedule {ExponentialDecay: …}
    "initial_learning_rate": _POSITIVE, "decay_steps": _POSITIVE,
    "beta_1": _rule("number", low=0, high=1, high_open=True), "beta_2": _rule("number", low=0, high=1, high_open=True),
    "rho": _rule("number", low=0, high=1, high_open=True), "momentum": _UNIT, "epsilon": _rule("number", low=0),
    "clipnorm": _rule("number", "null", low=0, low_open=True), "clipvalue": _rule("number", "null", low=0, low_open=True),
    "global_clipnorm": _rule("number", "null", low=0, low_open=True), "weight_decay": _rule("number", "null", low=0),
    "patience": _NON_NEGATIVE_INT, "cooldown": _NON_NEGATIVE_INT, "start_from_epoch": _NON_NEGATIVE_INT,
    "histogram_freq": _NON_NEGATIVE_INT, "embeddings_freq": _NON_NEGATIVE_INT, "min_lr": _rule("number", low=0),
    "l1": _rule("number", low=0), "l2": _rule("number", low=0), "label_smoothing": _UNIT, "stddev": _rule("number", low=0),
    "seed": _rule("int", "null", low=0), "verbose": _rule("int", "bool", low=0),
    "save_freq": _rule("str", "int", low=1, choices=("epoch",)),
    "update_freq": _rule("str", "int", low=1, choices=("epoch", "batch")),
    "monitor": _rule("str"), "name": _rule("str", "null"),
    "activation": _KERAS_OBJECT, "recurrent_activation": _KERAS_OBJECT,
    "layer": _rule("str", "mapping"), "backward_layer": _KERAS_OBJECT,
}
# …and those whose meaning depends on the class (RandomRotation's factor is not ReduceLROnPlateau's).
_CLASS_RULES: dict[tuple[str, str], Rule] = {
    **{(layer, "rate"): _FRACTION for layer in _DROPOUT_LAYERS},
    ("MinMaxNorm", "rate"): _UNIT,
    ("ReduceLROnPlateau", "factor"): _rule("number", low=0, high=1, low_open=True, high_open=True),
    ("Huber", "delta"): _POSITIVE,
    ("CosineDecay", "alpha"): _UNIT, ("CosineDecayRestarts", "alpha"): _UNIT,
    **{(callback, "mode"): _rule("str", choices=("auto", "min", "max")) for callback in _MONITORING},
}
_OBJECT_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# The kind of value each kind of default allows; some arguments take more than their default's kind.
_BY_DEFAULT = {"bool": _rule("bool"), "number": _rule("number", "list", "null"),
               "sequence": _rule("number", "list", "null"), "str": _rule("str", "null")}
_ALSO = {"use_cudnn": {"bool"}, "profile_batch": {"str"}}


def rule_for(owner: str, arg: str, entry: dict) -> Rule | None:
    """The rule a value of ``owner``'s argument ``arg`` must follow, or None (anything goes)."""
    rule = _CLASS_RULES.get((owner, arg)) or _RULES.get(arg)
    if rule is None and arg.endswith(_OBJECT_SUFFIXES):
        rule = _KERAS_OBJECT
    if rule is None:
        rule = _BY_DEFAULT.get(entry.get("defaults", {}).get(arg))
        if rule is not None and arg in _ALSO:
            rule = Rule(rule.kinds | _ALSO[arg])
    return rule


def value_problems(owner: str, arg: str, value: Any, entry: dict) -> Iterator[str]:
    """What is wrong with ``value`` for ``owner``'s argument ``arg`` (``entry``: its catalog entry)."""
    rule = rule_for(owner, arg, entry)
    if rule is not None and not rule.fits(value):
        yield f"{owner} {arg} must be {rule.describe()} (got {_show(value)})"


def non_finite_leaves(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """``(path inside value, nan/inf/-inf)`` of every number in ``value`` that is not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, repr(value)
    elif isinstance(value, (list, dict)):
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            yield from non_finite_leaves(item, path + (key,))


def non_finite(value: Any) -> str | None:
    """``nan``/``inf``/``-inf`` when ``value`` is, or holds (in lists and mappings), a number
    that is not finite — never meant by a recipe, whatever the argument (a plugin's too)."""
    return next((bad for _, bad in non_finite_leaves(value)), None)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

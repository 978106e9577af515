"""The inputs tests/test_recipe_fuzz.py feeds dlrun's recipe loader: random values, YAML text
with anchors, aliases, tags and odd scalars, and mutations of the book's recipes — all drawn
from a ``random.Random``, so a seed replays them."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import yaml

from dlrun.recipe.catalog import catalog, layer_table

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
RAW = {path: yaml.safe_load(path.read_text()) for path in RECIPES}
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

TAGS = ["!!python/object/apply:os.system", "!!python/name:os.system", "!!python/object/new:os.system",
        "!!python/module:os", "!!python/tuple", "!!binary", "!!set", "!!omap", "!!timestamp", "!!str", "!!int",
        "!!float", "!!bool", "!!null", "!!map", "!!seq", "!custom", "!", "!<tag:yaml.org,2002:python/object:os.system>"]
ODD = ["~", "null", "Null", "yes", "No", "on", "OFF", "y", "n", "1e-3", "1E3", ".inf", "-.Inf", ".NaN", "0x1F",
       "0o17", "017", "1_000", "2001-12-14", "12:30:45", "+1", "-0", "0.", ".5", "1e400", "-1e400", "9" * 30,
       "9" * 1200, "0x" + "f" * 1100, "'quoted'", '"dbl\\n"', '"\\0"', '"\\x00\\u2028"', '"\\ud800"', "''", '""', "<<",
       "=", "@", "`", "Dense", "relu", "kfold", "holdout", "embedded", "iris", "../x", "/etc/passwd", "~/.ssh/id_rsa",
       "Lambda", "TFSMLayer", "RemoteMonitor", "subprocess", "'{epoch:/^3}.keras'", "'../../x.keras'", "gs://b/v.txt",
       "my_pkg.layers", "-1", "0", "1", "2", "true", "false", "[]", "{}"]
KEYS = ["name", "data", "model", "compile", "fit", "evaluation", "tracking", "plugins", "extends", "seed",
        "preprocessing", "layers", "source", "protocol", "loss", "optimizer", "metrics", "callbacks", "epochs",
        "Dense", "units", "activation", "vocabulary", "path", "tags", "dlrun.run_dir", "<<", "1", "~", "on", "a b",
        "é", "'q'"]
WORDS = ["Dense", "relu", "1e-3", "no", "~", "kfold", "../x", "[", "{a: 1}", "Lambda", "/abs", "..\\x", "a\x00b",
         "x" * 300, "subprocess", "mlflow.user", "val_acuracy", "{val_los}"]
TEXT = list("{}[]:,-?&*!|>'\"%@`#\n\t abcxyz019.") + ["é", "✓", "\u2028", "\x00", "\ufeff", "😀", "\x85"]
NON_FINITE = [math.nan, math.inf, -math.inf]


def random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(TEXT) if rng.random() < 0.8 else chr(rng.randrange(0x20, 0x3000))
                   for _ in range(rng.randrange(size + 1)))


def scalar(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.2:
        return rng.random() < 0.5
    if roll < 0.4:
        return rng.choice([rng.randrange(-5, 20), rng.randrange(-(2**70), 2**70)])
    if roll < 0.55:
        return rng.choice([rng.uniform(-10, 10), rng.choice(NON_FINITE), 1e-320, -0.0])
    if roll < 0.75:
        return random_text(rng, 12)
    return rng.choice(WORDS)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.6:
        return scalar(rng)
    if roll < 0.8:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {random_text(rng, 10): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


class Emitter:
    """YAML text for a value, in flow style, with random anchors, aliases, tags and odd scalars."""

    def __init__(self, rng: random.Random, spice: float):
        self.rng, self.spice, self.anchors = rng, spice, []

    def __call__(self, value, depth: int = 0) -> str:
        rng = self.rng
        roll = rng.random()
        if self.anchors and roll < self.spice * 0.3:
            return "*" + rng.choice(self.anchors + ["undefined"])
        prefix = ""
        if roll < self.spice:
            prefix += rng.choice(TAGS) + " "
        if rng.random() < self.spice:
            anchor = f"a{len(self.anchors)}"
            prefix += f"&{anchor} "
            self.anchors.append(anchor)  # defined before its value: an alias inside it recurses
        if rng.random() < self.spice * 0.3:
            return prefix + rng.choice(ODD)
        if isinstance(value, dict) and depth < 40:
            items = [f"{self.key(k)}: {self(v, depth + 1)}" for k, v in value.items()]
            return prefix + "{" + ", ".join(items) + "}"
        if isinstance(value, list) and depth < 40:
            return prefix + "[" + ", ".join(self(v, depth + 1) for v in value) + "]"
        return prefix + self.scalar(value)

    def key(self, key) -> str:
        return self.rng.choice(KEYS) if self.rng.random() < self.spice * 0.2 else json.dumps(str(key))

    @staticmethod
    def scalar(value) -> str:
        if value is None or isinstance(value, bool):
            return json.dumps(value)
        if isinstance(value, float):
            return ".nan" if value != value else ".inf" if value == math.inf else "-.inf" if value == -math.inf \
                else repr(value)
        return json.dumps(value) if isinstance(value, str) else str(value)


def random_tree(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if depth > 4 or kind < 0.4:
        return rng.choice([None, True, 0, -3, 2.5, "Dense", "x", "1e-3", "iris", ""])
    if kind < 0.7:
        return [random_tree(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEYS): random_tree(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def slots(node, path=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        yield node, key, path + (key,)
        yield from slots(child, path + (key,))


def book_raw(rng: random.Random) -> dict:
    path = rng.choice(RECIPES)
    raw = json.loads(json.dumps(RAW[path]))
    bases = raw.get("extends")
    if bases is not None:  # the mutant lives elsewhere: point at the real bases
        raw["extends"] = [str((path.parent / b).resolve()) for b in ([bases] if isinstance(bases, str) else bases)]
    return raw


def dump(raw: Any) -> str:
    return yaml.dump(raw, Dumper=_DUMPER, allow_unicode=True, sort_keys=False)


def same_type(rng: random.Random, old: Any) -> Any:
    if isinstance(old, bool):
        return rng.random() < 0.5
    if isinstance(old, int):
        return rng.randrange(-5, 2**33)
    if isinstance(old, float):
        return rng.uniform(-10, 10) if rng.random() < 0.8 else rng.choice(NON_FINITE)
    return rng.choice(ODD) if rng.random() < 0.5 else random_text(rng, 12)


def mutate(raw: dict, rng: random.Random) -> dict:
    for _ in range(rng.randrange(4)):  # 0: the book recipe as it is (valid)
        places = list(slots(raw))
        if not places:
            break
        container, key, _ = rng.choice(places)
        action, old = rng.randrange(5), container[key]
        if action == 0 and isinstance(container, dict):
            container[random_text(rng, 10)] = container.pop(key)  # a renamed key
        elif action == 1 and isinstance(container, list):
            del container[key]
        elif action == 2 and isinstance(old, (bool, int, float, str)):  # same type, other value: often valid
            container[key] = same_type(rng, old)
        else:
            container[key] = random_value(rng)
    return raw


WRONG = ["sixteen", "", -1, 0, -3.5, 1.5, 2**40, -(2**40), True, False, None, [], [1, -1], [3, 2.5], {}, {"a": 1},
         {"Dense": {"units": 1}}, 1e-320, "relu", ".nan", 0.5, 3, "same", [[1, 2], [3]], {"L2": {"l2": -1}}]


def keras_objects(raw: dict):
    """``(args mapping, class name, catalog table, recipe path)`` of each object written with arguments."""
    model, comp, fit = (raw.get(k) if isinstance(raw.get(k), dict) else {} for k in ("model", "compile", "fit"))
    cat = catalog()
    found = [(("model", "layers", i), o, layer_table()) for i, o in enumerate(model.get("layers") or [])]
    found += [(("model", "shared", k), o, layer_table()) for k, o in (model.get("shared") or {}).items()]
    found += [(("model", "nodes", k, "layer"), n.get("layer"), layer_table()) for k, n in (model.get("nodes") or {}).items()
              if isinstance(n, dict)]
    found += [(("compile", "optimizer"), comp.get("optimizer"), cat["optimizers"]),
              (("compile", "loss"), comp.get("loss"), cat["losses"])]
    found += [(("compile", "metrics", i), o, cat["metrics"]) for i, o in enumerate(
        comp.get("metrics") if isinstance(comp.get("metrics"), list) else [])]
    found += [(("fit", "callbacks", i), o, cat["callbacks"]) for i, o in enumerate(fit.get("callbacks") or [])]
    for path, obj, table in found:
        if isinstance(obj, dict) and len(obj) == 1:
            (name, args), = obj.items()
            entry = table.get(name) or next((v for k, v in table.items() if k.lower() == str(name).lower()), None)
            if isinstance(args, dict) and entry and not entry.get("function") and name != "LearningRateScheduler":
                yield args, name, entry, path + (name,)

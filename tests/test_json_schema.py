"""`dlrun schema`: the JSON Schema editors use to complete and check recipes.

The schema is checked the way an editor uses it: each recipe's `# yaml-language-server: $schema=…`
comment is followed to the committed file (and its `#/definitions/fragment` for configs/), and
the schema's verdicts are held against `dlrun validate`'s on broken and mutated recipes.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from dlrun.errors import RecipeError
from dlrun.recipe.json_schema import FRAGMENT, REGENERATE, recipe_json_schema, schema_text
from dlrun.recipe.loading import load_recipe
from dlrun.recipe.yaml_source import load_yaml_text

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "dlrun.schema.json"
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
FRAGMENTS = sorted((ROOT / "configs").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema="


@pytest.fixture(scope="module")
def schema() -> dict:
    return recipe_json_schema()


def _validator(schema: dict, pointer: str = "") -> jsonschema.Draft7Validator:
    """The schema as an editor reads it from a `$schema=FILE#pointer` comment."""
    registry = Registry().with_resource(SCHEMA_FILE.as_uri(), Resource.from_contents(schema, DRAFT7))
    return jsonschema.Draft7Validator({"$ref": SCHEMA_FILE.as_uri() + pointer}, registry=registry)


def _errors(validator: jsonschema.Draft7Validator, document) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:200]}"
            for e in validator.iter_errors(document)]


def _read(path: Path):
    """A recipe file as dlrun reads it (YAML 1.2 numbers, as yaml-language-server does too)."""
    return load_yaml_text(path.read_text(encoding="utf-8"), str(path))[0]


def _dlrun_accepts(raw: dict, folder: Path, tmp_path: Path) -> tuple[bool, list]:
    """`dlrun validate`'s verdict on a recipe mapping that lived in ``folder``."""
    raw = copy.deepcopy(raw)
    bases = raw.get("extends")
    if bases is not None:
        raw["extends"] = [str(folder / b) for b in bases] if isinstance(bases, list) else str(folder / bases)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(raw), encoding="utf-8")  # JSON is YAML
    try:
        load_recipe(path, require_data=False)
    except RecipeError as exc:
        return False, exc.issues
    return True, []


# --------------------------------------------------------------------------- the committed file


def test_the_committed_schema_is_the_generated_one():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        f"dlrun.schema.json is out of date with the recipe schema or the Keras catalog: run `{REGENERATE}`")


def test_the_schema_is_draft_07_for_every_yaml_language_server(schema):
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    text = json.dumps(schema)
    later = [word for word in ('"$defs"', '"prefixItems"', '"unevaluatedProperties"', '"dependentRequired"',
                               '"$dynamicRef"') if word in text]
    assert not later, f"keywords of JSON Schema 2019-09/2020-12 that older editors ignore: {later}"
    # Every $ref points at a definition that exists.
    missing = {ref for ref in _refs(schema) if ref.removeprefix("#/definitions/") not in schema["definitions"]}
    assert not missing
    assert SCHEMA_FILE.stat().st_size < 400 * 1024  # 245 KiB for Keras 3.15's 450 classes


def _refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@pytest.mark.parametrize("path", RECIPES + FRAGMENTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_and_fragment_names_the_schema_and_passes_it(schema, path):
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    modelines = [line for line in header if line.startswith(MODELINE)]
    assert len(modelines) == 1, f"{path.name}: no `{MODELINE}…` line in the comments at its top"
    target, _, pointer = modelines[0].removeprefix(MODELINE).partition("#")
    assert (path.parent / target).resolve() == SCHEMA_FILE
    assert ("#" + pointer if pointer else "") == (FRAGMENT if path in FRAGMENTS else "")
    assert _errors(_validator(schema, "#" + pointer if pointer else ""), _read(path)) == []


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_resolved_recipe_passes_as_a_whole_recipe(schema, path):
    """Resolved (extends merged, defaults filled in, nulls written), a recipe has no extends:
    the required keys apply, and the written-out forms (Keras objects, search dimensions) pass."""
    resolved = load_recipe(path, require_data=False).resolved
    assert "extends" not in resolved
    assert _errors(_validator(schema), resolved) == []


def test_a_fragment_is_not_a_whole_recipe(schema):
    fragment = _read(ROOT / "configs" / "defaults.yaml")
    assert _errors(_validator(schema, FRAGMENT), fragment) == []
    assert _errors(_validator(schema), fragment) == [f"(top): '{key}' is a required property"
                                                     for key in ("data", "model", "compile")]


# --------------------------------------------------------------------------- broken recipes

BASE = """
name: tiny
data: {source: embedded, name: iris}
model:
  layers:
    - Dense: {units: 3, activation: softmax}
compile: {optimizer: rmsprop, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
"""
PLUGINS = "plugins: [my_pkg.layers]\n"


def _layer_first(layer: str, head: str = "") -> str:
    """The base recipe with ``layer`` before its Dense layer (and ``head`` above it)."""
    return head + BASE.replace("    - Dense:", f"    - {layer}\n    - Dense:")


def _fit(section: str) -> str:
    return BASE + f"fit: {section}\n"


GRAPH = """
name: g
data: {source: npz, path: d.npz, x: {a: xa}, y: {out: y}}
model:
  type: graph
  inputs: {a: {shape: [3]}}
  nodes: {out: {layer: {Dense: {units: 1}}, inputs: a}}
  outputs: out
compile: {loss: {out: msee}}
"""
# (what is wrong, recipe text, the words `dlrun validate` says it with); each is refused by both.
BROKEN = [
    ("unknown key", BASE + "colour: red\n", "unknown key 'colour'"),
    ("misspelt key in a section", _fit("{epoch: 3}"), "unknown key 'epoch'"),
    ("wrong type", _fit("{epochs: ten}"), "valid integer"),
    ("number out of range", BASE + "seed: -1\n", "greater than or equal to 0"),
    ("unknown data source", BASE.replace("source: embedded", "source: sqlite"), "unknown source 'sqlite'"),
    ("a source's required key missing", BASE.replace("{source: embedded, name: iris}", "{source: csv, target: y}"),
     "missing required key 'path'"),
    ("no data and nothing to extend", BASE.replace("data: {source: embedded, name: iris}\n", ""),
     "missing required key 'data'"),
    ("no model for a protocol that trains", BASE.split("model:")[0], "missing required key 'model' and 'compile'"),
    ("unknown layer without plugins", _layer_first("Densx"), "unknown layer 'Densx'"),
    ("unknown layer argument, even with plugins", PLUGINS + BASE.replace("units: 3", "units: 3, unitz: 4"),
     "Dense has no argument 'unitz'"),
    ("a Keras 2 argument", BASE.replace("optimizer: rmsprop", "optimizer: {RMSprop: {lr: 0.001}}"),
     "Keras 3 calls it 'learning_rate'"),
    ("a required argument missing", BASE.replace("units: 3, ", ""), "Dense needs the argument 'units'"),
    ("a class that needs arguments named alone", _layer_first("Dense"), "Dense needs the argument 'units'"),
    ("a refused layer, even with plugins", _layer_first("Lambda: {}", PLUGINS), "Lambda layers run Python code"),
    ("two classes in one mapping", BASE.replace("activation: softmax}", "activation: softmax}\n      Dropout: {}"),
     "one-key mapping"),
    ("unknown activation without plugins", BASE.replace("activation: softmax", "activation: softmaks"),
     "unknown activation 'softmaks'"),
    ("unknown regularizer without plugins", BASE.replace("units: 3,", "units: 3, kernel_regularizer: l3,"),
     "unknown regularizer 'l3'"),
    ("unknown wrapped layer", _layer_first("Bidirectional: {layer: {LSTMM: {units: 4}}}"), "unknown layer 'LSTMM'"),
    ("unknown optimizer", BASE.replace("optimizer: rmsprop", "optimizer: rmsprob"), "unknown optimizer 'rmsprob'"),
    ("arguments to a compile alias", BASE.replace("metrics: [accuracy]", "metrics: [{accuracy: {name: acc}}]"),
     "takes no arguments"),
    ("a schedule's argument missing", _fit("{callbacks: [{LearningRateScheduler: {schedule: step_decay, drop: 0.5}}]}"),
     "schedule step_decay needs the argument 'every'"),
    ("unknown application", _layer_first("Pretrained: {application: VGG17}"), "unknown keras.applications model"),
    ("a search dimension without its bounds", BASE + "search: {space: {fit.epochs: {int: [1]}}}\n", "two numbers"),
    ("two ways to hold out one part", BASE.replace("iris}", "iris, split: {validation: {first: 10, fraction: 0.2}}}"),
     "exactly one of 'first', 'last' or 'fraction'"),
    ("an unknown loss among a graph's per-output losses", GRAPH, "unknown loss 'msee'"),
]
# What the schema lets through, as dlrun does: names a plugin may define, partial recipes, any case.
ACCEPTED = [
    ("plugin classes where the recipe lists plugins",
     _layer_first("MyLayer\n    - MyDense: {width: 4}", PLUGINS).replace("activation: softmax", "activation: my_act")),
    ("a part of a recipe that extends another", "extends: quickstart.yaml\nfit: {epochs: 1}\ndata: {limit: 9}\n"),
    ("an optimizer name in any case", BASE.replace("optimizer: rmsprop", "optimizer: {RmsProp: {epsilon: 0.1}}")),
    ("a loss with arguments and a snake_case initializer",
     BASE.replace("loss: sparse_categorical_crossentropy", "loss: {Huber: {delta: 1.0}}")
     .replace("units: 3,", "units: 3, kernel_initializer: orthogonal_initializer,")),
    ("a callback whose file dlrun names", _fit("{callbacks: [{ModelCheckpoint: {monitor: val_loss}}]}")),
]


@pytest.mark.parametrize("text,said", [(t, s) for _, t, s in BROKEN], ids=[b[0] for b in BROKEN])
def test_the_schema_refuses_what_validate_refuses(schema, tmp_path, text, said):
    raw = load_yaml_text(text, "broken.yaml")[0]
    assert _errors(_validator(schema), raw), "the schema let it through"
    accepted, issues = _dlrun_accepts(raw, ROOT / "recipes", tmp_path)
    assert not accepted and any(said in issue.message for issue in issues), issues


@pytest.mark.parametrize("text", [t for _, t in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_the_schema_accepts_what_validate_accepts(schema, tmp_path, text):
    raw = load_yaml_text(text, "fine.yaml")[0]
    assert _errors(_validator(schema), raw) == []
    assert _dlrun_accepts(raw, ROOT / "recipes", tmp_path) == (True, [])


# --------------------------------------------------------------------------- mutated recipes

# Where the schema and `dlrun validate` may disagree, and why. Everything else must agree.
# - validate checks references across sections, which a schema cannot: graph wiring, the data
#   arrays of a graph's inputs and outputs, a loss per output, search paths that must exist and
#   the values a search may choose, each checked at the recipe place it is set at;
_CROSS_REFERENCES = ("node", "shared layer", "model input", "model output", "output '", "no such recipe path",
                     "not used by", "does not fit the recipe")
_NESTED_ARGUMENTS = ("layer", "backward_layer", "_regularizer", "_initializer", "_constraint", "learning_rate")


def _cross_reference(issues: list) -> bool:
    return all(any(words in issue.message for words in _CROSS_REFERENCES) for issue in issues)


def _inside_nested_object(path: tuple) -> bool:
    """- validate leaves a malformed Keras object inside arguments (``kernel_regularizer: {}``, two
    classes in one ``layer:``) for Keras to refuse; the schema refuses it at once."""
    return any(isinstance(part, str) and part.endswith(_NESTED_ARGUMENTS) and i and str(path[i - 1])[:1].isupper()
               for i, part in enumerate(path))


def _nodes(node, path=()):
    yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _nodes(value, path + (key,))


def _at(node, path):
    for part in path:
        node = node[part]
    return node


def _wrong(value):
    """A value of another type that pydantic does not convert back (it reads "yes" as true)."""
    if isinstance(value, bool):
        return "maybe"
    return "ten" if isinstance(value, (int, float)) else 5


def _mutations(raw: dict, deletions: bool):
    """A recipe with one thing broken: an unknown key in each mapping, each Keras class name and
    each word misspelt, each value of the wrong type, or (``deletions``) each key left out."""
    for path, node in _nodes(raw):
        if isinstance(node, dict):
            yield path + ("colour",), "unknown key", {**node, "colour": 1}
            for key in node:
                if isinstance(key, str) and key[:1].isupper() and len(node) == 1:  # {Dense: {...}}
                    yield path + (key,), "misspelt class", {key + "x": node[key]}
                if deletions:
                    yield path + (key,), "left out", {k: v for k, v in node.items() if k != key}
        elif path and path[0] != "extends" and not isinstance(node, list) and node is not None:
            yield path, "wrong type", _wrong(node)
            if isinstance(node, str) and node[:1].islower() and " " not in node:
                yield path, "misspelt word", node + "x"


def _disagreements(path: Path, tmp_path: Path, validator) -> tuple[int, list[str]]:
    raw = _read(path)
    cases = [(raw, False), (load_recipe(path, require_data=False).resolved, True)]
    count, found = 0, []
    for recipe, deletions in cases:
        for where, what, replacement in list(_mutations(recipe, deletions)):
            mutated = copy.deepcopy(recipe)
            at = where[:-1] if what in ("unknown key", "misspelt class", "left out") else where
            if at:
                _at(mutated, at[:-1])[at[-1]] = replacement
            else:
                mutated = replacement
            count += 1
            schema_ok = validator.is_valid(mutated)
            dlrun_ok, issues = _dlrun_accepts(mutated, path.parent, tmp_path)
            if schema_ok == dlrun_ok or (schema_ok and _cross_reference(issues)) or (
                    dlrun_ok and _inside_nested_object(where)):
                continue
            said = issues[0].message if issues else "; ".join(_errors(validator, mutated))[:200]
            found.append(f"{path.name}{' (resolved)' if deletions else ''}: {what} at {'.'.join(map(str, where))}: "
                         f"{'the schema' if schema_ok else 'dlrun validate'} accepts, "
                         f"{'dlrun validate' if schema_ok else 'the schema'} refuses: {said}")
    return count, found


QUICK = ["quickstart", "qa_two_inputs", "imdb_l2", "jena_bidirectional_gru"]  # a sequential, a graph, nested objects


@pytest.mark.parametrize("name", QUICK)
def test_schema_and_validate_agree_on_mutated_recipes(schema, tmp_path, name):
    count, found = _disagreements(ROOT / "recipes" / f"{name}.yaml", tmp_path, _validator(schema))
    assert count > 50 and found == [], "\n".join(found)


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem not in QUICK], ids=lambda p: p.name)
def test_schema_and_validate_agree_on_every_mutated_recipe(schema, tmp_path, path):
    count, found = _disagreements(path, tmp_path, _validator(schema))
    assert count > 50 and found == [], "\n".join(found)


# --------------------------------------------------------------------------- the command

def test_schema_command_writes_the_committed_schema(tmp_path):
    out = tmp_path / "editor" / "dlrun.schema.json"
    out.parent.mkdir()
    done = subprocess.run([sys.executable, "-m", "dlrun", "schema", "-o", str(out)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == SCHEMA_FILE.read_text(encoding="utf-8")
    assert done.stdout == "" and f"wrote {out}" in done.stderr
    printed = subprocess.run([sys.executable, "-m", "dlrun", "schema"], capture_output=True, text=True, cwd=tmp_path,
                             timeout=120)
    assert printed.returncode == 0 and printed.stdout == SCHEMA_FILE.read_text(encoding="utf-8")
    failed = subprocess.run([sys.executable, "-m", "dlrun", "schema", "-o", str(tmp_path / "no" / "such" / "x.json")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert failed.returncode == 1 and "No such file or directory" in failed.stderr and "Traceback" not in failed.stderr


def test_schema_command_imports_no_heavy_library():
    probe = ("import sys\nfrom typer.testing import CliRunner\nfrom dlrun.cli import app\n"
             "result = CliRunner().invoke(app, ['schema'])\nassert result.exit_code == 0, result.output\n"
             "print('HEAVY:' + ','.join(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY:\n" in done.stdout, done.stdout


def test_shell_completion_offers_the_commands():
    """What `dlrun --install-completion` installs asks the program itself (Typer/click's protocol)."""
    script = Path(sys.executable).with_name("dlrun")
    if not script.exists():
        pytest.skip("the dlrun console script is not installed beside this Python")
    env = {"PATH": str(script.parent), "_DLRUN_COMPLETE": "complete_bash", "COMP_WORDS": "dlrun sch", "COMP_CWORD": "1",
           **({"PYTHONPATH": str(ROOT)})}
    done = subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["schema"], (done.stdout, done.stderr)
    shown = subprocess.run([str(script), "--show-completion", "bash"], capture_output=True, text=True,
                           # the shell named, not guessed from the parent processes (CI has no bash above it)
                           env={"PATH": str(script.parent), "PYTHONPATH": str(ROOT),
                                "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}, timeout=120)
    assert "complete -o default -F _dlrun_completion dlrun" in shown.stdout, shown.stderr

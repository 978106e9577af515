"""Over ten thousand mutated and random recipes end in a located recipe error or a valid recipe —
never another exception, never a hang, never a file written.

Inputs: every book recipe mutated (values, keys, ``extends`` kept), random YAML documents with
anchors, aliases, tags and odd scalars, random ``--set`` overrides, random text and random bytes,
documents whose aliases repeat long scalars around the expansion limit, non-finite numbers in
every numeric place of the book recipes, and Keras argument values of every wrong kind. Each runs
in an empty working directory under a time limit; the count of inputs is printed in pytest's
summary (tests/conftest.py).

Inputs come from a seeded ``random.Random`` (a generator library spends more time drawing an
input than dlrun spends loading it): each run takes a new seed, and a failure names it —
``DLRUN_FUZZ_SEED=<seed> pytest tests/test_recipe_fuzz.py`` replays the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from dlrun.errors import RecipeError
from dlrun.recipe.arguments import non_finite_leaves, rule_for
from dlrun.recipe.catalog import catalog, layer_table
from dlrun.recipe.loading import LoadedRecipe, load_recipe
from dlrun.recipe.schema import Recipe
from dlrun.recipe.yaml_source import MAX_EXPANDED_CHARS, format_path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
RAW = {path: yaml.safe_load(path.read_text()) for path in RECIPES}
TIME_LIMIT_S = 5  # per input; loading one takes milliseconds
SEED = int(os.environ.get("DLRUN_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# ----------------------------------------------------------------------------- the property


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise Hang(f"one input took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check(path: Path, overrides=(), require_data: bool = True) -> RecipeError | None:
    """The property: a valid recipe (that validates again from its resolved form, and holds no NaN
    or infinite number) or a RecipeError whose every issue names the recipe file, a file it
    extends, or the ``--set`` at fault. Returns the error, or None for a valid recipe."""
    with time_limit(TIME_LIMIT_S):
        try:
            loaded = load_recipe(path, overrides, require_data=require_data)
        except RecipeError as exc:
            assert exc.issues, "a RecipeError must carry at least one issue"
            for issue in exc.issues:
                where = issue.location.file
                # the recipe, a --set, or a file it extends (`extends: /etc/passwd` is read, and refused)
                assert where == str(path) or where.startswith("--set #") or Path(where).is_file(), str(issue)
                assert issue.message.strip(), str(issue)
            return exc
    assert isinstance(loaded, LoadedRecipe)
    saved = json.dumps(loaded.resolved, sort_keys=True)  # what a run saves is plain data…
    bad = [format_path(place) for place, _ in non_finite_leaves(loaded.resolved)]
    assert not bad, f"a valid recipe holds a non-finite number at {bad}"
    again = Recipe.model_validate(loaded.resolved).model_dump(mode="json")  # …and validates again, unchanged
    assert json.dumps(again, sort_keys=True) == saved
    return None


class Fuzz:
    """Runs one kind of input many times: ``case(rng)`` writes an input, checks it and returns
    its text (shown when it fails); each input has its own seeded generator."""

    def __init__(self, name: str, folder: Path, counts: dict):
        self.name, self.folder, self.counts = name, folder, counts
        folder.mkdir(exist_ok=True)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.folder / name
        path.write_bytes(content.encode("utf-8", errors="surrogatepass") if isinstance(content, str) else content)
        return path

    def check(self, path: Path, overrides=(), require_data: bool = True) -> RecipeError | None:
        error = check(path, overrides, require_data)
        self.counts.setdefault(self.name, [0, 0])[0 if error is None else 1] += 1
        return error

    def run(self, count: int, case: Callable[[random.Random], Any]) -> None:
        for index in range(count):
            rng = random.Random(f"{SEED}:{self.name}:{index}")
            try:
                case(rng)
            except Exception as exc:
                text = (self.folder / "last").read_text(errors="replace")[:3000] if (self.folder / "last").exists() else ""
                raise AssertionError(f"input {index} of {self.name} failed (replay: DLRUN_FUZZ_SEED={SEED}): "
                                     f"{type(exc).__name__}: {exc}\n--- input ---\n{text}") from exc


@pytest.fixture
def fuzz(request, tmp_path, monkeypatch):
    """An empty working directory that must stay empty, the recipe folders unchanged, inputs
    written to memory where possible, and a counter that tests/conftest.py prints."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _digest()
    counts = request.config.__dict__.setdefault("dlrun_fuzz_counts", {})
    with _fast_folder(tmp_path) as folder:
        yield Fuzz(request.node.name, folder, counts)
    assert list(cwd.iterdir()) == [], "loading a recipe wrote files"
    assert _digest() == before, "loading a recipe changed the recipe folders"


@contextmanager
def _fast_folder(tmp_path: Path):
    """Where inputs are written: a folder in memory (/dev/shm) when there is one — a file
    written and read back there costs 0.1 ms, against 2–3 ms on this machine's disk."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path / "inputs"
        return
    folder = Path(tempfile.mkdtemp(prefix="dlrun-fuzz-", dir=shm))
    try:
        yield folder / "inputs"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "recipes").rglob("*"), *(ROOT / "configs").rglob("*")]):
        digest.update(str(path).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- what is fed

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


def _text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(TEXT) if rng.random() < 0.8 else chr(rng.randrange(0x20, 0x3000))
                   for _ in range(rng.randrange(size + 1)))


def _scalar(rng: random.Random) -> Any:
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
        return _text(rng, 12)
    return rng.choice(WORDS)


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.6:
        return _scalar(rng)
    if roll < 0.8:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {_text(rng, 10): _value(rng, depth + 1) for _ in range(rng.randrange(5))}


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


def _random_tree(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if depth > 4 or kind < 0.4:
        return rng.choice([None, True, 0, -3, 2.5, "Dense", "x", "1e-3", "iris", ""])
    if kind < 0.7:
        return [_random_tree(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEYS): _random_tree(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _slots(node, path=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        yield node, key, path + (key,)
        yield from _slots(child, path + (key,))


def _book_raw(rng: random.Random) -> dict:
    path = rng.choice(RECIPES)
    raw = json.loads(json.dumps(RAW[path]))
    bases = raw.get("extends")
    if bases is not None:  # the mutant lives elsewhere: point at the real bases
        raw["extends"] = [str((path.parent / b).resolve()) for b in ([bases] if isinstance(bases, str) else bases)]
    return raw


def _dump(raw: Any) -> str:
    return yaml.dump(raw, Dumper=_DUMPER, allow_unicode=True, sort_keys=False)


def _same_type(rng: random.Random, old: Any) -> Any:
    if isinstance(old, bool):
        return rng.random() < 0.5
    if isinstance(old, int):
        return rng.randrange(-5, 2**33)
    if isinstance(old, float):
        return rng.uniform(-10, 10) if rng.random() < 0.8 else rng.choice(NON_FINITE)
    return rng.choice(ODD) if rng.random() < 0.5 else _text(rng, 12)


def _mutate(raw: dict, rng: random.Random) -> dict:
    for _ in range(rng.randrange(4)):  # 0: the book recipe as it is (valid)
        places = list(_slots(raw))
        if not places:
            break
        container, key, _ = rng.choice(places)
        action, old = rng.randrange(5), container[key]
        if action == 0 and isinstance(container, dict):
            container[_text(rng, 10)] = container.pop(key)  # a renamed key
        elif action == 1 and isinstance(container, list):
            del container[key]
        elif action == 2 and isinstance(old, (bool, int, float, str)):  # same type, other value: often valid
            container[key] = _same_type(rng, old)
        else:
            container[key] = _value(rng)
    return raw


def _remember(fuzz: Fuzz, text: str) -> None:
    fuzz.write("last", text)


# ----------------------------------------------------------------------------- the tests


def test_mutated_book_recipes(fuzz):
    def case(rng):
        text = _dump(_mutate(_book_raw(rng), rng))
        _remember(fuzz, text)
        fuzz.check(fuzz.write("mutant.yaml", text), require_data=rng.random() < 0.5)

    fuzz.run(2000, case)


def test_random_yaml_documents(fuzz):
    """Recipe-shaped and shapeless documents with anchors, aliases, tags and odd scalars."""
    def case(rng):
        value = _mutate(_book_raw(rng), rng) if rng.random() < 0.5 else _random_tree(rng)
        emit = Emitter(rng, rng.choice([0.02, 0.1, 0.3]))
        if isinstance(value, dict) and rng.random() < 0.7:  # block style at the top, flow below
            text = "".join(f"{emit.key(k)}: {emit(v)}\n" for k, v in value.items())
        else:
            text = emit(value)
        _remember(fuzz, text)
        fuzz.check(fuzz.write("random.yaml", text), require_data=False)

    fuzz.run(2500, case)


def _dotted(path) -> str:
    return format_path(path)


def test_random_overrides(fuzz):
    def case(rng):
        recipe = rng.choice(RECIPES)
        paths = [_dotted(p) for _, _, p in _slots(RAW[recipe])]
        overrides = []
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(paths) if rng.random() < 0.7 else _text(rng, 20)
            roll = rng.random()
            value = (rng.choice(ODD + TAGS) if roll < 0.4 else _text(rng, 20) if roll < 0.6
                     else Emitter(rng, 0.0)(_value(rng)))
            overrides.append(f"{key}={value}")
        _remember(fuzz, f"{recipe}\n" + "\n".join(overrides))
        fuzz.check(recipe, overrides)

    fuzz.run(1000, case)


def test_random_text(fuzz):
    def case(rng):
        text = _text(rng, 300)
        _remember(fuzz, text)
        fuzz.check(fuzz.write("text.yaml", text))

    fuzz.run(1500, case)


def test_random_bytes(fuzz):
    """Random bytes, alone or spliced into a book recipe (invalid UTF-8, NUL, BOMs…)."""
    def case(rng):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
        if rng.random() < 0.5:
            base = rng.choice(RECIPES).read_bytes()
            at = rng.randrange(len(base) + 1)
            blob = base[:at] + blob + base[at:]
        _remember(fuzz, blob.decode("utf-8", errors="replace"))
        fuzz.check(fuzz.write("bytes.yaml", blob))

    fuzz.run(1500, case)


def test_scalar_alias_expansion(fuzz):
    """An anchored long scalar repeated by aliases (in tags, lists, nested lists of aliases) around
    the expansion limit: past it, a located error that says so; well below it, no such error."""
    def case(rng):
        raw = _book_raw(rng)
        for key in ("tracking", "description"):
            raw.pop(key, None)
        length, count = rng.choice([10, 1000, 20_000, 100_000]), rng.randrange(1, 300)
        if rng.random() < 0.7:
            text = _dump(raw) + f"description: &d {'y' * length}\ntracking:\n  tags:\n" + "".join(
                f"    x{i}: *d\n" for i in range(count))
            expanded = length * (count + 1)
        else:  # aliases of a list of aliases multiply again
            text = (f"description: &d {'y' * length}\nlist: &l [*d, *d, *d]\n" + _dump(raw) + "tracking:\n  tags:\n"
                    + "".join(f"    x{i}: *l\n" for i in range(count)))
            expanded = length * (3 * count + 4)
        _remember(fuzz, text[:3000])
        error = fuzz.check(fuzz.write("alias.yaml", text), require_data=False)
        expansion = error is not None and any("expands to more than" in i.message for i in error.issues)
        if expanded > MAX_EXPANDED_CHARS:
            assert expansion, f"{expanded:,} characters once expanded, and no expansion error"
        elif expanded + 2 * len(text) < MAX_EXPANDED_CHARS:
            assert not expansion, f"only {expanded:,} characters once expanded, refused as too large"

    fuzz.run(400, case)


def test_non_finite_numbers(fuzz):
    """Every numeric place of the book recipes (settings, Keras arguments, search spaces, data
    options) given NaN or an infinity — written .nan, .inf, 1e400… — is a located error there."""
    spellings = {math.nan: [".nan", ".NaN", ".NAN"], math.inf: [".inf", "+.inf", "1e400", ".Inf"],
                 -math.inf: ["-.inf", "-1e400", "-.INF"]}

    def case(rng):
        numbers = []
        while not numbers:  # most book recipes hold numbers of their own (some only through extends)
            raw = _book_raw(rng)
            numbers = [(c, k, p) for c, k, p in _slots(raw)
                       if isinstance(c[k], (int, float)) and not isinstance(c[k], bool)]
        container, key, place = rng.choice(numbers)
        value = rng.choice(NON_FINITE)
        container[key] = "@@NONFINITE@@"
        text = _dump(raw).replace("'@@NONFINITE@@'", rng.choice(spellings[value]))
        _remember(fuzz, text)
        error = fuzz.check(fuzz.write("nonfinite.yaml", text), require_data=rng.random() < 0.5)
        assert error is not None, f"{_dotted(place)}: {value} was accepted"
        top = _dotted(place[:1])
        assert any(i.path.startswith(top) for i in error.issues), (place, [str(i) for i in error.issues])

    fuzz.run(800, case)


WRONG = ["sixteen", "", -1, 0, -3.5, 1.5, 2**40, -(2**40), True, False, None, [], [1, -1], [3, 2.5], {}, {"a": 1},
         {"Dense": {"units": 1}}, 1e-320, "relu", ".nan", 0.5, 3, "same", [[1, 2], [3]], {"L2": {"l2": -1}}]


def _keras_objects(raw: dict):
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


def test_argument_values(fuzz):
    """Keras arguments of the book recipes (and arguments they leave out) given values of every
    wrong kind: valid or located, and a value the argument's rule refuses never validates."""
    def case(rng):
        raw, objects = {}, []
        while not objects:  # most book recipes write some object with arguments
            raw = _book_raw(rng)
            objects = list(_keras_objects(raw))
        args, name, entry, path = rng.choice(objects)
        arg = rng.choice(list(args) if args and rng.random() < 0.7 else entry["args"])
        value = rng.choice(WRONG) if rng.random() < 0.8 else _value(rng)
        args[arg] = value
        text = _dump(raw)
        _remember(fuzz, text)
        error = fuzz.check(fuzz.write("arguments.yaml", text), require_data=False)
        rule = rule_for(name, arg, entry)
        if rule is not None and not rule.fits(value) and not (isinstance(value, dict) and len(value) == 1):
            assert error is not None, f"{_dotted(path + (arg,))}: {value!r} accepted against '{rule.describe()}'"
            where = _dotted(path + (arg,))
            assert any(i.path.startswith(where) for i in error.issues), (where, [str(i) for i in error.issues])

    fuzz.run(1500, case)

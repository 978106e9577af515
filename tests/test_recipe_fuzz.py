"""Thousands of mutated and random recipes end in a located recipe error or a valid recipe —
never another exception, never a hang, never a file written.

Inputs: every book recipe mutated (values, keys, ``extends`` kept), random YAML documents with
anchors, aliases, tags and odd scalars, random ``--set`` overrides, random text and random bytes.
Each runs in an empty working directory under a time limit; the count of inputs is printed in
pytest's summary (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlrun.errors import RecipeError
from dlrun.recipe.loading import LoadedRecipe, load_recipe
from dlrun.recipe.schema import Recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
RAW = {path: yaml.safe_load(path.read_text()) for path in RECIPES}
TIME_LIMIT_S = 5  # per input; loading one takes milliseconds


def fuzz_settings(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.filter_too_much, HealthCheck.data_too_large])


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


def check(path: Path, overrides=(), require_data: bool = True) -> bool:
    """The property: a valid recipe (that validates again from its resolved form) or a RecipeError
    whose every issue names the recipe file, a file it extends, or the ``--set`` at fault."""
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
            return False
    assert isinstance(loaded, LoadedRecipe)
    saved = json.dumps(loaded.resolved, sort_keys=True)  # what a run saves is plain data…
    again = Recipe.model_validate(loaded.resolved).model_dump(mode="json")  # …and validates again, unchanged
    assert json.dumps(again, sort_keys=True) == saved  # (compared as text: NaN != NaN)
    return True


@pytest.fixture
def fuzz(request, tmp_path, monkeypatch):
    """An empty working directory that must stay empty, the recipe folders unchanged, and a
    counter of inputs that tests/conftest.py prints in the summary."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _digest()
    counts = request.config.__dict__.setdefault("dlrun_fuzz_counts", {})
    name = request.node.name

    def count(valid: bool) -> None:
        counts.setdefault(name, [0, 0])[0 if valid else 1] += 1  # [valid recipes, recipe errors]

    yield tmp_path / "inputs", count
    assert list(cwd.iterdir()) == [], "loading a recipe wrote files"
    assert _digest() == before, "loading a recipe changed the recipe folders"


def _digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "recipes").rglob("*"), *(ROOT / "configs").rglob("*")]):
        digest.update(str(path).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content.encode("utf-8", errors="surrogatepass") if isinstance(content, str) else content)
    return path


# ----------------------------------------------------------------------------- what is fed

TAGS = ["!!python/object/apply:os.system", "!!python/name:os.system", "!!python/object/new:os.system",
        "!!python/module:os", "!!python/tuple", "!!binary", "!!set", "!!omap", "!!timestamp", "!!str", "!!int",
        "!!float", "!!bool", "!!null", "!!map", "!!seq", "!custom", "!", "!<tag:yaml.org,2002:python/object:os.system>"]
ODD = ["~", "null", "Null", "yes", "No", "on", "OFF", "y", "n", "1e-3", "1E3", ".inf", "-.Inf", ".NaN", "0x1F",
       "0o17", "017", "1_000", "2001-12-14", "12:30:45", "+1", "-0", "0.", ".5", "1e400", "9" * 30, "9" * 1200,
       "0x" + "f" * 1100, "'quoted'", '"dbl\\n"', '"\\0"', '"\\x00\\u2028"', '"\\ud800"', "''", '""', "<<", "=", "@",
       "`", "Dense", "relu", "kfold", "holdout", "embedded", "iris", "../x", "/etc/passwd", "Lambda", "TFSMLayer",
       "'{epoch:/^3}.keras'", "'../../x.keras'", "my_pkg.layers", "-1", "0", "1", "2", "true", "false", "[]", "{}"]
KEYS = ["name", "data", "model", "compile", "fit", "evaluation", "tracking", "plugins", "extends", "seed",
        "preprocessing", "layers", "source", "protocol", "loss", "optimizer", "metrics", "callbacks", "epochs",
        "Dense", "units", "activation", "<<", "1", "~", "on", "a b", "é", "'q'"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["Dense", "relu", "1e-3", "no", "~", "kfold", "../x", "[", "{a: 1}",
                                           "Lambda", "/abs", "..\\x", "a\x00b", "x" * 300]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)


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
            return ".nan" if value != value else ".inf" if value == float("inf") else "-.inf" if value == float(
                "-inf") else repr(value)
        return json.dumps(value) if isinstance(value, str) else str(value)


def _random_tree(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if depth > 4 or kind < 0.4:
        return rng.choice([None, True, 0, -3, 2.5, "Dense", "x", "1e-3", "iris", ""])
    if kind < 0.7:
        return [_random_tree(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEYS): _random_tree(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _slots(node):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        yield node, key
        yield from _slots(child)


def _book_raw(path: Path) -> dict:
    raw = json.loads(json.dumps(RAW[path]))
    bases = raw.get("extends")
    if bases is not None:  # the mutant lives elsewhere: point at the real bases
        raw["extends"] = [str((path.parent / b).resolve()) for b in ([bases] if isinstance(bases, str) else bases)]
    return raw


_SAME_TYPE = {bool: st.booleans(), int: st.integers(-5, 2**33), float: st.floats(-10, 10) | st.floats(),
              str: st.sampled_from(ODD) | st.text(max_size=12)}


def _mutate(raw: dict, data) -> dict:
    for _ in range(data.draw(st.integers(0, 3))):  # 0: the book recipe as it is (valid)
        places = list(_slots(raw))
        if not places:
            break
        container, key = places[data.draw(st.integers(0, len(places) - 1))]
        action, old = data.draw(st.integers(0, 4)), container[key]
        if action == 0 and isinstance(container, dict):
            container[data.draw(st.text(max_size=10))] = container.pop(key)  # a renamed key
        elif action == 1 and isinstance(container, list):
            del container[key]
        elif action == 2 and isinstance(old, (bool, int, float, str)):  # same type, other value: often valid
            container[key] = data.draw(_SAME_TYPE[type(old)])
        else:
            container[key] = data.draw(values)
    return raw


# ----------------------------------------------------------------------------- the tests


@fuzz_settings(700)
@given(data=st.data())
def test_mutated_book_recipes(fuzz, data):
    folder, count = fuzz
    raw = _mutate(_book_raw(data.draw(st.sampled_from(RECIPES))), data)
    path = _write(folder, "mutant.yaml", yaml.safe_dump(raw, allow_unicode=True))
    count(check(path, require_data=data.draw(st.booleans())))


@fuzz_settings(1500)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), spice=st.sampled_from([0.02, 0.1, 0.3]))
def test_random_yaml_documents(fuzz, data, seed, spice):
    """Recipe-shaped and shapeless documents with anchors, aliases, tags and odd scalars."""
    folder, count = fuzz
    rng = random.Random(seed)
    if data.draw(st.booleans()):
        value = _mutate(_book_raw(data.draw(st.sampled_from(RECIPES))), data)
    else:
        value = _random_tree(rng)
    emit = Emitter(rng, spice)
    if isinstance(value, dict) and rng.random() < 0.7:  # block style at the top, flow below
        text = "".join(f"{emit.key(k)}: {emit(v)}\n" for k, v in value.items())
    else:
        text = emit(value)
    path = _write(folder, "random.yaml", text)
    count(check(path, require_data=False))


@fuzz_settings(500)
@given(data=st.data())
def test_random_overrides(fuzz, data):
    _, count = fuzz
    recipe = data.draw(st.sampled_from(RECIPES))
    paths = [_dotted(p) for p in _paths(RAW[recipe])]
    overrides = []
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.one_of(st.sampled_from(paths), st.text(max_size=20)))
        value = data.draw(st.one_of(st.sampled_from(ODD + TAGS), st.text(max_size=20),
                                    values.map(lambda v: Emitter(random.Random(0), 0.0)(v))))
        overrides.append(f"{key}={value}")
    count(check(recipe, overrides))


def _paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from _paths(child, prefix + (key,))


def _dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@fuzz_settings(1000)
@given(text=st.text(st.characters(codec="utf-8") | st.sampled_from(list("{}[]:,-?&*!|>'\"%@`#\n\t ")), max_size=300))
def test_random_text(fuzz, text):
    folder, count = fuzz
    count(check(_write(folder, "text.yaml", text)))


@fuzz_settings(1000)
@given(data=st.data(), blob=st.binary(max_size=300))
def test_random_bytes(fuzz, data, blob):
    """Random bytes, alone or spliced into a book recipe (invalid UTF-8, NUL, BOMs…)."""
    folder, count = fuzz
    if data.draw(st.booleans()):
        base = data.draw(st.sampled_from(RECIPES)).read_bytes()
        at = data.draw(st.integers(0, len(base)))
        blob = base[:at] + blob + base[at:]
    count(check(_write(folder, "bytes.yaml", blob)))

"""Mutated and random recipes end in a located recipe error or a valid recipe — never a crash."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlrun.errors import RecipeError
from dlrun.recipe.loading import load_recipe

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["Dense", "relu", "1e-3", "no", "~", "kfold", "../x", "[", "{a: 1}"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)


def check(path: Path, overrides=()) -> None:
    try:
        load_recipe(path, overrides)
    except RecipeError as exc:
        assert exc.issues, "a RecipeError must carry at least one issue"
        for issue in exc.issues:
            assert str(issue.location).startswith((str(path), "--set")), str(issue)


def slots(node):
    """Every (container, key) place in a YAML tree, so a mutation can hit any of them."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in list(items):
        yield node, key
        yield from slots(child)


@SETTINGS
@given(data=st.data())
def test_mutated_book_recipes(tmp_path, data):
    raw = yaml.safe_load(data.draw(st.sampled_from(RECIPES)).read_text())
    raw.pop("extends", None)
    for _ in range(data.draw(st.integers(1, 4))):
        places = list(slots(raw))
        container, key = places[data.draw(st.integers(0, len(places) - 1))]
        if data.draw(st.booleans()) and isinstance(container, dict):
            container[data.draw(st.text(max_size=10))] = container.pop(key)  # a renamed key
        else:
            container[key] = data.draw(values)
    path = tmp_path / "mutant.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    check(path)


@SETTINGS
@given(text=st.text(max_size=300))
def test_random_documents(tmp_path, text):
    path = tmp_path / "random.yaml"
    path.write_bytes(text.encode("utf-8", errors="replace"))
    check(path)


@SETTINGS
@given(key=st.text(max_size=20), value=st.text(max_size=20))
def test_random_overrides(key, value):
    check(RECIPES[0], [f"{key}={value}"])

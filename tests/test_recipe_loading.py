"""Recipe loading: YAML 1.2 values, located errors with suggestions, extends, --set."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from dlrun.errors import RecipeError
from dlrun.recipe.loading import load_recipe, parse_dotted

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402

# The tests below edit this text (tests/_recipes.py spells it out: metrics on line 18).
GOOD = iris_recipe("tiny", epochs=2, units=8, optimizer="{RMSprop: {learning_rate: 1e-3}}")


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return [str(i) for i in info.value.issues]


def replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def test_good_recipe_loads_with_yaml_1_2_numbers(tmp_path):
    loaded = load_recipe(write(tmp_path, GOOD))
    assert loaded.recipe.compile.optimizer.args["learning_rate"] == pytest.approx(1e-3)
    assert isinstance(loaded.recipe.compile.optimizer.args["learning_rate"], float)
    assert loaded.resolved["fit"]["epochs"] == 2
    assert loaded.resolved["evaluation"] == {"protocol": "holdout"}  # defaults filled in


def test_name_defaults_to_file_stem(tmp_path):
    loaded = load_recipe(write(tmp_path, GOOD.replace("name: tiny\n", ""), "my_exp.yaml"))
    assert loaded.recipe.name == "my_exp"


def test_yes_no_on_off_stay_strings(tmp_path):
    # YAML 1.1 would read 'no' as False; as a run name it must stay the text 'no'.
    loaded = load_recipe(write(tmp_path, GOOD + "tracking: {run_name: no, tags: {flag: on}}\n"))
    assert loaded.recipe.tracking.run_name == "no"
    assert loaded.recipe.tracking.tags == {"flag": "on"}


@pytest.mark.parametrize(
    "old, new, expected",
    [
        # typo'd key
        ("fit:\n  epochs", "fit:\n  epoch", "r.yaml:20:3: fit.epoch: unknown key 'epoch' — did you mean 'epochs'?"),
        # wrong type
        ("epochs: 2", "epochs: two", "r.yaml:20:11: fit.epochs: input should be a valid integer"),
        # unknown layer
        ("- Dense: {units: 8", "- Dens: {units: 8", "r.yaml:13:7: model.layers[0].Dens: unknown layer 'Dens' — did you mean 'Dense'?"),
        # unknown layer argument
        ("{units: 8,", "{unit: 8,", "model.layers[0].Dense.unit: Dense has no argument 'unit' — did you mean 'units'?"),
        # bad optimizer
        ("{RMSprop: {learning_rate", "{RMSpropp: {learning_rate", "r.yaml:16:15: compile.optimizer.RMSpropp: unknown optimizer 'RMSpropp' — did you mean 'RMSprop'?"),
        # Keras 2 argument name
        ("learning_rate: 1e-3", "lr: 1e-3", "RMSprop has no argument 'lr' — Keras 3 calls it 'learning_rate'"),
        # unknown loss
        ("loss: categorical_crossentropy", "loss: categorical_crosentropy", "compile.loss: unknown loss 'categorical_crosentropy' — did you mean 'categorical_crossentropy'?"),
        # unknown metric
        ("metrics: [accuracy]", "metrics: [acuracy]", "compile.metrics[0]: unknown metric 'acuracy' — did you mean 'accuracy'?"),
        # unknown activation
        ("activation: softmax", "activation: sofmax", "unknown activation 'sofmax' — did you mean 'softmax'?"),
        # unknown data source
        ("source: embedded", "source: embeded", "r.yaml:3:11: data.source: unknown source 'embeded' — did you mean 'embedded'?"),
        # unknown transform
        ("{transform: standardize}", "{transform: standardise}", "preprocessing[0].transform: unknown transform 'standardise' — did you mean 'standardize'?"),
        # bad literal value
        ("name: iris", "name: irs", "data.name: input should be 'digits', 'iris'"),
        # out-of-range number
        ("batch_size: 16", "batch_size: 0", "fit.batch_size: input should be greater than or equal to 1 (got 0)"),
        # a Keras object written as a two-key mapping
        ("- Dense: {units: 3, activation: softmax}", "- {Dense: {units: 3}, Flatten: {}}", "model.layers[1]: write a Keras object as a name"),
        # a required layer argument missing
        ("- Dense: {units: 8, activation: relu}", "- Dense: {activation: relu}", "model.layers[0].Dense: Dense needs the argument 'units'"),
    ],
)
def test_typical_mistakes_are_located_with_suggestions(tmp_path, old, new, expected):
    path = write(tmp_path, replace(GOOD, old, new))
    messages = errors_of(path)
    assert any(expected in m for m in messages), messages
    assert all(m.startswith(str(path)) for m in messages)


def test_missing_section(tmp_path):
    text = GOOD[: GOOD.index("compile:")] + GOOD[GOOD.index("fit:"):]
    messages = errors_of(write(tmp_path, text))
    assert messages == [f"{tmp_path / 'r.yaml'}:1:1: missing required key 'compile' (every evaluation.protocol "
                        f"but 'baseline' trains a model)"]


def test_yaml_syntax_error_is_located(tmp_path):
    messages = errors_of(write(tmp_path, GOOD.replace("metrics: [accuracy]", "metrics: [accuracy")))
    assert len(messages) == 1 and "YAML syntax error" in messages[0]
    assert ":18:" in messages[0] or ":19:" in messages[0]


def test_every_error_reported_at_once(tmp_path):
    text = GOOD.replace("epochs: 2", "epochs: x").replace("{units: 8,", "{unit: 8,").replace("fit:", "fitt:")
    messages = errors_of(write(tmp_path, text))
    assert len(messages) >= 2
    assert any("unknown key 'fitt'" in m for m in messages)
    assert any("'unit'" in m for m in messages)


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("seed: !!python/object/apply:os.system ['true']\n", "YAML tag '!!python/object/apply:os.system' is not allowed"),
        ("seed: 1\nseed: 2\n", "duplicate key 'seed'"),
        ("x: &a {y: 1}\n<<: *a\n", "merge keys"),
    ],
)
def test_hostile_yaml_is_refused(tmp_path, snippet, expected):
    messages = errors_of(write(tmp_path, GOOD + snippet))
    assert any(expected in m for m in messages), messages


def test_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]" for i in range(1, 8)]
    messages = errors_of(write(tmp_path, GOOD + "\n".join(lines) + "\n"))
    assert any("alias bomb" in m for m in messages)


def test_missing_file_and_non_mapping(tmp_path):
    assert "no such recipe file" in errors_of(tmp_path / "nope.yaml")[0]
    assert "a recipe must be a YAML mapping" in errors_of(write(tmp_path, "- a\n- b\n"))[0]


def test_missing_data_file_is_a_recipe_error(tmp_path):
    text = GOOD.replace("source: embedded\n  name: iris", "source: npz\n  path: data/missing.npz")
    messages = errors_of(write(tmp_path, text))
    assert any("data.path: no such file" in m and "missing.npz" in m for m in messages)


# ---------------------------------------------------------------- --set


def test_set_overrides_values_and_parses_yaml(tmp_path):
    path = write(tmp_path, GOOD)
    loaded = load_recipe(
        path,
        ["fit.epochs=7", "compile.optimizer.RMSprop.learning_rate=5e-4", "model.layers[0].Dense.units=32",
         "tracking.tags={team: vision}", "data.split.validation=none"],
    )
    assert loaded.recipe.fit.epochs == 7
    assert loaded.recipe.compile.optimizer.args["learning_rate"] == pytest.approx(5e-4)
    assert loaded.recipe.model.layers[0].args["units"] == 32
    assert loaded.recipe.tracking.tags == {"team": "vision"}
    assert loaded.resolved["data"]["split"]["validation"] == "none"
    assert loaded.overrides[0] == "fit.epochs=7"


def test_set_errors_name_the_argument(tmp_path):
    path = write(tmp_path, GOOD)
    (message,) = errors_of(path, ["fit.epochs=abc"])
    assert message.startswith("--set #1 'fit.epochs=abc': fit.epochs: input should be a valid integer")
    assert "expected --set dotted.key=value" in errors_of(path, ["fit.epochs"])[0]
    assert "no such list item" in errors_of(path, ["model.layers[9].Dense.units=3"])[0]
    assert "unknown key 'epoch'" in errors_of(path, ["fit.epoch=3"])[0]


def test_parse_dotted():
    assert parse_dotted("a.b[2].c") == ("a", "b", 2, "c")
    assert parse_dotted("a.b.2.c") == ("a", "b", 2, "c")
    for bad in ("", ".a", "a.", "a..b", "a[x]"):
        assert parse_dotted(bad) is None


# ---------------------------------------------------------------- extends


def test_extends_deep_merges_and_resolves_relative_paths(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "recipes").mkdir()
    write(tmp_path / "configs", "fit: {epochs: 9, batch_size: 64}\ncompile: {metrics: [accuracy, mse]}\n", "base.yaml")
    child = GOOD.replace("name: tiny\n", "name: tiny\nextends: ../configs/base.yaml\n").replace("  epochs: 2\n", "")
    loaded = load_recipe(write(tmp_path / "recipes", child))
    assert loaded.recipe.fit.epochs == 9  # inherited
    assert loaded.recipe.fit.batch_size == 16  # child wins
    assert [m.name for m in loaded.recipe.compile.metrics] == ["accuracy"]  # lists are replaced
    assert loaded.extends == [(tmp_path / "configs" / "base.yaml").resolve()]


def test_extends_errors_point_at_the_base_file(tmp_path):
    write(tmp_path, "fit: {epochs: -3}\n", "base.yaml")
    child = GOOD.replace("name: tiny\n", "name: tiny\nextends: base.yaml\n").replace("  epochs: 2\n", "")
    messages = errors_of(write(tmp_path, child))
    assert any(m.startswith(f"{tmp_path / 'base.yaml'}:1:15: fit.epochs") for m in messages), messages


def test_extends_cycle_and_missing_base(tmp_path):
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    assert "extends cycle" in errors_of(tmp_path / "a.yaml")[0]
    write(tmp_path, "extends: nowhere.yaml\n", "c.yaml")
    assert "no such file to extend" in errors_of(tmp_path / "c.yaml")[0]


def test_book_recipes_validate():
    recipes = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
    assert len(recipes) >= 5
    for path in recipes:
        # The book's data files are not on every machine, and the shared ones lie outside the recipes'
        # folder (a run needs --allow-read): for validate, only warnings about the files it reads.
        loaded = load_recipe(path, require_data=False)
        files = ("data.path", "model.layers[0].PretrainedEmbedding.path", "task.image", "task.content_image",
                 "task.style_image")  # a task's images too (chapter 8's and 5.4's)
        assert all(w.path in files for w in loaded.warnings), loaded.warnings


def test_missing_data_is_an_error_for_a_run_and_a_warning_for_validate(tmp_path):
    text = GOOD.replace("source: embedded\n  name: iris", "source: csv\n  path: nope.csv\n  target: y")
    path = write(tmp_path, text)
    with pytest.raises(RecipeError, match="no such file"):
        load_recipe(path)
    (warning,) = load_recipe(path, require_data=False).warnings
    assert "no such file" in str(warning) and warning.path == "data.path"


def test_extends_replaces_keras_objects_and_sections_whose_kind_changes(tmp_path):
    write(tmp_path, GOOD.replace("name: tiny\n", ""), "base.yaml")
    child = """\
    name: child
    extends: base.yaml
    data: {source: npz, path: d.npz}
    compile: {optimizer: {Adam: {learning_rate: 0.01}}}
    evaluation: {protocol: kfold, k: 3}
    """
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.zeros(4))
    loaded = load_recipe(write(tmp_path, child))
    assert loaded.resolved["data"]["source"] == "npz" and "name" not in loaded.resolved["data"]
    assert loaded.resolved["compile"]["optimizer"] == {"Adam": {"learning_rate": 0.01}}
    assert loaded.resolved["compile"]["loss"] == "categorical_crossentropy"  # the rest still merges
    child2 = "extends: base.yaml\ndata: {split: {validation: {first: 30}}}\n"
    loaded = load_recipe(write(tmp_path, child2, "child2.yaml"))
    assert loaded.resolved["data"]["split"]["validation"] == {"first": 30, "last": None, "fraction": None, "shuffle": None}
    assert loaded.resolved["data"]["name"] == "iris"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data={name: iris}", "data: missing 'source' (one of: csv, embedded, image_directory, keras, npz, text_chars, text_directory, timeseries_csv)"),
        ("data.split.validation={first: 3, fraction: 0.2}", "give exactly one of 'first', 'last' or 'fraction'"),
        ("data.split.validation={first: 3, shuffle: true}", "'shuffle' only applies to 'fraction'"),
        ("seed=-5", "seed: input should be greater than or equal to 0"),
        ("fit.batch_size=123456789012345678901234567890", "fit.batch_size: input should be less than"),
        ("model.layers[0]={name: Dense, args: {units: 3}}", "model.layers[0]: write a Keras object as a name or a one-key mapping"),
        ('tracking.tags={"owner?": me}', "tracking.tags.owner?: string should match pattern"),
        ("evaluation={protocol: kfold, repeats: 2, shuffle: false}", "iterated K-fold (repeats > 1) reshuffles"),
    ],
)
def test_value_errors_in_overrides(tmp_path, override, expected):
    messages = errors_of(write(tmp_path, GOOD), [override])
    assert len(messages) == 1 and expected in messages[0], messages


def test_empty_recipe_is_located_in_its_file(tmp_path):
    path = write(tmp_path, "# only a comment\n")
    assert errors_of(path)[0].startswith(f"{path}:1:1: missing required key")


def test_compile_metric_words_take_no_arguments(tmp_path):
    (message,) = errors_of(write(tmp_path, GOOD), ["compile.metrics=[{accuracy: {name: acc}}]"])
    assert "'accuracy' lets Keras pick the variant that fits the loss" in message


def test_a_tag_named_like_a_section_kind_still_merges(tmp_path):
    write(tmp_path, GOOD.replace("name: tiny\n", "") + "tracking: {tags: {team: nlp, source: base}}\n", "base.yaml")
    loaded = load_recipe(write(tmp_path, "extends: base.yaml\ntracking: {tags: {source: child}}\n"))
    assert loaded.recipe.tracking.tags == {"team": "nlp", "source": "child"}


def test_unicode_digits_in_override_keys_are_names_not_indexes(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(RecipeError):  # found by the fuzz test: '¹'.isdigit() is True
        load_recipe(path, ["fit.¹=1"])

"""Nothing in a recipe or a saved model runs Python code: YAML tags build no objects, dlrun's
sources hold no eval/exec, and ``.keras`` files load only in Keras' safe mode."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dlrun.errors import ModelBuildError, RecipeError
from dlrun.recipe.loading import load_recipe

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "dlrun").rglob("*.py"))

GOOD = """\
name: tiny
data: {source: embedded, name: iris}
model: {layers: [{Dense: {units: 3, activation: softmax}}]}
compile: {loss: sparse_categorical_crossentropy}
"""


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("document", [
    '!!python/object/apply:os.system ["touch {x}"]',
    'name: !!python/object/apply:os.system ["touch {x}"]',
    'name: tiny\nseed: !!python/object/apply:subprocess.check_call [["touch", "{x}"]]',
    'name: !!python/name:os.system ""',
    'description: !!python/object/new:os.system ["touch {x}"]',
    'description: !!python/module:os ""',
    'name: !<tag:yaml.org,2002:python/object/apply:os.system> ["touch {x}"]',
    'name: tiny\ntracking: {tags: {a: !!python/object/apply:os.system ["touch {x}"]}}',
    '%TAG !p! tag:yaml.org,2002:python/object/apply:\n---\nname: !p!os.system ["touch {x}"]',
    'name: &a !!python/object/apply:os.system ["touch {x}"]\ndescription: *a',
    'name: !custom "x"',
    'name: !!binary dG91Y2g=',
])
def test_python_tags_are_refused_and_never_run(in_tmp, document):
    x = in_tmp / "X"
    recipe = in_tmp / "r.yaml"
    rest = "" if document.startswith("!!") else "\n" + GOOD.split("\n", 1)[1]  # a whole-document tag stands alone
    recipe.write_text(document.replace("{x}", str(x)) + rest)
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    message = str(caught.value)
    assert message.startswith(f"{recipe}:") and "is not allowed in a recipe (tags never build objects)" in message
    assert not x.exists()
    assert sorted(p.name for p in in_tmp.iterdir()) == ["r.yaml"]


def test_python_tags_in_set_overrides_are_refused(in_tmp):
    x = in_tmp / "X"
    recipe = in_tmp / "r.yaml"
    recipe.write_text(GOOD)
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, [f'description=!!python/object/apply:os.system ["touch {x}"]'])
    assert str(caught.value).startswith("--set #1") and "tags never build objects" in str(caught.value)
    assert not x.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            yield name, node


def test_no_eval_exec_or_unsafe_loading_in_dlrun():
    offences = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for name, node in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if name in {"eval", "exec", "compile"} and isinstance(node.func, ast.Name):
                offences.append(f"{where}: {name}()")
            if name in {"unsafe_load", "full_load", "load_all", "unsafe_load_all"} or (
                    name == "load" and isinstance(node.func, ast.Attribute)
                    and getattr(node.func.value, "id", "") in {"yaml", "pickle", "marshal", "dill", "cloudpickle"}):
                offences.append(f"{where}: {ast.unparse(node.func)}()")
            if name == "enable_unsafe_deserialization":
                offences.append(f"{where}: enable_unsafe_deserialization()")
            for kw in node.keywords:
                if kw.arg == "safe_mode" and not (isinstance(kw.value, ast.Constant) and kw.value.value is True):
                    offences.append(f"{where}: safe_mode={ast.unparse(kw.value)}")
            if name == "load_model":
                safe = [kw for kw in node.keywords if kw.arg == "safe_mode"]
                if not safe:
                    offences.append(f"{where}: load_model() without an explicit safe_mode=True")
    assert offences == []


# ----------------------------------------------------------------------------- saved models


@pytest.fixture
def lambda_model(tmp_path):
    """A ``.keras`` file whose Lambda layer writes a marker file when its code runs."""
    import keras

    marker = tmp_path / "lambda_ran"

    touch = keras.layers.Lambda(lambda x, m: (open(m, "w").close(), x)[1], arguments={"m": str(marker)})
    model = keras.Sequential([keras.Input((3,)), touch, keras.layers.Dense(1)])  # the lambda is saved as bytecode
    path = tmp_path / "model_with_lambda.keras"
    model.save(path)
    marker.unlink(missing_ok=True)  # building the model ran the function once
    return path, marker


def test_a_keras_file_with_python_code_is_refused(lambda_model):
    from dlrun.model.saved import load_keras_model

    path, marker = lambda_model
    with pytest.raises(ModelBuildError) as caught:
        load_keras_model(path, where="resume")
    assert str(caught.value).startswith(f"resume: {path.name} contains Python code (a Lambda layer")
    assert "safe mode" in str(caught.value)
    assert not marker.exists()


def test_safe_mode_holds_even_when_something_enabled_unsafe_loading(lambda_model):
    import keras
    from keras.src.backend.common import global_state

    from dlrun.model.saved import load_keras_model

    path, marker = lambda_model
    before = global_state.get_global_attribute("safe_mode_saving")
    keras.config.enable_unsafe_deserialization()
    try:
        with pytest.raises(ModelBuildError):
            load_keras_model(path)
        assert not marker.exists()
        # The marker is a real witness: Keras' unsafe loading does run the function.
        keras.saving.load_model(path, safe_mode=False)
        assert marker.exists()
    finally:
        global_state.set_global_attribute("safe_mode_saving", before)


def test_a_safe_keras_file_loads(tmp_path):
    import keras
    import numpy as np

    from dlrun.model.saved import load_keras_model

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    loaded = load_keras_model(tmp_path / "m.keras")
    x = np.ones((1, 3), "float32")
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(ModelBuildError, match="no such model file"):
        load_keras_model(tmp_path / "missing.keras")


def test_pretrained_weights_from_a_keras_file_run_no_code(lambda_model):
    """A ``.keras`` file given as Pretrained weights is read for its weights only."""
    from dlrun.model.pretrained import build_application

    path, marker = lambda_model
    with pytest.raises(ModelBuildError):  # not MobileNet's weights
        build_application("MobileNetV3Small", weights=str(path), input_shape=(32, 32, 3), base_dir=path.parent)
    assert not marker.exists()

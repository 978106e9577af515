"""Custom code runs only from modules a recipe lists under ``plugins:`` — imported when the model
is built, never by ``dlrun validate`` (which only says what would be imported)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dlrun.errors import ModelBuildError, RecipeError
from dlrun.recipe.loading import load_recipe
from dlrun.recipe.schema import KerasObject

ROOT = Path(__file__).resolve().parent.parent
DLRUN = [sys.executable, "-m", "dlrun"]

# A real plugin package; importing either module leaves a marker file behind.
PLUGIN_INIT = """\
from pathlib import Path
Path({marker!r}).with_suffix(".pkg").write_text("imported")
"""
PLUGIN_LAYERS = """\
from pathlib import Path

import keras

Path({marker!r}).write_text("imported")


@keras.saving.register_keras_serializable(package="dlrun_test_plugin")
class ScaledDense(keras.layers.Dense):
    \"\"\"A Dense layer whose output is multiplied by a fixed factor.\"\"\"

    def __init__(self, units, factor=1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.factor = factor

    def call(self, inputs):
        return super().call(inputs) * self.factor

    def get_config(self):
        return {{**super().get_config(), "factor": self.factor}}


@keras.saving.register_keras_serializable(package="dlrun_test_plugin")
def smooth_crossentropy(y_true, y_pred):
    return keras.losses.categorical_crossentropy(y_true, y_pred, label_smoothing=0.1)


class CountEpochs(keras.callbacks.Callback):
    def __init__(self, note="epochs.txt"):
        super().__init__()
        self.note = note
        self.seen = 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
"""

RECIPE = """\
name: plugin_iris
plugins: [{module}]
data:
  source: embedded
  name: iris
  shuffle: true
  split:
    test: {{fraction: 0.2}}
    validation: {{fraction: 0.2}}
preprocessing:
  - {{transform: standardize}}
  - {{transform: one_hot}}
model:
  layers:
    - ScaledDense: {{units: 8, factor: 0.5, activation: relu}}
    - Dense: {{units: 3, activation: softmax}}
compile:
  optimizer: adam
  loss: smooth_crossentropy
  metrics: [accuracy]
fit:
  epochs: 1
  batch_size: 16
  callbacks: [CountEpochs]
tracking:
  log_model: true
"""


@pytest.fixture
def plugin(tmp_path):
    """A package ``dlrun_test_plugin`` with a ``layers`` module, in its own folder (not on sys.path)."""
    folder = tmp_path / "plugin_src"
    package = folder / "dlrun_test_plugin"
    package.mkdir(parents=True)
    marker = tmp_path / "imported.marker"
    (package / "__init__.py").write_text(PLUGIN_INIT.format(marker=str(marker)))
    (package / "layers.py").write_text(PLUGIN_LAYERS.format(marker=str(marker)))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(module="dlrun_test_plugin.layers"))
    return folder, recipe, marker


def _env(pythonpath: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{pythonpath}{os.pathsep}{ROOT}")  # this checkout's dlrun
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_validate_shows_the_imports_without_importing_them(plugin, tmp_path):
    folder, recipe, marker = plugin
    result = subprocess.run([*DLRUN, "validate", str(recipe)], capture_output=True, text=True,
                            env=_env(folder), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"ok: {recipe}" in result.stdout
    expected = folder / "dlrun_test_plugin" / "layers.py"
    assert f"imports: dlrun_test_plugin.layers ({expected})" in result.stdout
    # Neither the module nor its package's __init__ ran.
    assert not marker.exists() and not marker.with_suffix(".pkg").exists()


def test_validate_warns_when_a_plugin_is_not_importable(plugin, tmp_path):
    _, recipe, marker = plugin
    result = subprocess.run([*DLRUN, "validate", str(recipe)], capture_output=True, text=True,
                            env=_env(tmp_path / "elsewhere"), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr  # the recipe is valid; it runs where the module is
    assert "imports: dlrun_test_plugin.layers (not importable here)" in result.stdout
    assert "'dlrun_test_plugin.layers' is not importable here" in result.stderr
    assert "PYTHONPATH" in result.stderr


def test_unknown_names_need_plugins(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.replace("plugins: [{module}]\n", "").format())
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    text = str(caught.value)
    assert ("r.yaml:14:7: model.layers[0].ScaledDense: unknown layer 'ScaledDense' — did you mean 'Dense'? "
            "(a custom layer needs a `plugins:` module)") in text
    assert "compile.loss: unknown loss 'smooth_crossentropy'" in text and "a custom loss needs a `plugins:`" in text
    assert "fit.callbacks[0]: unknown callback 'CountEpochs'" in text


@pytest.mark.parametrize("entry", ["../evil", "/abs/path/mod.py", "mod.py/x", "my-pkg", ".relative", "a..b", "x" * 300])
def test_plugin_entries_are_module_names_not_paths(tmp_path, entry):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(module=yaml.safe_dump(entry, default_flow_style=True).strip().removesuffix("...").strip()))
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert "r.yaml:2:" in str(caught.value) and "plugins[0]: not an importable module name" in str(caught.value)


def test_lambda_is_refused_even_with_plugins(tmp_path):
    recipe = tmp_path / "r.yaml"
    text = RECIPE.format(module="dlrun_test_plugin.layers").replace(
        "    - Dense: {units: 3, activation: softmax}",
        "    - Lambda: {function: 'lambda x: x'}\n    - Bidirectional: {layer: {Lambda: {function: x}}}")
    recipe.write_text(text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    issues = [str(i) for i in caught.value.issues]
    assert len(issues) == 2
    assert issues[0].startswith(f"{recipe}:16:7: model.layers[1].Lambda: Lambda layers run Python code")
    assert "model.layers[2].Bidirectional.layer.Lambda: Lambda layers run Python code" in issues[1]
    assert all("`plugins:`" in i for i in issues)


def test_a_recipe_with_plugins_trains_end_to_end(plugin, tmp_path, monkeypatch):
    from dlrun.training.runner import run_recipe

    folder, recipe, marker = plugin
    monkeypatch.syspath_prepend(str(folder))
    loaded = load_recipe(recipe)
    assert not marker.exists()  # loading (validating) a recipe imports nothing
    summary = run_recipe(loaded, output_root=tmp_path / "out", command=["test"])
    assert summary.status == "FINISHED"
    assert marker.read_text() == "imported"
    run_dir = Path(summary.run_dir)
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["plugins"] == ["dlrun_test_plugin.layers"]
    assert (run_dir / "model.keras").is_file()
    assert {"test_loss", "test_accuracy"} <= set(summary.metrics)


def test_plugin_objects_are_built_from_the_plugin(plugin, monkeypatch):
    from dlrun.model.builder import build_model, make_object
    from dlrun.training.callbacks import build_callbacks

    folder, recipe, _ = plugin
    monkeypatch.syspath_prepend(str(folder))
    r = load_recipe(recipe).recipe
    model = build_model(r.model, (4,))
    assert type(model.layers[0]).__name__ == "ScaledDense" and model.layers[0].factor == 0.5
    assert make_object("loss", r.compile.loss).__name__ == "smooth_crossentropy"
    assert type(build_callbacks(r.fit.callbacks, Path("."))[0]).__name__ == "CountEpochs"


def test_a_name_found_nowhere_names_the_plugins_searched(plugin, monkeypatch):
    from dlrun.model.builder import build_model

    folder, recipe, _ = plugin
    monkeypatch.syspath_prepend(str(folder))
    recipe.write_text(recipe.read_text().replace("ScaledDense:", "ScaledDence:"))
    r = load_recipe(recipe).recipe  # valid: with plugins, unknown names are looked up at build time
    with pytest.raises(ModelBuildError) as caught:
        build_model(r.model, (4,))
    assert str(caught.value) == ("model.layers[0] (ScaledDence): unknown layer 'ScaledDence': neither Keras nor "
                                 "the plugins searched (dlrun_test_plugin.layers) define it")


def test_a_plugin_that_fails_to_import_is_a_clear_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dlrun.cli import app

    (tmp_path / "broken_plugin.py").write_text("import not_a_module_anywhere_42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(module="broken_plugin"))
    result = CliRunner().invoke(app, ["train", str(recipe), "--output-root", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert ("error: plugins[0]: cannot import 'broken_plugin': ModuleNotFoundError: "
            "No module named 'not_a_module_anywhere_42'") in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "runs").exists()  # found before any run was created

    recipe.write_text(RECIPE.format(module="missing_plugin_42.layers"))
    result = CliRunner().invoke(app, ["train", str(recipe), "--output-root", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "cannot import 'missing_plugin_42.layers'" in result.output and "PYTHONPATH" in result.output


# --------------------------------------------------------------------------- what a plugin may not reach

POPEN = """\
name: popen
plugins: [{module}]
data: {{source: embedded, name: iris}}
model:
  layers:
    - Popen: {{args: [touch, {marker}]}}
    - Dense: {{units: 3, activation: softmax}}
compile: {{loss: sparse_categorical_crossentropy}}
"""


@pytest.mark.parametrize("module", ["subprocess", "os", "shutil", "os.path", "importlib.util", "this",
                                    "antigravity", "builtins", "__main__", "dlrun.cli"])
def test_standard_library_modules_are_not_plugins(tmp_path, module):
    """`plugins: [subprocess]` with a layer `Popen: {args: [touch, …]}` ran the command during
    `dlrun show`; validate said ok. Now both refuse it, located, and nothing runs."""
    marker = tmp_path / "ran"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(POPEN.format(module=module, marker=marker))
    for command in (["validate"], ["show"]):
        result = subprocess.run([*DLRUN, *command, str(recipe)], capture_output=True, text=True, cwd=tmp_path,
                                env=_env(tmp_path), timeout=120)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"{recipe}:2:11: plugins[0]: '{module}' is " in result.stderr, result.stderr
        assert "not a plugin" in result.stderr
        assert "imports:" not in result.stdout and "Traceback" not in result.stderr
    assert not marker.exists()


OTHERS = """\
import keras
from pathlib import Path
from numpy import save  # a function of another library, reachable as an attribute of this module

MARKER = Path({marker!r})


class Sidecar:
    \"\"\"Not a Keras class: building it would write the marker.\"\"\"

    def __init__(self, **kwargs):
        MARKER.write_text("built")


def unregistered_loss(y_true, y_pred):  # a plain function: never used from a recipe
    MARKER.write_text("called")
    return keras.ops.mean(y_true - y_pred)


class Layered(keras.layers.Layer):
    \"\"\"A Keras layer, used where the recipe wants a callback.\"\"\"
"""


@pytest.fixture
def other_module(tmp_path, monkeypatch):
    (tmp_path / "dlrun_other_plugin.py").write_text(OTHERS.format(marker=str(tmp_path / "marker")))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "marker"


@pytest.mark.parametrize("kind, name, args, problem", [
    ("layer", "Sidecar", {}, "dlrun_other_plugin.Sidecar is a class, not a subclass of keras.layers.Layer"),
    ("layer", "save", {"file": "x.npy", "arr": [1]}, "dlrun_other_plugin.save is a function, not a Keras layer "
                                                      "class"),
    ("layer", "MARKER", {}, "dlrun_other_plugin.MARKER is a PosixPath, not a Keras layer class"),
    ("layer", "__loader__", {}, "unknown layer '__loader__'"),
    ("loss", "unregistered_loss", {}, "dlrun_other_plugin.unregistered_loss is a function not registered with "
                                      "Keras: decorate it with @keras.saving.register_keras_serializable()"),
    ("loss", "save", {}, "dlrun_other_plugin.save is a function not registered with Keras"),
    ("metric", "Sidecar", {}, "is a class, not a subclass of keras.metrics.Metric"),
    ("callback", "Layered", {}, "dlrun_other_plugin.Layered is a class, not a subclass of keras.callbacks.Callback"),
    ("optimizer", "Sidecar", {"learning_rate": 0.1}, "not a subclass of keras.optimizers.Optimizer"),
    ("activation", "unregistered_loss", {}, "is a function not registered with Keras"),
    ("regularizer", "Sidecar", {}, "not a subclass of keras.regularizers.Regularizer"),
])
def test_only_keras_objects_are_built_from_a_plugin(other_module, kind, name, args, problem):
    from dlrun.model import plugins

    with pytest.raises(ModelBuildError) as caught:
        plugins.make(kind, name, args, ("dlrun_other_plugin",), "here")
    assert problem in str(caught.value)
    assert not other_module.exists()  # nothing was built or called


def test_a_third_party_module_that_is_no_plugin_calls_nothing(tmp_path):
    """`plugins: [numpy]` is a module that exists, so validate accepts it; `dlrun show` then
    refuses its `savetxt` function as a layer before calling it: no file appears."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(POPEN.format(module="numpy", marker="unused").replace(
        "Popen: {args: [touch, unused]}", f"savetxt: {{fname: {tmp_path / 'saved.txt'}, X: [1, 2]}}"))
    result = subprocess.run([*DLRUN, "show", str(recipe)], capture_output=True, text=True, cwd=tmp_path,
                            env=_env(tmp_path), timeout=120)
    assert result.returncode == 2, result.stderr
    assert ("error: model.layers[0] (savetxt): numpy.savetxt is a function, not a Keras layer class (a subclass of "
            "keras.layers.Layer)") in result.stderr
    assert not (tmp_path / "saved.txt").exists() and list(tmp_path.iterdir()) == [recipe]


def test_keras_module_attributes_that_are_not_its_classes_are_never_called(other_module, tmp_path):
    """With plugins, an unknown name is looked up at build time; Keras' own modules answer only
    with the catalog's classes, never `keras.layers.deserialize` or `keras.callbacks.LambdaCallback`."""
    from dlrun.model.keras_args import keras_layer
    from dlrun.training.callbacks import build_callbacks

    config = {"module": "builtins", "class_name": "print", "config": {}}
    for name in ("deserialize", "Input", "serialize"):
        with pytest.raises(ModelBuildError, match=f"unknown layer '{name}'"):
            keras_layer(name, {"config": config}, "here", ("dlrun_other_plugin",))
    spec = KerasObject.model_validate({"LambdaCallback": {"on_train_begin": "print"}})
    spec._plugins = ("dlrun_other_plugin",)
    with pytest.raises(ModelBuildError, match="unknown callback 'LambdaCallback'"):
        build_callbacks([spec], tmp_path)

"""``model: {type: plugin, class: module:Class}``: a keras.Model subclass from a listed plugin
module, built with the recipe's args, compiled with its optimizer (and loss, metrics,
generator_optimizer), trained, saved and resumed like any model — and refused before a run when
the class is not a keras.Model or cannot give the samples asked for."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.errors import ModelBuildError

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # the plugin module _plugin_models (and _interrupt_once)

IRIS = """\
name: {name}
plugins: [_plugin_models{more_plugins}]
deterministic: true
data: {{source: embedded, name: iris, shuffle: true, split: {{test: {{fraction: 0.2}}, validation: {{fraction: 0.2}}}}}}
preprocessing: [{{transform: standardize}}]
model: {{type: plugin, class: "_plugin_models:{cls}", args: {{units: 8, classes: 3}}}}
compile: {compile}
fit: {{epochs: {epochs}, batch_size: 8{callbacks}}}
"""


def _recipe(tmp_path: Path, name: str, cls: str = "TinyClassifier", epochs: int = 3, callbacks: str = "",
            compile: str = "{optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}",
            more_plugins: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(IRIS.format(name=name, cls=cls, epochs=epochs, compile=compile, more_plugins=more_plugins,
                                callbacks=f", callbacks: [{callbacks}]" if callbacks else ""))
    return path


def test_a_plugin_model_trains_logs_its_metrics_and_saves(tmp_path):
    summary = dlrun.train(_recipe(tmp_path, "plugin_net"), output_root=tmp_path)
    run_dir = Path(summary.run_dir)
    assert summary.status == "FINISHED" and 0 <= summary.metrics["test_accuracy"] <= 1
    assert (run_dir / "history.csv").read_text().splitlines()[0] == "epoch,accuracy,loss,val_accuracy,val_loss"
    from dlrun.model.saved import load_keras_model

    model = load_keras_model(run_dir / "model.keras", plugins=("_plugin_models",), compile=False)
    assert type(model).__name__ == "TinyClassifier" and model.units == 8


def test_a_plugin_with_two_optimizers_gets_generator_optimizer_and_resumes_exactly(tmp_path):
    """compile.generator_optimizer reaches the plugin's compile; its build_optimizers() lets a
    checkpoint restore both optimizers' state: stopped mid-run and resumed, it ends as its twin."""
    from dlrun.training.runner import RunInterrupted

    compile = "{optimizer: {Adam: {learning_rate: 0.01}}, generator_optimizer: {SGD: {learning_rate: 0.1}}}"
    stop = f"{{InterruptOnce: {{epoch: 3, batch: 2, marker: {tmp_path / 'sent'}, signal: false}}}}"
    recipe = _recipe(tmp_path, "two_optimizers", "TwoOptimizerNet", epochs=5, compile=compile, callbacks=stop,
                     more_plugins=", _interrupt_once")
    with pytest.raises(RunInterrupted):
        dlrun.train(recipe, output_root=tmp_path / "a")
    (run_dir,) = (tmp_path / "a" / "runs" / "two_optimizers").iterdir()
    resumed = dlrun.train(None, output_root=tmp_path / "a", resume=run_dir)
    twin = dlrun.train(recipe, output_root=tmp_path / "b")  # the marker is there: never stopped
    assert resumed.metrics == twin.metrics and "test_own_loss" in twin.metrics
    (twin_dir,) = (tmp_path / "b" / "runs" / "two_optimizers").iterdir()
    assert (run_dir / "history.csv").read_text() == (twin_dir / "history.csv").read_text()
    import keras

    a = keras.saving.load_model(run_dir / "model.keras", safe_mode=True, compile=False)
    b = keras.saving.load_model(twin_dir / "model.keras", safe_mode=True, compile=False)
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_class_that_is_not_a_keras_model_is_refused_before_a_run(tmp_path):
    with pytest.raises(ModelBuildError, match=r"model.class: _plugin_models:NotAModel is not a subclass of "
                                              r"keras.Model — a recipe builds only Keras objects"):
        dlrun.train(_recipe(tmp_path, "not_a_model", "NotAModel"), output_root=tmp_path)
    with pytest.raises(ModelBuildError, match=r"_plugin_models has no class 'Missing' \(its keras.Model classes: "
                                              r"TinyClassifier, TwoOptimizerNet\)"):
        dlrun.train(_recipe(tmp_path, "missing", "Missing"), output_root=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_samples_from_a_plugin_that_generates_nothing_are_refused_before_a_run(tmp_path):
    path = _recipe(tmp_path, "no_samples")
    path.write_text(path.read_text() + "samples: {every: 1}\n")
    with pytest.raises(ModelBuildError, match="samples: the plugin model TinyClassifier has no latent_dim and "
                                              "generate"):
        dlrun.train(path, output_root=tmp_path)
    assert not (tmp_path / "runs").exists()
    summary = json.loads(json.dumps(dlrun.load(path).resolved))
    assert summary["model"] == {"type": "plugin", "class": "_plugin_models:TinyClassifier",
                                "args": {"units": 8, "classes": 3}, "input_shape": None}

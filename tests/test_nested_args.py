"""Keras objects inside layer arguments (regularizers, initializers, constraints, wrapped layers):
checked by `dlrun validate` without Keras, each typo located in the file, and built by Keras."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.errors import RecipeError
from dlrun.recipe.loading import load_recipe

HEAD = """\
name: nested
data: {source: embedded, name: iris}
model:
  layers:
"""
TAIL = """\
compile: {optimizer: adam, loss: categorical_crossentropy}
fit: {epochs: 1}
"""
GOOD_LAYERS = """\
    - Dense: {units: 8, kernel_regularizer: {L2: {l2: 0.001}}, bias_regularizer: l1}
    - Dense: {units: 8, kernel_regularizer: {L1L2: {l1: 0.001, l2: 0.002}}, kernel_initializer: {HeNormal: {seed: 3}}}
    - Dense: {units: 8, kernel_initializer: he_normal, kernel_constraint: {MaxNorm: {max_value: 2.0}}}
    - Reshape: {target_shape: [2, 4]}
    - Bidirectional: {layer: {LSTM: {units: 4, return_sequences: true}}}
    - Bidirectional: {layer: {LSTM: {units: 4}}, backward_layer: {LSTM: {units: 4, go_backwards: true}}}
    - Dense: {units: 3, activation: softmax}
"""


def _write(tmp_path: Path, layers: str) -> Path:
    path = tmp_path / "nested.yaml"
    path.write_text(HEAD + layers + TAIL)
    return path


def _issues(tmp_path: Path, layers: str) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        load_recipe(_write(tmp_path, layers))
    return [str(issue) for issue in caught.value.issues]


def test_nested_keras_objects_validate(tmp_path):
    path = _write(tmp_path, GOOD_LAYERS)
    layers = load_recipe(path).resolved["model"]["layers"]
    assert layers[0]["Dense"]["kernel_regularizer"] == {"L2": {"l2": 0.001}}
    assert layers[5]["Bidirectional"]["backward_layer"] == {"LSTM": {"units": 4, "go_backwards": True}}
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output


def test_typo_inside_a_regularizer_is_located(tmp_path):
    (issue,) = _issues(tmp_path, "    - Dense: {units: 8, kernel_regularizer: {L2: {l3: 0.1}}}\n")
    # line 5 of the file, the column of `l3`
    assert issue.startswith(f"{tmp_path / 'nested.yaml'}:5:51: model.layers[0].Dense.kernel_regularizer.L2.l3: ")
    assert "L2 has no argument 'l3'" in issue


@pytest.mark.parametrize(
    "layer, where, message",
    [
        ("Dense: {units: 8, kernel_regularizer: {L3: {l2: 0.1}}}", "Dense.kernel_regularizer.L3",
         "unknown regularizer 'L3'"),
        ("Dense: {units: 8, bias_regularizer: l3}", "Dense.bias_regularizer", "unknown regularizer 'l3'"),
        ("Dense: {units: 8, kernel_initializer: he_normall}", "Dense.kernel_initializer",
         "unknown initializer 'he_normall' — did you mean 'he_normal'?"),
        ("Dense: {units: 8, kernel_initializer: {GlorotUniform: {sed: 1}}}",
         "Dense.kernel_initializer.GlorotUniform.sed", "GlorotUniform has no argument 'sed' — did you mean 'seed'?"),
        ("Dense: {units: 8, kernel_constraint: {MaxNorm: {max_valu: 2}}}", "Dense.kernel_constraint.MaxNorm.max_valu",
         "MaxNorm has no argument 'max_valu' — did you mean 'max_value'?"),
        ("Bidirectional: {layer: {LSTMM: {units: 4}}}", "Bidirectional.layer.LSTMM",
         "unknown layer 'LSTMM' — did you mean 'LSTM'?"),
        ("Bidirectional: {layer: {LSTM: {unit: 4}}}", "Bidirectional.layer.LSTM.unit",
         "LSTM has no argument 'unit' — did you mean 'units'?"),
        ("Bidirectional: {layer: {LSTM: {return_sequences: true}}}", "Bidirectional.layer.LSTM",
         "LSTM needs the argument 'units'"),
        ("TimeDistributed: {layer: {Dense: {units: 2, activation: rellu}}}",
         "TimeDistributed.layer.Dense.activation", "unknown activation 'rellu' — did you mean 'relu'?"),
    ],
)
def test_nested_typos_are_reported_with_their_place(tmp_path, layer, where, message):
    (issue,) = _issues(tmp_path, f"    - {layer}\n")
    assert f"{tmp_path / 'nested.yaml'}:5:" in issue
    assert f"model.layers[0].{where}: {message}" in issue


def test_every_nested_problem_of_a_file_is_reported_at_once(tmp_path):
    layers = ("    - Dense: {units: 8, kernel_regularizer: {L2: {l3: 0.1}}}\n"
              "    - Bidirectional: {layer: {LSTMM: {units: 4}}}\n")
    result = CliRunner().invoke(app, ["validate", str(_write(tmp_path, layers))])
    assert result.exit_code == 2
    assert "nested.yaml:5:51: model.layers[0].Dense.kernel_regularizer.L2.l3" in result.output
    assert "nested.yaml:6:" in result.output and "unknown layer 'LSTMM'" in result.output


def test_nested_objects_build_into_keras(tmp_path):
    import keras

    from dlrun.model.builder import build_model

    recipe = load_recipe(_write(tmp_path, GOOD_LAYERS)).recipe
    model = build_model(recipe.model, (8,), name="nested")
    first, second, third = model.layers[:3]
    assert isinstance(first.kernel_regularizer, keras.regularizers.L2)
    assert float(first.kernel_regularizer.l2) == pytest.approx(0.001)
    assert isinstance(first.bias_regularizer, keras.regularizers.L1)
    assert isinstance(second.kernel_regularizer, keras.regularizers.L1L2)
    assert isinstance(second.kernel_initializer, keras.initializers.HeNormal) and second.kernel_initializer.seed == 3
    assert isinstance(third.kernel_constraint, keras.constraints.MaxNorm)
    assert third.kernel_constraint.max_value == 2.0
    bi, bi2 = [layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)]
    assert isinstance(bi.forward_layer, keras.layers.LSTM) and bi.forward_layer.units == 4
    assert bi.forward_layer.return_sequences and bi2.backward_layer.go_backwards
    assert model.output_shape == (None, 3)
    # the L2 penalty is part of the loss Keras optimizes
    assert len(model.losses) == 3  # first's kernel (L2) and bias (L1), second's kernel (L1L2)

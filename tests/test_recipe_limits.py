"""What `dlrun validate` refuses in a recipe's values, as a user meets it on the command line:
documents that expand through YAML aliases, tags that dlrun and MLflow own, NaN and infinite
numbers, and Keras argument values of the wrong type or out of range — each a located error,
exit 2, every problem of the file at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DLRUN = [sys.executable, "-m", "dlrun"]

BASE = """\
name: limits
data: {source: embedded, name: iris}
model:
  layers:
    - Dense: {units: 3, activation: softmax}
compile:
  optimizer: rmsprop
  loss: sparse_categorical_crossentropy
"""


def dlrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([*DLRUN, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_recipe_that_expands_through_scalar_aliases_is_refused(tmp_path):
    """186 kB of text whose aliases repeat one 2,000-character string 13,000 times (26 MB once
    read): refused at the alias that crosses the limit, quickly, and nothing printed."""
    tags = "".join(f"    t{i}: *long\n" for i in range(13000))
    recipe = write(tmp_path, BASE + f"description: &long {'x' * 2000}\ntracking:\n  tags:\n" + tags)
    for command in (["validate"], ["show", "--no-model"]):
        result = dlrun(*command, str(recipe), cwd=tmp_path)
        assert result.returncode == 2, result.stdout[:300] + result.stderr
        assert result.stdout == ""  # no 26 MB of resolved recipe
        (line, *_) = result.stderr.splitlines()
        assert line.startswith(f"{recipe}:") and "tracking.tags.t" in line
        assert "expands to more than 2,000,000 characters" in line
        row = int(line.split(":")[1])
        assert row > 12, line  # the line of a tag that repeats the alias, not the anchor's


def test_nested_aliases_of_long_scalars_are_refused_by_size_not_only_by_count(tmp_path):
    recipe = write(tmp_path, BASE + f"description: &d {'y' * 1000}\n"
                   "x1: &l [" + ", ".join(["*d"] * 100) + "]\n"
                   "x2: [" + ", ".join(["*l"] * 1500) + "]\n")  # 150,000 values: fewer than the count limit
    result = dlrun("validate", str(recipe), cwd=tmp_path)
    assert result.returncode == 2
    assert "expands to more than 2,000,000 characters" in result.stderr


def test_a_recipe_with_a_few_aliases_still_loads(tmp_path):
    recipe = write(tmp_path, BASE.replace("{units: 3, activation: softmax}", "&out {units: 3, activation: softmax}")
                   + "fit: {epochs: &n 2, batch_size: *n}\n")
    result = dlrun("validate", str(recipe), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_tags_dlrun_and_mlflow_set_are_refused_at_their_key(tmp_path):
    recipe = write(tmp_path, BASE + "tracking:\n  tags:\n    team: nlp\n    dlrun.run_dir: /tmp/elsewhere\n"
                   "    mlflow.parentRunId: abc\n    MLflow.user: me\n")
    result = dlrun("validate", str(recipe), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    for row, key in ((12, "dlrun.run_dir"), (13, "mlflow.parentRunId"), (14, "MLflow.user")):
        assert any(line.startswith(f"{recipe}:{row}:5: tracking.tags.{key}: tags starting with dlrun. or mlflow. "
                                   f"are set by dlrun and MLflow") for line in lines), result.stderr
    assert "team" not in result.stderr
    assert "3 problems in" not in result.stderr and "1 of 1 recipe invalid." in result.stderr


@pytest.mark.parametrize("text, where", [
    ("preprocessing: [{transform: rescale, scale: .inf}]\n", "preprocessing[0].scale"),
    ("data: {source: embedded, name: iris, split: {validation: {fraction: .nan}}}\n", "data.split.validation.fraction"),
    ("compile: {loss: mse, loss_weights: {a: -.inf}}\n", "compile.loss_weights.a"),
])
def test_nan_and_infinite_numbers_are_refused(tmp_path, text, where):
    base = BASE if not text.startswith(("data", "compile")) else "\n".join(
        line for line in BASE.splitlines() if not line.startswith(text.split(":")[0])) + "\n"
    if text.startswith("compile"):
        base = base.replace("  optimizer: rmsprop\n  loss: sparse_categorical_crossentropy\n", "")
    recipe = write(tmp_path, base + text)
    result = dlrun("validate", str(recipe), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"{where}: " in result.stderr and "finite number" in result.stderr, result.stderr


ARGUMENTS = """\
name: arguments
data: {source: embedded, name: iris}
model:
  layers:
    - Dense: {units: "sixteen", use_bias: "yes"}
    - Dense: {units: -3, kernel_initializer: 3}
    - Dropout: {rate: 1.5}
    - Conv1D: {filters: 2.5, kernel_size: [3, 0], padding: 3}
    - Bidirectional: {layer: {LSTM: {units: 4, recurrent_dropout: -.inf}}}
    - Dense: {units: 3, activation: softmax, kernel_regularizer: {L2: {l2: -0.1}}}
compile:
  optimizer: {Adam: {learning_rate: .nan, beta_1: 1}}
  loss: {Huber: {delta: 0}}
fit:
  callbacks:
    - ReduceLROnPlateau: {factor: 1.5, patience: -1, mode: maximum}
    - EarlyStopping: {patience: 2.5, monitor: 3}
    - ModelCheckpoint: {save_freq: sometimes}
"""


def test_argument_values_of_the_wrong_type_or_out_of_range_are_located(tmp_path):
    """The issue's examples — units "sixteen" and -3, rate 1.5, learning_rate .nan — and more of
    each class, every one reported at its own line and column in one run of validate."""
    recipe = write(tmp_path, ARGUMENTS)
    result = dlrun("validate", str(recipe), cwd=tmp_path)
    assert result.returncode == 2
    expected = [
        "5:22: model.layers[0].Dense.units: Dense units must be a whole number ≥ 1 (got 'sixteen')",
        "5:43: model.layers[0].Dense.use_bias: Dense use_bias must be true or false (got 'yes')",
        "6:22: model.layers[1].Dense.units: Dense units must be a whole number ≥ 1 (got -3)",
        "6:46: model.layers[1].Dense.kernel_initializer: Dense kernel_initializer must be a name or a one-key "
        "mapping {Name: {argument: value}} (got 3)",
        "7:23: model.layers[2].Dropout.rate: Dropout rate must be a number in [0, 1) (got 1.5)",
        "8:25: model.layers[3].Conv1D.filters: Conv1D filters must be a whole number ≥ 1 (got 2.5)",
        "8:43: model.layers[3].Conv1D.kernel_size: Conv1D kernel_size must be a whole number ≥ 1 or a list of "
        "them (got [3, 0])",
        "8:60: model.layers[3].Conv1D.padding: Conv1D padding must be a string or null (got 3)",
        "9:67: model.layers[4].Bidirectional.layer.LSTM.recurrent_dropout: LSTM recurrent_dropout must be a "
        "finite number (got -inf)",
        "10:76: model.layers[5].Dense.kernel_regularizer.L2.l2: L2 l2 must be a number ≥ 0 (got -0.1)",
        "12:37: compile.optimizer.Adam.learning_rate: Adam learning_rate must be a finite number (got nan)",
        "12:51: compile.optimizer.Adam.beta_1: Adam beta_1 must be a number in [0, 1) (got 1)",
        "13:25: compile.loss.Huber.delta: Huber delta must be a number > 0 (got 0)",
        "16:35: fit.callbacks[0].ReduceLROnPlateau.factor: ReduceLROnPlateau factor must be a number in (0, 1) "
        "(got 1.5)",
        "16:50: fit.callbacks[0].ReduceLROnPlateau.patience: ReduceLROnPlateau patience must be a whole number "
        "≥ 0 (got -1)",
        "16:60: fit.callbacks[0].ReduceLROnPlateau.mode: ReduceLROnPlateau mode must be 'auto' or 'min' or 'max' "
        "(got 'maximum')",
        "17:33: fit.callbacks[1].EarlyStopping.patience: EarlyStopping patience must be a whole number ≥ 0 "
        "(got 2.5)",
        "17:47: fit.callbacks[1].EarlyStopping.monitor: EarlyStopping monitor must be a string (got 3)",
        "18:36: fit.callbacks[2].ModelCheckpoint.save_freq: ModelCheckpoint save_freq must be a whole number ≥ 1 "
        "or 'epoch' (got 'sometimes')",
    ]
    assert result.stderr.splitlines() == [f"{recipe}:{line}" for line in expected] + ["1 of 1 recipe invalid."]


def test_values_that_fit_their_arguments_still_validate(tmp_path):
    recipe = write(tmp_path, """\
name: fitting
data: {source: embedded, name: iris}
model:
  layers:
    - Conv1D: {filters: 4, kernel_size: 3, strides: [1], padding: same, use_bias: false, dilation_rate: 1}
    - LSTM: {units: 4, dropout: 0.0, recurrent_dropout: 0.5, use_cudnn: false, activation: null}
    - Dropout: {rate: 0}
    - Dense: {units: 3, activation: softmax, kernel_initializer: {HeNormal: {seed: 1}}, kernel_regularizer: l2}
compile:
  optimizer: {Adam: {learning_rate: {ExponentialDecay: {initial_learning_rate: 0.01, decay_steps: 10,
                                                          decay_rate: 0.9}}, beta_1: 0.5, clipnorm: 1}}
  loss: {Huber: {delta: 2}}
fit:
  callbacks:
    - ReduceLROnPlateau: {factor: 0.5, patience: 0, mode: min, min_delta: 0.001}
    - ModelCheckpoint: {save_freq: 5, verbose: 1}
    - TensorBoard: {profile_batch: [2, 4], update_freq: batch}
""")
    result = dlrun("validate", str(recipe), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_a_search_space_is_checked_against_the_same_ranges(tmp_path):
    recipe = write(tmp_path, BASE.replace("    - Dense: {units: 3, activation: softmax}",
                                          "    - Dropout: {rate: 0.2}\n    - Dense: {units: 3, activation: softmax}")
                   + "search:\n  space:\n    model.layers[0].Dropout.rate: {float: [0.0, 1.0], step: 0.25}\n"
                     "  objective: {metric: loss}\n")
    result = dlrun("validate", str(recipe), cwd=tmp_path)
    assert result.returncode == 2
    assert ("search.space.model.layers[0].Dropout.rate: the value 1.0 does not fit the recipe: "
            "model.layers[0].Dropout.rate: Dropout rate must be a number in [0, 1) (got 1.0)") in result.stderr

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

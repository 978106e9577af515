"""The CLI run as a subprocess, the way a user types it: exit codes, --json, batch output, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DLRUN = [sys.executable, "-m", "dlrun"]

TINY = """\
name: tiny_cli
data:
  source: embedded
  name: digits
  split:
    test: {fraction: 0.2}
    validation: {fraction: 0.2}
preprocessing:
  - {transform: reshape, shape: [64]}
  - {transform: rescale, scale: 0.0625}
model:
  layers:
    - Dense: {units: 32, activation: relu}
    - Dense: {units: 10, activation: softmax}
compile:
  optimizer: rmsprop
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
fit:
  epochs: 2
  batch_size: 64
"""


def dlrun(*args: str, cwd: Path, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([*DLRUN, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_train_json_prints_one_object_and_plain_progress_on_stderr(tmp_path, tiny):
    result = dlrun("train", str(tiny), "--json", "--set", "fit.epochs=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is exactly one JSON object
    assert summary["status"] == "FINISHED" and summary["protocol"] == "holdout"
    assert summary["metrics"]["epochs_run"] == 3
    assert Path(summary["run_dir"]).is_relative_to(tmp_path / "artifacts")
    assert summary["tracking_uri"] == f"sqlite:///{tmp_path / 'artifacts' / 'mlflow.db'}"
    lines = [l for l in result.stderr.splitlines() if l.startswith("[holdout] epoch")]
    assert [l.split()[2] for l in lines] == ["1/3", "2/3", "3/3"]
    assert "\x1b" not in result.stderr and "\r" not in result.stderr  # batch logs: no control characters
    assert "Traceback" not in result.stderr and "cuda" not in result.stderr.lower()
    recorded = (Path(summary["run_dir"]) / "command.txt").read_text()
    assert "--set fit.epochs=3" in recorded


def test_train_on_a_pipe_prints_one_line_per_epoch(tmp_path, tiny):
    result = dlrun("train", str(tiny), "--output-root", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    epoch_lines = [l for l in result.stdout.splitlines() if " epoch " in l]
    assert len(epoch_lines) == 2 and "loss=" in epoch_lines[0]
    assert "\x1b" not in result.stdout
    assert "FINISHED" in result.stdout
    assert (tmp_path / "out" / "mlflow.db").exists()


def test_recipe_errors_exit_2_without_traceback(tmp_path, tiny):
    tiny.write_text(TINY.replace("units: 32", "unit: 32").replace("epochs: 2", "epochs: two"))
    for command in ("validate", "train", "show"):
        result = dlrun(command, str(tiny), cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{tiny}:13:15: model.layers[0].Dense.unit: Dense has no argument 'unit' — did you mean 'units'?" in result.stderr
        assert "fit.epochs: input should be a valid integer" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "artifacts").exists()  # nothing was run or written


def test_bad_set_and_missing_file_exit_2(tmp_path, tiny):
    result = dlrun("train", str(tiny), "--set", "fit.epochs", cwd=tmp_path)
    assert result.returncode == 2 and "expected --set dotted.key=value" in result.stderr
    result = dlrun("train", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2 and "no such recipe file" in result.stderr
    result = dlrun("train", str(tiny), "--json", "--set", "fit.epochs=x", cwd=tmp_path)
    record = json.loads(result.stdout)  # --json: one object on stdout even when nothing ran
    assert result.returncode == 2 and record["status"] == "INVALID" and record["exit_code"] == 2
    assert "fit.epochs" in record["error"]


def test_data_that_does_not_fit_the_model_exits_2_before_training(tmp_path, tiny):
    tiny.write_text(TINY.replace("units: 10, activation: softmax", "units: 4, activation: softmax")
                    .replace("sparse_categorical_crossentropy", "categorical_crossentropy"))
    result = dlrun("train", str(tiny), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "the data does not fit the model" in result.stderr
    assert "Traceback" not in result.stderr
    assert " epoch " not in result.stdout
    assert not (tmp_path / "artifacts").exists()  # found before any run was created


def test_keras_dataset_offline_is_a_clear_error(tmp_path, tiny):
    tiny.write_text(TINY.replace("source: embedded\n  name: digits", "source: keras\n  name: reuters")
                    .replace("test: {fraction: 0.2}", "test: dataset"))
    result = dlrun("train", str(tiny), cwd=tmp_path, env={"KERAS_HOME": str(tmp_path / "keras_home")})
    assert result.returncode == 2, result.stderr
    assert "reuters.npz" in result.stderr and str(tmp_path / "keras_home") in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_many_and_show(tmp_path, tiny, recipes_dir):
    result = dlrun("validate", *map(str, sorted(recipes_dir.glob("*.yaml"))), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok: ") == len(list(recipes_dir.glob("*.yaml")))
    result = dlrun("show", "--no-model", str(tiny), "--set", "fit.epochs=9", cwd=tmp_path)
    assert result.returncode == 0 and "epochs: 9" in result.stdout and "protocol: holdout" in result.stdout
    result = dlrun("show", str(recipes_dir / "reuters_dense.yaml"), cwd=tmp_path)  # shape known without data
    assert result.returncode == 0, result.stderr
    assert "647,214" in result.stdout  # the book's Reuters network
    result = dlrun("show", str(recipes_dir / "boston_housing.yaml"), cwd=tmp_path)  # shape read from the data
    assert result.returncode == 0, result.stderr
    assert "5,121" in result.stdout  # 13→64→64→1: 896 + 4,160 + 65


def test_kfold_command_turns_any_recipe_into_kfold(tmp_path, tiny):
    result = dlrun("kfold", str(tiny), "--k", "2", "--json", "--quiet", "--set", "fit.epochs=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["protocol"] == "kfold"
    assert {"cv_val_accuracy_mean", "cv_val_accuracy_std", "best_epoch"} <= set(summary["metrics"])
    assert sorted(p.name for p in (Path(summary["run_dir"]) / "folds").iterdir()) == ["fold_1", "fold_2"]
    assert result.stderr.strip() == ""  # --quiet
    result = dlrun("kfold", str(tiny), "--k", "1", "--json", cwd=tmp_path)
    assert result.returncode == 2 and json.loads(result.stdout)["status"] == "INVALID"
    assert "--k" in result.stderr


@pytest.mark.parametrize("sig, code, status", [(signal.SIGINT, 130, "KILLED"), (signal.SIGTERM, 143, "KILLED")])
def test_interrupt_marks_the_run_killed_and_keeps_its_epochs(tmp_path, tiny, sig, code, status):
    """The signal is noted and training stops at the next batch (see dlrun/training/interrupts.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*DLRUN, "train", str(tiny), "--set", "fit.epochs=100000", "--set", "fit.batch_size=8"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 120
        for line in proc.stdout:
            if "epoch 2/" in line or time.time() > deadline:
                break
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "marked KILLED" in err and "Traceback" not in err
    (run_json,) = (tmp_path / "artifacts" / "runs" / "tiny_cli").glob("*/run.json")
    record = json.loads(run_json.read_text())
    assert record["status"] == status
    history = (run_json.parent / "history.csv").read_text().splitlines()
    assert len(history) >= 3  # header + the epochs done before the signal

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'artifacts' / 'mlflow.db'}")
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.status == status
    # The epoch cut short by the signal is not recorded: the files and MLflow agree.
    assert len(client.get_metric_history(run.info.run_id, "loss")) == len(history) - 1

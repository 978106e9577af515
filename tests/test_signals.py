"""However signals arrive, a run ends in one final state — the same in run.json and MLflow — and the
message says what happened: a second SIGTERM while the run is being recorded, a SIGTERM after
training finished (during the upload of its files), SIGINT then SIGTERM while it trains. Real
signals to a ``dlrun`` subprocess, at fixed places: tests/_interrupt_once.py sends them at one
batch, tests/_signal_on_upload.py at the first upload after the final state was written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import resumable_iris_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow  # each test trains in a subprocess of its own


def _train(tmp_path: Path, *, signals: str = "[SIGTERM]", on_upload: str | None = None,
           at_epoch: int = 2, epochs: int = 3, extra: list[str] = ()) -> subprocess.CompletedProcess:
    """``dlrun train --json`` of a small recipe that sends itself ``signals`` at a batch of epoch
    ``at_epoch`` (none when 0) and ``on_upload`` when its files start going to MLflow."""
    callbacks = f"InterruptOnce: {{epoch: {at_epoch}, batch: 3, marker: {tmp_path / 'sent'}, signals: {signals}}}"
    (tmp_path / "r.yaml").write_text(resumable_iris_recipe("endings", epochs=epochs, plugins="_interrupt_once, "
                                                           "_signal_on_upload", callbacks=callbacks))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    env.pop("MLFLOW_TRACKING_URI", None)
    if on_upload:
        env["DLRUN_TEST_SIGNAL_ON_UPLOAD"] = on_upload
    return subprocess.run([sys.executable, "-m", "dlrun", "train", "r.yaml", "-o", "out", "--json", *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def _states(result: subprocess.CompletedProcess) -> tuple[dict, dict, object]:
    """The --json record, run.json, and the MLflow run."""
    record = json.loads(result.stdout)
    status = json.loads((Path(record["run_dir"]) / "run.json").read_text())
    return record, status, MlflowClient(record["tracking_uri"]).get_run(status["mlflow_run_id"])


def _message(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("dlrun: interrupted") or " while the run was" in x]
    return line


def test_a_second_sigterm_while_the_killed_run_is_recorded_keeps_it_killed_everywhere(tmp_path):
    result = _train(tmp_path, on_upload="SIGTERM")
    assert result.returncode == 143, result.stderr
    record, status, run = _states(result)
    assert record["status"] == status["status"] == run.info.status == "KILLED"
    line = _message(result)
    assert line.startswith(f"dlrun: interrupted (SIGTERM), then SIGTERM while the run was being recorded; run "
                           f"{run.info.run_id} marked KILLED in {record['run_dir']}")
    assert line.endswith(f"the upload of its files to MLflow was cut short: dlrun sync {record['run_dir']} "
                         f"uploads the rest; resume it with: dlrun train --resume {record['run_dir']}")
    assert "before the run started" not in result.stderr
    assert "cut short by SIGTERM" in status["upload"] and "cut short by SIGTERM" in run.data.tags["dlrun.upload"]
    client = MlflowClient(record["tracking_uri"])
    before = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "run.json" not in before  # the upload stopped at its first file…

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    synced = subprocess.run([sys.executable, "-m", "dlrun", "sync", record["run_dir"]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert synced.returncode == 0, synced.stderr
    after = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"run.json", "history.csv", "recipe.yaml"} <= after  # …and dlrun sync uploads the rest
    assert client.get_run(run.info.run_id).info.status == "KILLED"


def test_a_sigterm_after_training_finished_leaves_the_run_finished_everywhere(tmp_path):
    result = _train(tmp_path, at_epoch=0, on_upload="SIGTERM")
    assert result.returncode == 143, result.stderr
    record, status, run = _states(result)
    assert record["status"] == status["status"] == run.info.status == "FINISHED"
    assert "test_loss" in run.data.metrics and len(status["metrics"]) > 0
    line = _message(result)
    assert line == (f"dlrun: SIGTERM while the run was being recorded (it had finished training); run "
                    f"{run.info.run_id} is FINISHED in {record['run_dir']}; the upload of its files to MLflow was "
                    f"cut short: dlrun sync {record['run_dir']} uploads the rest")


def test_sigint_then_sigterm_while_training_stops_at_once_and_says_both(tmp_path):
    result = _train(tmp_path, signals="[SIGINT, SIGTERM]")
    assert result.returncode == 130, result.stderr  # the first signal says how the run was stopped
    record, status, run = _states(result)
    assert record["status"] == status["status"] == run.info.status == "KILLED"
    assert _message(result) == (f"dlrun: interrupted (SIGINT, then SIGTERM); run {run.info.run_id} marked KILLED "
                                f"in {record['run_dir']}; resume it with: dlrun train --resume {record['run_dir']}")
    assert status["error"] == run.data.tags["dlrun.error"] == "interrupted (SIGINT, then SIGTERM)"
    assert {a.path for a in MlflowClient(record["tracking_uri"]).list_artifacts(run.info.run_id)} >= {"run.json"}

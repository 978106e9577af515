"""A store whose client cannot even be created because the store is away: ``MlflowClient()``
itself fails with a connection error, the tracker is offline with no client at all
(``Tracker.client`` None), and a whole run still finishes with everything in its run
directory. Also: a Keras model upload is not retried as a whole on top of its own per-step
retries.

(A store that can never work — a ``sqlite:///`` path that is a folder, a file that is not a
database — is a usage error before the run starts: tests/test_store_preflight.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from dlrun.track import _writes
from dlrun.track._outage import TRACKING_FILE
from dlrun.track.mlflow_store import Tracker

pytest.importorskip("mlflow")

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402
from test_track_outage import exercise_offline_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
AWAY_URI = "http://127.0.0.1:9"

# ``python -m dlrun`` in a world where creating an MLflow client meets a refused connection.
_DLRUN_CLIENT_AWAY = """
import sys, mlflow, requests
def away(self, *args, **kwargs):
    raise requests.exceptions.ConnectionError("Connection refused")
mlflow.MlflowClient.__init__ = away
sys.argv[0] = "dlrun"
from dlrun.cli import main
main()
"""


def test_store_whose_client_cannot_be_created_gives_a_clientless_offline_tracker(tmp_path, monkeypatch):
    import mlflow
    import requests

    def away(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(mlflow.MlflowClient, "__init__", away)
    seen: list[dict] = []
    tracker = Tracker.from_output_root(tmp_path / "out", "exp", AWAY_URI, on_outage=seen.append)
    assert tracker.offline and tracker.client is None and tracker.experiment_id is None
    assert len(seen) == 1 and "Connection refused" in seen[0]["reason"]
    parent = tracker.start_run("offline")
    child = tracker.start_run("fold", parent=parent)
    assert tracker.reopen_run("some-run-id").run_id is None
    for run in (parent, child):  # every method is a no-op: none touches the missing client
        assert run.run_id is None and run.offline and run.client is None
        exercise_offline_run(run, tmp_path)
    assert tracker._call("get_run", "x") is None
    assert len(seen) == 1


def test_training_with_a_store_whose_client_cannot_be_created_finishes_offline(tmp_path):
    """The whole CLI path (store opened before the run directory exists → the offline notice
    written into it once it does, runner → log_run_files, model logging): exit 0, one warning,
    no traceback, tracking.json and the run's files in the run directory."""
    (tmp_path / "iris.yaml").write_text(iris_recipe("iris_clientless", epochs=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-c", _DLRUN_CLIENT_AWAY, "train", "iris.yaml", "-o", "out", "--json",
         "--tracking-uri", AWAY_URI],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "AttributeError" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "FINISHED" and summary["run_id"] is None
    run_dir = Path(summary["run_dir"])
    assert result.stderr.count("tracking is offline") == 1
    assert f"dlrun: warning: MLflow tracking is offline ({AWAY_URI}: Connection refused)" in result.stderr
    assert f"dlrun sync {run_dir}" in result.stderr
    record = json.loads((run_dir / TRACKING_FILE).read_text())
    assert record["tracking"] == "offline" and record["uri"] == AWAY_URI
    assert json.loads((run_dir / "run.json").read_text())["status"] == "FINISHED"
    for name in ("model.keras", "history.csv", "recipe.yaml", "run.json"):
        assert (run_dir / name).is_file(), name


def test_model_upload_is_not_retried_as_a_whole(tmp_path, monkeypatch):
    """log_keras_model retries each step on a locked store; a step that stays locked turns the
    tracker offline instead of starting the whole upload (another LoggedModel) again."""
    monkeypatch.setattr(_writes, "time", types.SimpleNamespace(sleep=lambda s: None, monotonic=time.monotonic))
    root = tmp_path / "out"
    seen: list[dict] = []
    tracker = Tracker(f"sqlite:///{root}/mlflow.db", "models", root / "mlartifacts", on_outage=seen.append)
    run = tracker.start_run("locked")
    assert run.run_id is not None
    calls = []

    def locked(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(tracker.client, "create_logged_model", locked)
    assert run.log_keras_model(object()) is None
    assert len(calls) == 8  # the per-step retries only, not 8 × 8
    assert tracker.offline and len(seen) == 1 and "database is locked" in seen[0]["reason"]
    run.end("FINISHED")
    assert run.status == "FINISHED"

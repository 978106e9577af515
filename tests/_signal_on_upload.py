"""A recipe plugin for tests: sends this process a real signal (``DLRUN_TEST_SIGNAL_ON_UPLOAD``,
e.g. ``SIGTERM``) at the first upload of a run's file to MLflow after the run's final state
was written to its ``run.json`` — inside the run's recording, at the same place on every
machine. Without the variable it does nothing."""

import json
import os
import signal
from pathlib import Path

import mlflow

_SIGNAL = os.environ.get("DLRUN_TEST_SIGNAL_ON_UPLOAD")
_upload = mlflow.MlflowClient.log_artifact
_sent = []


def _final_state_written(local_path) -> bool:
    try:
        status = json.loads((Path(local_path).parent / "run.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return False
    return status in ("FINISHED", "FAILED", "KILLED")


def _log_artifact(self, run_id, local_path, artifact_path=None):
    if _SIGNAL and not _sent and _final_state_written(local_path):
        _sent.append(_SIGNAL)
        os.kill(os.getpid(), getattr(signal, _SIGNAL))
    return _upload(self, run_id, local_path, artifact_path)


mlflow.MlflowClient.log_artifact = _log_artifact

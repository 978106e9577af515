"""The model a run logs to MLflow: its serving model (the preprocessing inside), with a signature and
an input example, predicting from raw rows what ``dlrun predict`` gives; ``--register`` versions
in the registry of the run's SQLite store; ``mlflow models serve`` answering over loopback HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _export_runs import DIGITS, cli, dlrun_predicts, export, raw_test_rows  # noqa: E402
from _export_runs import digits_run, root, text_run  # noqa: E402, F401 - the module's fixtures


def logged_models(run) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=run.tracking_uri)
    return [client.get_logged_model(o.model_id) for o in client.get_run(run.run_id).outputs.model_outputs]


def test_the_logged_model_takes_raw_rows_and_predicts_as_dlrun(digits_run):
    import mlflow

    (logged,) = logged_models(digits_run)  # one model per run in the registry's sense, not a bare one beside it
    model = mlflow.pyfunc.load_model(logged.artifact_location)
    (spec,) = model.metadata.signature.inputs.inputs
    assert spec.type == np.dtype("float32") and spec.shape == (-1, 8, 8)  # raw 8×8 images
    assert model.metadata.saved_input_example_info["type"] == "ndarray"
    steps = model.metadata.metadata["dlrun"]["preprocessing"]
    assert [s["step"] for s in steps["inside"]] == ["reshape", "rescale", "standardize"]
    assert steps["caller_applies"] == [] and logged.tags["dlrun.caller_applies"] == "none"

    x = raw_test_rows(digits_run).astype(np.float32)
    diff = float(np.abs(model.predict(x) - dlrun_predicts(digits_run, x)).max())
    print(f"digits pyfunc: max abs difference {diff:.3g} on {len(x)} raw test rows")
    assert diff <= 1e-5


def test_the_logged_text_model_takes_raw_strings(text_run):
    import mlflow

    (logged,) = logged_models(text_run)
    model = mlflow.pyfunc.load_model(logged.artifact_location)
    (spec,) = model.metadata.signature.inputs.inputs
    assert spec.type == np.dtype(object) and spec.shape == (-1,)
    x = raw_test_rows(text_run)
    diff = float(np.abs(model.predict(x.astype(object)) - dlrun_predicts(text_run, x)).max())
    print(f"text pyfunc: max abs difference {diff:.3g} on {len(x)} raw reviews")
    assert diff <= 1e-5


# --------------------------------------------------------------------------- registry


def test_register_needs_a_model_that_stands_for_the_run(root, tmp_path):
    (tmp_path / "digits.yaml").write_text(DIGITS)
    result = cli("kfold", tmp_path / "digits.yaml", "--k", "2", "--no-refit", "--register", "digits",
                 "--output-root", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2 and "--refit" in result.stderr
    assert not (tmp_path / "out" / "runs").exists()  # refused before anything ran


@pytest.mark.slow
def test_register_on_train_and_on_export(root, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    (tmp_path / "digits.yaml").write_text(DIGITS)
    result = cli("train", tmp_path / "digits.yaml", "--register", "digits-model", "--output-root", root, "--json",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["registered"]["version"] == 1 and summary["registered"]["model_uri"] == "models:/digits-model/1"

    class Run:  # what the helpers need of a run
        run_dir = summary["run_dir"]

    client = MlflowClient(tracking_uri=summary["tracking_uri"])
    version = client.get_model_version("digits-model", "1")
    (output,) = client.get_run(summary["run_id"]).outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert version.run_id == summary["run_id"] and version.source == logged.artifact_location
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "digits-model", "version": "1"}]

    exported = export(Run, "onnx", tmp_path / "model.onnx", "--register", "digits-model")
    assert exported["registered"]["version"] == 2
    again = client.get_model_version("digits-model", "2")
    assert again.source == logged.artifact_location and again.tags["dlrun.export"] == f"onnx:{tmp_path / 'model.onnx'}"

    import mlflow  # the registered version loads by its models:/ URI and takes raw rows

    monkeypatch.setenv("MLFLOW_TRACKING_URI", summary["tracking_uri"])  # what models:/ URIs resolve through
    (tmp_path / "loaded").mkdir()
    model = mlflow.pyfunc.load_model("models:/digits-model/1", dst_path=str(tmp_path / "loaded"))

    x = raw_test_rows(Run).astype(np.float32)
    assert float(np.abs(model.predict(x) - dlrun_predicts(Run, x)).max()) <= 1e-5


# --------------------------------------------------------------------------- mlflow models serve


def free_loopback_port() -> int:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    except OSError as exc:
        pytest.skip(f"cannot bind a loopback port: {exc}")


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_dlrun(digits_run, tmp_path):
    (logged,) = logged_models(digits_run)
    port = free_loopback_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # its uvicorn, this venv
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", logged.artifact_location, "--env-manager",
             "local", "-p", str(port), "-h", "127.0.0.1"], cwd=tmp_path, env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                text = log.read_text()
                if "address already in use" in text.lower():
                    pytest.skip(f"port {port} was taken before the server bound it")
                pytest.fail(f"mlflow models serve exited ({server.returncode}):\n{text[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"not serving after 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        x = raw_test_rows(digits_run)[:20].astype(np.float32)
        answer = post(f"http://127.0.0.1:{port}/invocations", {"inputs": x.tolist()})
        diff = float(np.abs(np.asarray(answer["predictions"]) - dlrun_predicts(digits_run, x)).max())
        print(f"mlflow models serve: max abs difference {diff:.3g} on {len(x)} raw rows over HTTP")
        assert diff <= 1e-5
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

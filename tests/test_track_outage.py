"""Tracking outages: the tracker goes offline instead of failing training, the run directory
keeps everything, and ``dlrun sync`` uploads it later — against a real ``mlflow server`` on
loopback that the tests start and stop, and a SQLite store. No network beyond loopback."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlrun.track._outage import HTTP_DEFAULTS, TRACKING_FILE, is_outage_error
from dlrun.track.mlflow_store import Tracker
from dlrun.track.rundir import RunDir
from dlrun.track.sync import SyncError, sync_run

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _mlflow_server import MlflowServer, free_port  # noqa: E402
from _recipes import iris_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DLRUN = [sys.executable, "-m", "dlrun"]

IRIS = iris_recipe("iris_outage", extra="tracking:\n  tags: {purpose: outage}\n")
EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def dlrun_env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def dlrun(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*DLRUN, *args], cwd=cwd, env=dlrun_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def exercise_offline_run(run, folder: Path) -> None:
    """Call every method of an offline run: each one is a no-op that raises nothing."""
    run.log_params({"x": 1})
    run.set_tags({"t": 1})
    run.log_epoch({"loss": 1.0}, step=1)
    run.log_metrics({"m": 1.0})
    run.log_artifact(__file__)
    run.log_artifacts(folder)
    assert run.log_keras_model(object()) is None and run.artifact_uri() is None
    run.end("FINISHED")
    assert run.status == "FINISHED"


def closed_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for entry in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return out


# ---------------------------------------------------------------------- the tracker, fast


def test_outage_errors_are_told_from_others():
    import requests

    try:
        try:
            raise requests.exceptions.ConnectionError("Max retries exceeded: Connection refused")
        except Exception as inner:
            raise MlflowException(f"API request failed with exception {inner}")
    except MlflowException as wrapped:
        assert is_outage_error(wrapped)
    assert is_outage_error(requests.exceptions.ReadTimeout("read timed out"))
    assert is_outage_error(MlflowException("... too many 503 error responses"))
    assert not is_outage_error(MlflowException("disk full"))
    assert not is_outage_error(MlflowException("RESOURCE_DOES_NOT_EXIST: run 'x' not found"))
    assert not is_outage_error(ValueError("bad value"))


def test_unreachable_at_start_gives_an_offline_tracker(tmp_path, monkeypatch):
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # a user's own setting is kept
    seen = []
    started = time.perf_counter()
    tracker = Tracker.from_output_root(tmp_path, "exp", closed_uri(), on_outage=seen.append)
    elapsed = time.perf_counter() - started
    assert tracker.offline and tracker.experiment_id is None
    assert elapsed < 15, elapsed  # MLflow's defaults would retry for minutes
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert len(seen) == 1 and "refused" in seen[0]["reason"].lower() and seen[0]["uri"] == tracker.uri

    parent = tracker.start_run("offline", tags={"a": "b"})
    child = tracker.start_run("fold", parent=parent)
    assert parent.run_id is None and child.run_id is None and parent.offline
    for run in (parent, child):  # every method is a quick no-op, nothing raises
        exercise_offline_run(run, tmp_path)
    assert len(seen) == 1  # said once
    assert time.perf_counter() - started < 20


def test_malformed_uri_is_a_clear_usage_error(tmp_path):
    from dlrun.errors import UsageError

    with pytest.raises(UsageError, match=r"cannot use the MLflow tracking store nosuchscheme://x \(given by "
                                         r"--tracking-uri\): .*unsupported URI"):
        Tracker.from_output_root(tmp_path, "exp", "nosuchscheme://x")


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("outage") / "out"
    uri = f"sqlite:///{root.absolute()}/mlflow.db"
    root.mkdir(parents=True)
    Tracker(uri, "warmup", root / "mlartifacts")  # creates the tables once for the module
    return root, uri


def test_store_lost_mid_run_switches_the_run_offline(sqlite_store, tmp_path, monkeypatch):
    import requests

    root, uri = sqlite_store
    run_dir = RunDir.create(tmp_path, "exp")
    notes: list[str] = []
    from dlrun.track.mlflow_store import offline_notice

    tracker = Tracker(uri, "midrun", root / "mlartifacts", on_outage=offline_notice(run_dir, notes.append))
    run = tracker.start_run("midrun")
    run.log_params({"a": 1})
    run.log_epoch({"loss": 1.0}, step=1)
    assert run.flush() == []

    def gone(*args, **kwargs):
        raise MlflowException("API request failed") from requests.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(run.client, "log_batch", gone)
    monkeypatch.setattr(run.client, "set_terminated", gone)
    for epoch in range(2, 6):  # the background writer meets the outage: no error reaches us
        run.log_epoch({"loss": 1.0 / epoch}, step=epoch)
    assert run.flush() == []
    assert tracker.offline and run.offline
    run.log_metrics({"final": 1.0})
    run.set_tags({"x": "y"})
    assert tracker.start_run("later").run_id is None
    run.end("FINISHED")
    assert run.status == "FINISHED"
    assert len(notes) == 1 and "dlrun sync" in notes[0] and str(run_dir.path) in notes[0]
    record = json.loads((run_dir.path / TRACKING_FILE).read_text())
    assert record["tracking"] == "offline" and record["epoch"] in range(2, 6)
    got = MlflowClient(uri).get_run(run.run_id)
    assert got.info.status == "RUNNING"  # left for dlrun sync to finish
    assert steps(MlflowClient(uri), run.run_id, "loss") == [1]


@pytest.mark.parametrize("flags", [["--quiet"], ["--json", "--quiet"]], ids=["quiet", "json-quiet"])
def test_quiet_run_still_warns_that_tracking_is_offline(tmp_path, flags):
    """--quiet silences progress, not the warning that the run is kept offline; --json's stdout
    stays one JSON object (the warning goes to stderr)."""
    (tmp_path / "iris.yaml").write_text(IRIS)
    uri = closed_uri()
    result = dlrun("train", "iris.yaml", "-o", "out", *flags, "--set", "fit.epochs=1", "--tracking-uri", uri,
                   cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "out" / "runs" / "iris_outage").iterdir()
    if "--json" in flags:
        summary = json.loads(result.stdout)  # exactly one object: extra text would fail here
        assert result.stdout.count("\n") == 1 and summary["status"] == "FINISHED"
        assert summary["run_id"] is None and summary["run_dir"] == str(run_dir)
    else:
        assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()  # the warning, and nothing else
    assert line.startswith(f"dlrun: warning: MLflow tracking is offline ({uri}: ")
    assert "refused" in line.lower() and line.endswith(f"Upload it later with: dlrun sync {run_dir}")
    assert json.loads((run_dir / TRACKING_FILE).read_text())["tracking"] == "offline"


# ---------------------------------------------------------------------- sync, hand-made run dirs


def _make_run(root: Path, experiment: str, *, epochs: int, folds: int = 0, status: str = "FINISHED",
              run_id: str | None = None) -> RunDir:
    """A run directory as the runner writes it, without training anything."""
    rd = RunDir.create(root, experiment)
    protocol = "kfold" if folds else "holdout"
    rd.write_yaml("recipe.yaml", {"name": experiment, "seed": 42, "fit": {"epochs": epochs, "batch_size": 8},
                                  "evaluation": {"protocol": protocol}, "tracking": {"tags": {"team": "t"}},
                                  "compile": {"optimizer": {"Adam": {"learning_rate": 0.001}}}})
    rd.write_text("command.txt", f"dlrun train {experiment}.yaml\n")
    rd.write_status("RUNNING", mlflow_run_id=run_id, tracking_uri=None)
    for epoch in range(1, epochs + 1):
        logs = {"loss": 1.0 / epoch, "val_loss": 2.0 / epoch}
        if epoch == 2:
            logs["lr"] = 0.5  # a key that appears later: earlier cells stay empty
        if epoch == epochs:
            logs["loss"] = math.nan
        rd.append_history(epoch, logs)
    rd.write_json("metrics.json", {"val_loss": 0.25, "test_mae": 3.0})
    rd.write_json("summary.json", {"final_val_loss": 0.25, "test_mae": 3.0, "epochs_run": epochs})
    for k in range(1, folds + 1):
        fold = rd.child(f"folds/fold_{k}")
        fold.write_status("RUNNING", mlflow_run_id=None)
        for epoch in range(1, epochs + 1):
            fold.append_history(epoch, {"val_mae": 3.0 - k / 10 - epoch / 100})
        fold.write_json("metrics.json", {"val_mae": 2.5 + k / 10})
        fold.write_text("model.keras", "not really a model")
        fold.write_status("FINISHED")
    if folds:
        rd.write_json("kfold_curves.json", {"mean": {"val_mae": [2.9] * epochs}, "std": {}, "monitor": "val_mae"})
    rd.write_status(status, error=None if status == "FINISHED" else "KeyboardInterrupt: interrupted")
    return rd


def test_sync_creates_a_run_with_history_folds_and_status_and_is_idempotent(sqlite_store):
    root, uri = sqlite_store
    rd = _make_run(root, "handmade_cv", epochs=4, folds=2)
    result = sync_run(rd.path, tracking_uri=uri)
    assert result.created and len(result.folds) == 2
    c = MlflowClient(uri)
    run = c.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("handmade_cv-")
    assert run.data.params["compile.optimizer.Adam.learning_rate"] == "0.001"
    assert run.data.tags["dlrun.recipe"] == "handmade_cv" and run.data.tags["team"] == "t"
    assert run.data.tags["dlrun.folds"] == "2" and run.data.tags["dlrun.recipe_file"] == "handmade_cv.yaml"
    assert steps(c, result.run_id, "val_loss") == [1, 2, 3, 4]
    assert steps(c, result.run_id, "lr") == [2]  # empty cells are not points
    assert math.isnan({m.step: m.value for m in c.get_metric_history(result.run_id, "loss")}[4])
    assert steps(c, result.run_id, "val_mae") == [1, 2, 3, 4]  # the folds' mean curve, as a K-fold run logs it
    assert run.data.metrics["test_mae"] == 3.0 and run.data.tags["dlrun.epochs_run"] == "4"
    assert "epochs_run" not in run.data.metrics
    assert {"recipe.yaml", "history.csv", "run.json", "summary.json"} <= artifact_paths(c, result.run_id)
    assert not any(p.startswith("folds") for p in artifact_paths(c, result.run_id))
    children = c.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["handmade_cv-fold_1", "handmade_cv-fold_2"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert steps(c, child.info.run_id, "val_mae") == [1, 2, 3, 4]
        assert "final_val_mae" in child.data.metrics  # renamed like the protocol does
        assert "model.keras" in artifact_paths(c, child.info.run_id)
    info = rd.read_status()
    assert info["tracking"] == "synced" and info["mlflow_run_id"] == result.run_id
    assert info["tracking_uri"] == uri and info["status"] == "FINISHED"
    fold_ids = {json.loads((rd.path / "folds" / f / "run.json").read_text())["mlflow_run_id"]
                for f in ("fold_1", "fold_2")}
    assert fold_ids == {r.info.run_id for r in children}

    again = sync_run(rd.path)  # the URI recorded in run.json; nothing new to send
    assert not again.created and again.run_id == result.run_id
    assert again.params == 0 and again.metric_points == 0
    assert all(f["metric_points"] == 0 and not f["created"] for f in again.folds)
    assert steps(c, result.run_id, "val_loss") == [1, 2, 3, 4]
    assert len(c.search_runs([run.info.experiment_id])) == 3


def test_sync_continues_a_partly_tracked_run_without_duplicates(sqlite_store):
    root, uri = sqlite_store
    tracker = Tracker(uri, "partial", root / "mlartifacts")
    started = tracker.start_run("partial-run")
    for epoch in (1, 2):
        started.log_epoch({"loss": 1.0 / epoch, "val_loss": 2.0 / epoch}, step=epoch)
    started.flush()  # then the server "went away": the run stays RUNNING
    rd = _make_run(root, "partial", epochs=6, status="KILLED", run_id=started.run_id)
    result = sync_run(rd.path, tracking_uri=uri)
    assert not result.created and result.run_id == started.run_id
    c = MlflowClient(uri)
    assert steps(c, started.run_id, "val_loss") == [1, 2, 3, 4, 5, 6]
    got = c.get_run(started.run_id)
    assert got.info.status == "KILLED" and got.data.tags["dlrun.error"].startswith("KeyboardInterrupt")
    assert got.info.end_time == int(__import__("datetime").datetime.fromisoformat(
        rd.read_status()["end_time"]).timestamp() * 1000)


def test_sync_refuses_what_is_not_a_run_directory(tmp_path):
    result = dlrun("sync", str(tmp_path / "nope"), cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "not a run directory" in result.stderr and "Traceback" not in result.stderr
    rd = _make_run(tmp_path / "out", "cv", epochs=2, folds=1)
    result = dlrun("sync", str(rd.path / "folds" / "fold_1"), "--json", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "one fold of the run" in result.stderr
    assert json.loads(result.stdout)["runs"][0]["exit_code"] == 2


def test_sync_with_the_store_still_down_fails_cleanly(tmp_path):
    rd = _make_run(tmp_path / "out", "down", epochs=2)
    before = (rd.path / "run.json").read_text()
    with pytest.raises(SyncError, match="cannot reach the MLflow store .* again when the store is up"):
        sync_run(rd.path, tracking_uri=closed_uri())
    assert (rd.path / "run.json").read_text() == before  # nothing half-written
    result = dlrun("sync", str(rd.path), "--tracking-uri", closed_uri(), cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "cannot reach the MLflow store" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------- a real server, real training


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield srv
    srv.stop()


def _check_synced(c: MlflowClient, run_id: str, epochs: int, run_dir: Path) -> None:
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in EPOCH_KEYS:
        assert steps(c, run_id, key) == list(range(1, epochs + 1)), key  # whole history, no duplicates
    assert run.data.params["fit.epochs"] == str(epochs)
    assert run.data.tags["purpose"] == "outage" and run.data.tags["dlrun.protocol"] == "holdout"
    assert "test_accuracy" in run.data.metrics
    assert {"model.keras", "history.csv", "recipe.yaml", "run.json", TRACKING_FILE} <= artifact_paths(c, run_id)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["tracking"] == "synced" and info["mlflow_run_id"] == run_id


def test_server_down_from_the_start_then_sync(server, tmp_path):
    (tmp_path / "iris.yaml").write_text(IRIS)
    result = dlrun("train", "iris.yaml", "-o", "out", "--json", "--tracking-uri", closed_uri(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "FINISHED" and summary["run_id"] is None
    assert "tracking is offline" in result.stderr and f"dlrun sync {summary['run_dir']}" in result.stderr
    run_dir = Path(summary["run_dir"])
    assert json.loads((run_dir / TRACKING_FILE).read_text())["tracking"] == "offline"
    assert len(RunDir(run_dir).read_history()["loss"]) == 3

    synced = dlrun("sync", str(run_dir), "--tracking-uri", server.uri, "--json", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    record = json.loads(synced.stdout)["runs"][0]
    assert record["created"] and record["status"] == "SYNCED"
    _check_synced(MlflowClient(server.uri), record["run_id"], 3, run_dir)


def test_server_stopped_mid_run_then_sync(server, tmp_path):
    """The server dies after the first epochs reached it; training finishes (exit 0, warning);
    the server comes back on the same store; ``dlrun sync`` completes the run."""
    epochs = 40
    (tmp_path / "iris.yaml").write_text(IRIS)
    proc = subprocess.Popen(
        [*DLRUN, "train", "iris.yaml", "-o", "out", "--json", "--set", f"fit.epochs={epochs}",
         # A save (and with it the epoch's MLflow write) every epoch: the outage falls mid-run.
         "--set", "fit.batch_size=1", "--set", "fit.checkpoint_every=0", "--tracking-uri", server.uri],
        cwd=tmp_path, env=dlrun_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )
    c = MlflowClient(server.uri)
    run_id, deadline = None, time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            status_files = list((tmp_path / "out").glob("runs/*/*/run.json"))
            run_id = run_id or (json.loads(status_files[0].read_text()).get("mlflow_run_id") if status_files else None)
            if run_id and len(c.get_metric_history(run_id, "loss")) >= 2:
                break
            time.sleep(0.1)
        assert run_id and proc.poll() is None, "the run did not reach the server while training"
        server.stop()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["status"] == "FINISHED" and summary["run_id"] == run_id
    assert err.count("tracking is offline") == 1 and "dlrun sync" in err
    run_dir = Path(summary["run_dir"])
    offline = json.loads((run_dir / TRACKING_FILE).read_text())
    assert offline["tracking"] == "offline" and 2 <= offline["epoch"] < epochs
    assert len(RunDir(run_dir).read_history()["loss"]) == epochs

    server.start()  # same port, same backend store
    c = MlflowClient(server.uri)
    assert c.get_run(run_id).info.status == "RUNNING"
    assert len(c.get_metric_history(run_id, "loss")) < epochs
    synced = dlrun("sync", str(run_dir), cwd=tmp_path)  # the URI recorded in run.json
    assert synced.returncode == 0, synced.stderr
    assert f"run {run_id} (continued, FINISHED)" in synced.stdout
    _check_synced(c, run_id, epochs, run_dir)
    again = dlrun("sync", str(run_dir), "--json", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["runs"][0]["metric_points"] == 0
    _check_synced(c, run_id, epochs, run_dir)

"""Tracker/TrackedRun against a real SQLite MLflow store in a temporary folder, read back
with MlflowClient. No network."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dlrun.errors import UsageError
from dlrun.track import mlflow_store
from dlrun.track._writes import is_locked_error, retry_locked
from dlrun.track.mlflow_store import Tracker, flatten_params, resolve_tracking_uri

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes ~1.5 s)."""
    root = tmp_path_factory.mktemp("track") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = resolve_tracking_uri(None, root)
    tracker = Tracker(uri, "exp", root / "mlartifacts")
    return root, uri, tracker


def client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


# ---------------------------------------------------------------------- URI, params


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    default = resolve_tracking_uri(None, Path("artifacts"))
    assert default == f"sqlite:///{tmp_path / 'artifacts' / 'mlflow.db'}"
    assert (tmp_path / "artifacts").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://env:5000"
    assert resolve_tracking_uri("http://cli:5000", tmp_path) == "http://cli:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert resolve_tracking_uri(None, tmp_path).startswith("sqlite:////")


def test_remote_uris_get_no_artifact_location():
    assert mlflow_store.is_remote_uri("http://host:5000")
    assert mlflow_store.is_remote_uri("https://host")
    assert mlflow_store.is_remote_uri("databricks")
    assert not mlflow_store.is_remote_uri("sqlite:////tmp/x.db")
    assert not mlflow_store.is_remote_uri("postgresql://u@h/db")
    assert not mlflow_store.is_remote_uri("/tmp/store")


def test_flatten_params():
    recipe = {
        "model": {"layers": [{"Dense": {"units": 16, "activation": "relu"}}, "Flatten"]},
        "optimizer": {"RMSprop": {"learning_rate": 1e-3}},
        "callbacks": [],
        "extra": {},
        "long": "x" * 7000,
        "seed": None,
    }
    flat = flatten_params(recipe)
    assert flat["model.layers.0.Dense.units"] == "16"
    assert flat["model.layers.0.Dense.activation"] == "relu"
    assert flat["model.layers.1"] == "Flatten"
    assert flat["optimizer.RMSprop.learning_rate"] == "0.001"
    assert flat["callbacks"] == "[]" and flat["extra"] == "{}"
    assert flat["seed"] == "None"
    assert len(flat["long"]) == mlflow_store.MAX_PARAM_VAL_LENGTH
    assert flatten_params({"a": 1}, prefix="p") == {"p.a": "1"}
    assert all(len(k) <= 250 for k in flatten_params({"k" * 300: 1}))


def test_limits_match_installed_mlflow():
    from mlflow.utils import validation as v

    assert mlflow_store.MAX_PARAM_VAL_LENGTH == v.MAX_PARAM_VAL_LENGTH
    assert mlflow_store.MAX_TAG_VAL_LENGTH == v.MAX_TAG_VAL_LENGTH
    assert mlflow_store.MAX_ENTITY_KEY_LENGTH == v.MAX_ENTITY_KEY_LENGTH
    assert mlflow_store.MAX_PARAMS_TAGS_PER_BATCH == v.MAX_PARAMS_TAGS_PER_BATCH
    assert mlflow_store.MAX_METRICS_PER_BATCH == v.MAX_METRICS_PER_BATCH


# ---------------------------------------------------------------------- experiment


def test_experiment_has_absolute_artifact_location(store):
    root, uri, tracker = store
    exp = client(uri).get_experiment(tracker.experiment_id)
    assert exp.name == "exp"
    assert exp.artifact_location == (root / "mlartifacts" / "exp").as_uri()
    again = Tracker(uri, "exp", root / "elsewhere")  # reuses the experiment as it is
    assert again.experiment_id == tracker.experiment_id
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        wired = Tracker.from_output_root(root, "exp")
    assert (wired.uri, wired.experiment_id) == (uri, tracker.experiment_id)


def test_deleted_experiment_is_a_usage_error(store):
    root, uri, _ = store
    exp_id = Tracker(uri, "to-delete", root / "mlartifacts").experiment_id
    client(uri).delete_experiment(exp_id)
    with pytest.raises(UsageError, match="to-delete.*deleted"):
        Tracker(uri, "to-delete", root / "mlartifacts")


# ---------------------------------------------------------------------- runs


def test_params_and_epoch_metrics_with_steps(store):
    _, uri, tracker = store
    run = tracker.start_run("holdout", tags={"dlrun.recipe": "boston.yaml"})
    params = {"model": {"units": 64, "layers": [1, 2]}, **{f"p{i}": i for i in range(250)}}
    run.log_params(params)  # > 100: needs several batches
    for epoch in range(1, 6):
        run.log_epoch({"loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "lr": "n/a"}, step=epoch)
    run.log_epoch({"loss": math.nan, "val_loss": math.inf}, step=6)
    run.log_metrics({"test_mae": 2.5})
    run.end("FINISHED")

    c = client(uri)
    got = c.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.experiment_id == run.experiment_id == tracker.experiment_id
    assert got.info.run_name == "holdout"
    assert got.data.tags["dlrun.recipe"] == "boston.yaml"
    assert "mlflow.user" in got.data.tags  # context tags like mlflow.start_run adds
    assert len(got.data.params) == 3 + 250
    assert got.data.params["model.layers.1"] == "2"
    history = sorted(c.get_metric_history(run.run_id, "val_loss"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    assert [m.value for m in history[:5]] == [2.0, 1.0, 2.0 / 3, 0.5, 0.4]
    assert history[5].value > 1e300  # +inf is stored as the largest float
    loss = {m.step: m.value for m in c.get_metric_history(run.run_id, "loss")}
    assert math.isnan(loss[6])  # NaN kept: a diverged loss is worth seeing
    assert "lr" not in got.data.metrics  # not a number: skipped
    assert got.data.metrics["test_mae"] == 2.5


def test_log_epoch_does_not_block(store, monkeypatch):
    _, uri, tracker = store
    run = tracker.start_run("slow-store")
    real = run.client.log_batch

    def slow_log_batch(*args, **kwargs):
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(run.client, "log_batch", slow_log_batch)
    start = time.perf_counter()
    for epoch in range(1, 11):
        run.log_epoch({"loss": float(epoch)}, step=epoch)
    queued = time.perf_counter() - start
    assert queued < 0.1  # ten writes of 50 ms each did not happen on this thread
    monkeypatch.setattr(run.client, "log_batch", real)  # end() waits for the queue
    run.end("FINISHED")
    assert len(client(uri).get_metric_history(run.run_id, "loss")) == 10


def test_failed_background_write_is_reported_not_raised(store, monkeypatch):
    _, uri, tracker = store
    run = tracker.start_run("broken")

    def broken(*args, **kwargs):
        if kwargs.get("metrics"):
            raise MlflowException("disk full")
        return real(*args, **kwargs)

    real = run.client.log_batch
    monkeypatch.setattr(run.client, "log_batch", broken)
    run.log_epoch({"loss": 1.0}, step=1)
    assert len(run.flush()) == 1
    run.log_epoch({"loss": 1.0}, step=2)
    run.end("FINISHED")
    tags = client(uri).get_run(run.run_id).data.tags
    assert "disk full" in tags[mlflow_store.TAG_WRITE_ERRORS]


def test_nested_fold_runs(store):
    _, uri, tracker = store
    parent = tracker.start_run("kfold", tags={"dlrun.protocol": "kfold"})
    folds = [tracker.start_run(f"fold_{i}", tags={"dlrun.fold": str(i)}, parent=parent) for i in (1, 2, 3)]
    for i, fold in enumerate(folds, 1):
        fold.log_epoch({"val_mae": 3.0 - i / 10}, step=1)
        fold.end("FINISHED")
    parent.log_metrics({"val_mae_mean": 2.8})
    parent.end("FINISHED")

    c = client(uri)
    children = c.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == ["fold_1", "fold_2", "fold_3"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.metrics["val_mae"] for r in children) == [2.7, 2.8, 2.9]
    assert mlflow_store.TAG_PARENT not in c.get_run(parent.run_id).data.tags


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_terminal_statuses_and_error_tag(store, status):
    _, uri, tracker = store
    run = tracker.start_run(f"ends-{status}")
    error = None if status == "FINISHED" else "ValueError: " + "x" * 9000
    run.end(status, error=error)
    run.end("FINISHED")  # a second end changes nothing
    got = client(uri).get_run(run.run_id)
    assert got.info.status == status
    assert got.info.end_time is not None
    if error is None:
        assert mlflow_store.TAG_ERROR not in got.data.tags
    else:
        tag = got.data.tags[mlflow_store.TAG_ERROR]
        assert tag.startswith("ValueError: xxx") and len(tag) == mlflow_store.MAX_TAG_VAL_LENGTH
    with pytest.raises(ValueError):
        run.end("DONE")


def test_context_manager_statuses(store):
    _, uri, tracker = store
    with pytest.raises(RuntimeError):
        with tracker.start_run("ctx-fail") as failed:
            raise RuntimeError("out of memory")
    with pytest.raises(KeyboardInterrupt):
        with tracker.start_run("ctx-kill") as killed:
            raise KeyboardInterrupt()
    with tracker.start_run("ctx-ok") as ok:
        pass
    c = client(uri)
    assert c.get_run(failed.run_id).info.status == "FAILED"
    assert c.get_run(failed.run_id).data.tags[mlflow_store.TAG_ERROR] == "RuntimeError: out of memory"
    assert c.get_run(killed.run_id).info.status == "KILLED"
    assert c.get_run(ok.run_id).info.status == "FINISHED"


def test_artifacts_land_under_output_root_not_cwd(store, tmp_path, monkeypatch):
    root, uri, tracker = store
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    src = tmp_path / "src"
    (src / "plots").mkdir(parents=True)
    (src / "history.csv").write_text("epoch,loss\n1,0.5\n")
    (src / "plots" / "loss.png").write_bytes(b"\x89PNG fake")
    run = tracker.start_run("artifacts")
    run.log_artifact(src / "history.csv")
    run.log_artifact(src / "history.csv", artifact_path="copies")
    run.log_artifacts(src / "plots", artifact_path="plots")
    run.end("FINISHED")

    c = client(uri)
    assert sorted(f.path for f in c.list_artifacts(run.run_id)) == ["copies", "history.csv", "plots"]
    assert [f.path for f in c.list_artifacts(run.run_id, "plots")] == ["plots/loss.png"]
    local = Path(c.download_artifacts(run.run_id, "history.csv", str(tmp_path / "dl")))
    assert local.read_text() == "epoch,loss\n1,0.5\n"
    assert run.artifact_uri().startswith((root / "mlartifacts" / "exp").as_uri())
    assert list(cwd.iterdir()) == []  # no ./mlruns or anything else in the cwd
    assert list((root / "mlartifacts" / "exp").rglob("loss.png"))


# ---------------------------------------------------------------------- locked store


def test_retry_locked_backs_off_then_succeeds():
    calls = []

    def flaky():
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert retry_locked(flaky, base_delay=0.001) == "ok"
    assert len(calls) == 3

    def other():
        calls.append(1)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST")

    calls.clear()
    with pytest.raises(MlflowException):
        retry_locked(other, base_delay=0.001)
    assert len(calls) == 1

    def always_locked():
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError):
        retry_locked(always_locked, attempts=3, base_delay=0.001)
    wrapped = MlflowException("failed")
    wrapped.__cause__ = RuntimeError("sqlite3.OperationalError: database is locked")
    assert is_locked_error(wrapped)


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from dlrun.track.mlflow_store import Tracker, TrackedRun
    uri, root, parent_id, fold = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    tracker = Tracker(uri, "exp", root / "mlartifacts")
    parent = TrackedRun(tracker, parent_id)  # the parent run made by the launching process
    with tracker.start_run(f"proc_fold_{fold}", tags={}, parent=parent) as run:
        run.log_params({"fold": fold})
        for epoch in range(1, 31):
            run.log_epoch({"loss": 1.0 / epoch, "val_loss": 2.0 / epoch}, step=epoch)
    """
)


def test_concurrent_fold_processes_on_one_sqlite_store(store, tmp_path):
    """Several processes writing to one SQLite file at once: every epoch arrives."""
    root, uri, tracker = store
    parent = tracker.start_run("parallel-kfold")
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), uri, str(root), parent.run_id, str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for k in (1, 2)
    ]
    # the parent process writes too, like a fold run in-process
    with tracker.start_run("proc_fold_3", parent=parent) as own:
        while any(p.poll() is None for p in procs):
            own.log_metrics({"heartbeat": 1.0})
            time.sleep(0.01)
        for epoch in range(1, 31):
            own.log_epoch({"val_loss": 2.0 / epoch}, step=epoch)
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    parent.end("FINISHED")
    c = client(uri)
    children = c.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'"
    )
    assert len(children) == 3
    for child in children:
        assert child.info.status == "FINISHED"
        assert len(c.get_metric_history(child.info.run_id, "val_loss")) == 30


def test_threads_share_one_tracker(store):
    _, uri, tracker = store
    runs = [tracker.start_run(f"thread_{i}") for i in range(4)]

    def work(run):
        for epoch in range(1, 21):
            run.log_epoch({"loss": float(epoch)}, step=epoch)
        run.end("FINISHED")

    threads = [threading.Thread(target=work, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = client(uri)
    assert all(len(c.get_metric_history(r.run_id, "loss")) == 20 for r in runs)


# ---------------------------------------------------------------------- keras model


def test_log_keras_model_loads_back(store, tmp_path, monkeypatch):
    keras = pytest.importorskip("keras")
    import numpy as np

    root, uri, tracker = store
    monkeypatch.chdir(tmp_path)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2)])
    model.compile(optimizer="rmsprop", loss="mse")
    run = tracker.start_run("with-model")
    started = time.perf_counter()
    model_uri = run.log_keras_model(model, name="model")
    elapsed = time.perf_counter() - started
    run.end("FINISHED")
    print(f"log_keras_model took {elapsed:.3f}s")
    assert elapsed < 5  # explicit pip requirements: no requirement inference subprocess
    assert model_uri.startswith("models:/")

    c = client(uri)
    outputs = c.get_run(run.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [model_uri.split("/", 1)[1]]
    logged = c.get_logged_model(outputs[0].model_id)
    assert logged.name == "model" and logged.source_run_id == run.run_id
    assert str(logged.status) in ("READY", "LoggedModelStatus.READY")
    assert logged.artifact_location.startswith((root / "mlartifacts" / "exp").as_uri())

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # models:/ and runs:/ URIs resolve via it
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    for uri_form in (model_uri, f"runs:/{run.run_id}/model"):
        dst = tmp_path / uri_form.split(":")[0]
        dst.mkdir()
        loaded = mlflow.keras.load_model(uri_form, dst_path=str(dst))
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert not (tmp_path / "mlruns").exists()
    requirements = (tmp_path / "models" / "requirements.txt").read_text()
    assert f"keras=={keras.__version__}" in requirements


def test_model_logging_skips_mlflows_check_of_its_own_pins_only(store, tmp_path, monkeypatch):
    """MLflow checks a model's pip requirements against the installed packages (0.9 s per process,
    mapping every distribution's files): dlrun's own pins are the installed versions, so that
    check is skipped for them, and put back after; requirements a caller gives are still checked."""
    keras = pytest.importorskip("keras")
    from mlflow.utils import environment

    checked = []
    spy = lambda requirements: checked.append(list(requirements))  # noqa: E731
    monkeypatch.setattr(environment, "warn_dependency_requirement_mismatches", spy)
    monkeypatch.chdir(tmp_path)
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2)])
    tracker = store[2]
    run = tracker.start_run("pins")
    assert run.log_keras_model(model, name="pinned").startswith("models:/")
    assert checked == [] and environment.warn_dependency_requirement_mismatches is spy
    run.log_keras_model(model, name="given", pip_requirements=[f"keras=={keras.__version__}"])
    run.end("FINISHED")
    assert len(checked) == 1 and f"keras=={keras.__version__}" in checked[0]

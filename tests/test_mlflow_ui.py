"""How dlrun's runs look in MLflow: the store read back with MLflow's client, and MLflow's own web
UI (``mlflow server`` on loopback, pages rendered by headless Chromium) on a store that dlrun wrote
— a hold-out run and a K-fold run with nested folds and a refit, trained by the CLI.

Screenshots of every page go to the test's temporary folder, and to ``$DLRUN_UI_SCREENSHOTS``
when it is set (kept by CI as the check's artifacts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _headless_browser import chromium, render  # noqa: E402
from _mlflow_server import MlflowServer  # noqa: E402
from _recipes import iris_recipe  # noqa: E402

from dlrun.track.mlflow_ui import (  # noqa: E402
    EXPERIMENT_KIND_TAG, MODEL_TRAINING, VIEW_ID, VIEW_TAG, main_metrics_view)

NAME = "iris_ui"
ML_VIEW = "workflowType=machine_learning"


# --------------------------------------------------------------------------- the store, no training


def test_experiments_dlrun_opens_are_model_training_and_a_chosen_kind_stays(tmp_path):
    from mlflow import MlflowClient

    from dlrun.track.mlflow_store import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    older = client.create_experiment("made_before", artifact_location=(tmp_path / "a").as_uri())
    chosen = client.create_experiment("chosen", artifact_location=(tmp_path / "b").as_uri(),
                                      tags={EXPERIMENT_KIND_TAG: "genai_development"})
    kinds = {}
    for name in ("new_one", "made_before", "chosen"):
        tracker = Tracker(uri, name, tmp_path / "mlartifacts")
        kinds[name] = client.get_experiment(tracker.experiment_id).tags.get(EXPERIMENT_KIND_TAG)
    assert kinds == {"new_one": MODEL_TRAINING, "made_before": MODEL_TRAINING, "chosen": "genai_development"}
    assert {older, chosen} <= {client.get_experiment_by_name(n).experiment_id for n in kinds}


def _columns(value: str) -> list[str]:
    return json.loads(json.loads(value)["state"])["selectedColumns"]


def test_the_main_metrics_view_gains_new_metric_columns_and_keeps_the_users():
    first = main_metrics_view(None, ["test_accuracy", "final_val_loss", "loss", "best_val_loss"], now_ms=1)
    assert [c for c in _columns(first) if c.startswith("metrics.")] == [
        "metrics.`test_accuracy`", "metrics.`final_val_loss`"]  # what runs are sorted by first
    assert json.loads(first)["name"] == "dlrun: main metrics"
    assert main_metrics_view(first, ["test_accuracy"], now_ms=2) is None  # nothing new: no write
    envelope = json.loads(first)
    envelope["state"] = json.dumps({"selectedColumns": [*_columns(first), "params.`fit.epochs`"]})
    second = main_metrics_view(json.dumps(envelope), ["cv_val_loss_mean", "cv_val_loss_std", "cv_loss_mean"], 3)
    assert _columns(second)[-2:] == ["params.`fit.epochs`", "metrics.`cv_val_loss_mean`"]
    assert (json.loads(second)["createdAt"], json.loads(second)["updatedAt"]) == (1, 3)
    many = main_metrics_view(None, [f"test_m{i:02d}" for i in range(40)], now_ms=1)
    assert sum(c.startswith("metrics.") for c in _columns(many)) == 12  # a table's width, not 40 columns


# --------------------------------------------------------------------------- runs trained by the CLI


def _dlrun(*args: str, cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "dlrun", *args, "--json", "--quiet"], cwd=cwd,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A hold-out run and a K-fold run (2 folds, refit) of one recipe, in dlrun's embedded store."""
    folder = tmp_path_factory.mktemp("ui_store")
    (folder / "iris.yaml").write_text(iris_recipe(NAME, epochs=2))
    holdout = _dlrun("train", "iris.yaml", "-o", "artifacts", cwd=folder)
    kfold = _dlrun("kfold", "iris.yaml", "--k", "2", "--refit", "-o", "artifacts", cwd=folder)
    return folder, holdout, kfold


@pytest.mark.slow
def test_runs_in_mlflow_keep_bookkeeping_in_tags_and_one_name_per_kfold_aggregate(store):
    from mlflow import MlflowClient

    _, holdout, kfold = store
    client = MlflowClient(holdout["tracking_uri"])
    run = client.get_run(holdout["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert {"test_accuracy", "final_val_loss", "best_val_loss"} <= set(run.data.metrics)
    assert not {"best_epoch", "epochs_run"} & set(run.data.metrics)  # no one-bar charts
    assert run.data.tags["dlrun.epochs_run"] == "2" and run.data.tags["dlrun.best_epoch"] in {"1", "2"}
    assert holdout["metrics"]["epochs_run"] == 2  # the run's own summary keeps them

    parent = client.get_run(kfold["run_id"])
    assert not [k for k in parent.data.metrics if k.startswith("cv_mean_")]
    assert {"cv_val_loss_mean", "cv_val_loss_std", "test_accuracy"} <= set(parent.data.metrics)
    assert not {"best_epoch", "refit_epochs"} & set(parent.data.metrics)
    assert parent.data.tags["dlrun.refit_epochs"] == parent.data.tags["dlrun.best_epoch"]
    folds = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{kfold['run_id']}'")
    assert len(folds) == 2
    curves = [[m.value for m in sorted(client.get_metric_history(r.info.run_id, "val_loss"), key=lambda m: m.step)]
              for r in folds]
    mean = [m.value for m in sorted(client.get_metric_history(kfold["run_id"], "val_loss"), key=lambda m: m.step)]
    np.testing.assert_allclose(mean, np.mean(curves, axis=0), rtol=1e-6)  # the parent's curve: the folds' mean

    columns = _columns(experiment.tags[VIEW_TAG])
    for key in ("test_accuracy", "final_val_loss", "cv_val_loss_mean", "cv_val_accuracy_mean"):
        assert f"metrics.`{key}`" in columns


def _keep(shots: Path) -> None:
    target = os.environ.get("DLRUN_UI_SCREENSHOTS")
    if target:
        shutil.copytree(shots, target, dirs_exist_ok=True)


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


@pytest.mark.slow
def test_mlflow_ui_shows_runs_params_metrics_and_folds(store, tmp_path_factory):
    if chromium() is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    from mlflow import MlflowClient

    folder, holdout, kfold = store
    client = MlflowClient(holdout["tracking_uri"])
    run, parent = client.get_run(holdout["run_id"]), client.get_run(kfold["run_id"])
    experiment = run.info.experiment_id
    shots = tmp_path_factory.mktemp("ui_screenshots")
    server = MlflowServer(folder / "server", backend_store_uri=holdout["tracking_uri"]).start()
    try:
        def page(route: str, name: str, expect: list[str]) -> str:
            text = render(f"{server.uri}/#/experiments/{experiment}{route}", shots / f"{name}.png", expect)
            missing = [s for s in expect if s not in text]
            assert not missing, f"{name}: {missing} not on the page (see {shots / name}.png): {text[:1500]}"
            return text

        # The experiment opens on its runs, not on GenAI's traces overview.
        text = page(f"?{ML_VIEW}", "experiment", ["Runs", run.info.run_name, parent.info.run_name])
        assert "Token Usage" not in text and "Tool calls" not in text

        # dlrun's saved view: the main metrics as columns, with their values.
        text = page(f"/runs?viewStateShareKey={VIEW_ID}&{ML_VIEW}", "runs_main_metrics",
                    ["dlrun: main metrics", "test_accuracy", "final_val_loss", "cv_val_loss_mean",
                     repr(run.data.metrics["test_accuracy"]), repr(parent.data.metrics["cv_val_loss_mean"])])

        # A hold-out run: name, params, metrics; bookkeeping among its tags, not its metrics.
        text = page(f"/runs/{run.info.run_id}?{ML_VIEW}", "holdout_run",
                    [run.info.run_name, "fit.epochs", "compile.loss", "categorical_crossentropy", "test_accuracy",
                     repr(run.data.metrics["test_accuracy"]), "final_val_loss", "dlrun.epochs_run"])
        metrics = _between(text, "Metrics (", "Parameters (")
        assert "epochs_run" not in metrics and "best_epoch" not in metrics

        # Its charts: the curves and the test metrics, no one-bar chart of a bookkeeping number.
        text = page(f"/runs/{run.info.run_id}/model-metrics?{ML_VIEW}", "holdout_charts", ["val_loss", "test_accuracy"])
        assert "epochs_run" not in text and "best_epoch" not in text

        # The K-fold run: its aggregates under one name each, and its folds as child runs.
        text = page(f"/runs/{parent.info.run_id}?{ML_VIEW}", "kfold_run",
                    [parent.info.run_name, "Child runs", f"{NAME}-fold_1", f"{NAME}-fold_2", "cv_val_loss_mean",
                     "evaluation.k", "dlrun.refit_epochs"])
        assert "cv_mean_" not in text
    finally:
        server.stop()
        _keep(shots)

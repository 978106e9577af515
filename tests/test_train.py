"""Hold-out and K-fold training on small real data, with the MLflow store read back."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dlrun.errors import ModelBuildError
from dlrun.recipe.loading import load_recipe
from dlrun.training.runner import run_recipe

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402

IRIS = iris_recipe("iris_holdout", extra="tracking:\n  tags: {purpose: test}\n")

BOSTON_KFOLD = """\
name: boston_cv
data:
  source: embedded
  name: boston_housing
preprocessing:
  - {transform: standardize}
model:
  layers:
    - Dense: {units: 16, activation: relu}
    - Dense: {units: 1}
compile:
  optimizer: rmsprop
  loss: mse
  metrics: [mae]
fit:
  epochs: 2
  batch_size: 64
evaluation:
  protocol: kfold
  k: 3
  shuffle: false
  monitor: val_mae
"""


def _run(tmp_path: Path, text: str, overrides=()):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(text))
    return run_recipe(load_recipe(recipe, overrides), output_root=tmp_path / "out", command=["test"])


def _client(summary):
    from mlflow import MlflowClient

    return MlflowClient(summary.tracking_uri)


def _artifact_names(client, run_id: str, path: str | None = None) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, path)}


def test_holdout_run_is_tracked_and_self_describing(tmp_path):
    summary = _run(tmp_path, IRIS)
    assert summary.status == "FINISHED"
    assert summary.tracking_uri == f"sqlite:///{(tmp_path / 'out' / 'mlflow.db').resolve()}"
    assert 0.0 <= summary.metrics["test_accuracy"] <= 1.0
    assert summary.metrics["epochs_run"] == 3

    client = _client(summary)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["fit.epochs"] == "3"
    assert run.data.params["compile.optimizer.Adam.learning_rate"] == "0.01"
    assert run.data.tags["purpose"] == "test"
    assert client.get_experiment(run.info.experiment_id).name == "iris_holdout"
    history = client.get_metric_history(summary.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(client.get_metric_history(summary.run_id, "accuracy")) == 3
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary.metrics["test_accuracy"])
    names = _artifact_names(client, summary.run_id)
    assert {"recipe.yaml", "history.csv", "learning_curves.png", "environment.json",
            "splits.json", "preprocessing.json", "run.json", "command.txt"} <= names
    assert "model.keras" not in names  # in MLflow the model is the run's logged model (stored once)

    run_dir = Path(summary.run_dir)
    assert run_dir.is_relative_to((tmp_path / "out").resolve())
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "FINISHED" and status["mlflow_run_id"] == summary.run_id
    assert (run_dir / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fit:" in (run_dir / "recipe.yaml").read_text()
    splits = json.loads((run_dir / "splits.json").read_text())
    train, val, test = (set(splits["holdout"]["train"]), set(splits["holdout"]["validation"]), splits["test"])
    assert not train & val and len(train) + len(val) == 120 and len(test) == 30


def test_saved_model_reloads_and_matches_reported_test_metric(tmp_path):
    import keras

    summary = _run(tmp_path, IRIS)
    model = keras.models.load_model(Path(summary.run_dir) / "model.keras")
    assert model.output_shape == (None, 3)


def test_standardize_is_fitted_on_the_training_part_only(tmp_path):
    summary = _run(tmp_path, IRIS)
    run_dir = Path(summary.run_dir)
    (stats,) = [s for s in json.loads((run_dir / "preprocessing.json").read_text()) if s["transform"] == "standardize"]
    from sklearn.datasets import load_iris

    x = load_iris().data
    splits = json.loads((run_dir / "splits.json").read_text())
    remaining = np.delete(np.arange(len(x)), splits["test"])  # rows left after the test part
    train_rows = x[remaining][splits["holdout"]["train"]]
    np.testing.assert_allclose(stats["mean"], train_rows.mean(axis=0), rtol=1e-5)
    all_rows = x[remaining]
    assert not np.allclose(stats["mean"], all_rows.mean(axis=0), rtol=1e-6)


def test_kfold_nested_runs_aggregates_and_no_leakage(tmp_path):
    summary = _run(tmp_path, BOSTON_KFOLD)
    assert summary.status == "FINISHED"
    for key in ("cv_val_mae_mean", "cv_val_mae_std", "cv_val_loss_mean", "best_epoch"):
        assert key in summary.metrics, summary.metrics

    client = _client(summary)
    parent = client.get_run(summary.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary.run_id}'"
    )
    assert len(children) == 3
    assert {c.info.status for c in children} == {"FINISHED"}
    fold_maes = [c.data.metrics["final_val_mae"] for c in children]
    assert summary.metrics["cv_val_mae_mean"] == pytest.approx(np.mean(fold_maes), rel=1e-6)
    assert summary.metrics["cv_val_mae_std"] == pytest.approx(np.std(fold_maes), rel=1e-6)
    curve = client.get_metric_history(summary.run_id, "val_mae")  # the parent's: the folds' mean
    assert [m.step for m in curve] == [1, 2]
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_mae")] == [1, 2]
        assert "history.csv" in _artifact_names(client, child.info.run_id)
        assert client.get_run(child.info.run_id).outputs.model_outputs  # each fold's model: logged
    assert "kfold_curves.png" in _artifact_names(client, summary.run_id)
    assert "folds" not in _artifact_names(client, summary.run_id)  # fold files live on the fold runs

    run_dir = Path(summary.run_dir)
    splits = json.loads((run_dir / "splits.json").read_text())
    folds = [splits[f"fold_{i}"] for i in (1, 2, 3)]
    validation_rows = [set(f["validation"]) for f in folds]
    assert set().union(*validation_rows) == set(range(404))
    assert sum(len(v) for v in validation_rows) == 404
    assert sorted(folds[0]["validation"]) == list(range(135))  # unshuffled: the book's partition

    from dlrun.data.sources import load_dataset

    recipe = load_recipe(run_dir / "recipe.yaml").recipe
    x_train = load_dataset(recipe.data, run_dir).x_train
    means = []
    for i, fold in enumerate(folds, start=1):
        (stats,) = json.loads((run_dir / "folds" / f"fold_{i}" / "preprocessing.json").read_text())
        np.testing.assert_allclose(stats["mean"], x_train[fold["train"]].mean(axis=0), rtol=1e-5)
        means.append(stats["mean"])
    assert not np.allclose(means[0], means[1])  # refitted per fold


def test_kfold_refit_trains_final_model_for_best_epoch(tmp_path, monkeypatch):
    from dlrun.training import job

    tried = []
    check = job._check_fits
    monkeypatch.setattr(job, "_check_fits", lambda *args: tried.append(1) or check(*args))
    summary = _run(tmp_path, BOSTON_KFOLD, ["evaluation.refit=true", "evaluation.k=2"])
    assert len(tried) == 1  # the preflight's: both folds and the refit have samples like the ones it tried
    assert "test_mae" in summary.metrics and summary.metrics["refit_epochs"] == summary.metrics["best_epoch"]
    final_history = (Path(summary.run_dir) / "final" / "history.csv").read_text().strip().splitlines()
    assert len(final_history) - 1 == summary.metrics["best_epoch"]
    client = _client(summary)
    assert client.get_run(summary.run_id).data.metrics["test_mae"] == pytest.approx(summary.metrics["test_mae"])
    assert "history.csv" in _artifact_names(client, summary.run_id, "final")
    assert client.get_run(summary.run_id).outputs.model_outputs  # the refit's model: the run's logged model


def _spy_on_final_evaluations(monkeypatch):
    """The parts ``run_job`` evaluates after training (their prefixes), and the last job's model and data."""
    from dlrun.training import fitting, job

    evaluated, trained = [], {}
    evaluate, train = job._evaluate, fitting.train_stages

    def train_stages(ctx, model, data, *args, **kwargs):
        import keras

        class Batches(keras.callbacks.Callback):  # how many batches each validation in fit takes
            def on_test_begin(self, logs=None):
                validations.append(0)

            def on_test_batch_end(self, batch, logs=None):
                validations[-1] += 1

        fit, validations = model.fit, []
        model.fit = lambda *a, callbacks=(), **k: fit(*a, callbacks=[*callbacks, Batches()], **k)
        trained.update(model=model, data=data, batch_size=ctx.recipe.fit.batch_size, validations=validations)
        return train(ctx, model, data, *args, **kwargs)

    monkeypatch.setattr(job, "_evaluate", lambda model, part, size, prefix, callbacks:
                        evaluated.append(prefix) or evaluate(model, part, size, prefix, callbacks))
    monkeypatch.setattr(fitting, "train_stages", train_stages)
    return evaluated, trained, evaluate


@pytest.mark.parametrize("extra", ["", "deterministic: true\n"], ids=["arrays", "seeded stream"])
def test_the_last_epochs_validation_is_the_final_one_when_the_weights_are_the_same(tmp_path, monkeypatch, extra):
    """The validation part is not evaluated a second time after training: the last epoch's
    numbers are the final ones, exactly (a seeded stream's fit validates in fit.batch_size
    batches too: 24 rows, 16 a batch, where Keras' default would make one batch of 32)."""
    evaluated, trained, evaluate = _spy_on_final_evaluations(monkeypatch)
    summary = _run(tmp_path, iris_recipe("iris_val", extra=extra))
    assert evaluated == ["test_"]
    assert trained["validations"] == [2, 2, 2]  # 24 rows in batches of 16, every epoch
    metrics = json.loads((Path(summary.run_dir) / "metrics.json").read_text())
    again = evaluate(trained["model"], trained["data"].validation, trained["batch_size"], "val_", [])
    assert {k: v for k, v in metrics.items() if k.startswith("val_")} == again
    last = (Path(summary.run_dir) / "history.csv").read_text().splitlines()
    header, row = last[0].split(","), last[-1].split(",")
    assert float(row[header.index("val_loss")]) == pytest.approx(again["val_loss"], rel=1e-6)


def test_weights_restored_after_the_last_epoch_are_evaluated_again(tmp_path, monkeypatch):
    evaluated, trained, evaluate = _spy_on_final_evaluations(monkeypatch)
    callbacks = "  callbacks:\n    - EarlyStopping: {monitor: val_loss, patience: 1, restore_best_weights: true}\n"
    text = iris_recipe("iris_restore", epochs=4, optimizer="{Adam: {learning_rate: 0.5}}").replace(
        "  batch_size: 16\n", "  batch_size: 16\n" + callbacks)
    summary = _run(tmp_path, text)
    assert evaluated == ["val_", "test_"]
    metrics = json.loads((Path(summary.run_dir) / "metrics.json").read_text())
    again = evaluate(trained["model"], trained["data"].validation, trained["batch_size"], "val_", [])
    assert metrics["val_loss"] == pytest.approx(again["val_loss"])


def test_a_model_that_does_not_fit_the_data_fails_before_anything_is_created(tmp_path):
    bad = IRIS.replace("Dense: {units: 3, activation: softmax}", "Dense: {units: 5, activation: softmax}")
    with pytest.raises(ModelBuildError, match="the data does not fit the model"):
        _run(tmp_path, bad)
    assert not (tmp_path / "out").exists()


def test_a_failure_during_training_marks_the_run_failed(tmp_path):
    # A CSVLogger told to write onto the run directory itself fails as training begins.
    with pytest.raises(IsADirectoryError) as info:
        _run(tmp_path, IRIS, ["fit.callbacks=[{CSVLogger: {filename: .}}]"])
    summary = info.value.run_summary
    assert summary.status == "FAILED"
    from mlflow import MlflowClient

    run = MlflowClient(summary.tracking_uri).get_run(summary.run_id)
    assert run.info.status == "FAILED"
    assert "IsADirectoryError" in run.data.tags["dlrun.error"]
    status = json.loads((Path(summary.run_dir) / "run.json").read_text())
    assert status["status"] == "FAILED" and "IsADirectoryError" in status["error"]
    assert (Path(summary.run_dir) / "recipe.yaml").exists()  # what was done is kept


def test_input_errors_create_no_run(tmp_path):
    from dlrun.errors import DataError, UsageError

    cases = [
        (BOSTON_KFOLD, ["evaluation.monitor=val_mea"], UsageError, "did you mean 'val_mae'"),
        (BOSTON_KFOLD, ["evaluation.k=500"], DataError, "500"),
        (IRIS, ["data.split.validation={first: 200}"], DataError, "leave none for training"),
        (IRIS, ["preprocessing=[{transform: multi_hot, dimension: 2}]"], DataError, "multi_hot"),
    ]
    for text, overrides, error, words in cases:
        with pytest.raises(error, match=words.replace("(", r"\(")):
            _run(tmp_path, text, overrides)
    assert not (tmp_path / "out").exists()  # no run directory, no MLflow store


def test_learning_rate_changes_are_recorded(tmp_path):
    summary = _run(tmp_path, IRIS, [
        "fit.callbacks=[{ReduceLROnPlateau: {monitor: loss, factor: 0.5, patience: 0, min_delta: 100}}]",
    ])
    assert summary.status == "FINISHED"
    history = (Path(summary.run_dir) / "history.csv").read_text().splitlines()
    assert "learning_rate" in history[0].split(",")
    client = _client(summary)
    rates = [m.value for m in client.get_metric_history(summary.run_id, "learning_rate")]
    assert len(rates) == 3 and rates[0] > rates[-1]
    assert "best_epoch" not in summary.metrics or np.isfinite(summary.metrics["best_val_loss"])


def test_best_mean_epoch_uses_epochs_every_fold_reached():
    from dlrun.training.protocols import best_mean_epoch

    histories = [{"val_loss": [1.0, 0.9]}, {"val_loss": [1.1, 0.95]}, {"val_loss": [0.3, 0.25, 0.2, 0.1]}]
    assert best_mean_epoch(histories, "val_loss") == {"best_epoch": 2, "best_val_loss": pytest.approx(0.7)}
    assert best_mean_epoch([{"val_acc": [0.5, 0.9, 0.7]}], "val_acc", "max")["best_epoch"] == 2
    assert best_mean_epoch([{"loss": [float("nan")] * 3}], "loss") == {}


def test_monitor_direction_comes_from_keras_or_the_recipe(tmp_path):
    from dlrun.training.protocols import monitor_mode

    path = tmp_path / "r.yaml"
    path.write_text(BOSTON_KFOLD)
    metrics = "compile.metrics=[{LogCoshError: {name: logc}}, AUC, {MeanAbsoluteError: {name: abs_err}}]"
    recipe = load_recipe(path, [metrics]).recipe
    assert monitor_mode(recipe, "val_logc") == "min"
    assert monitor_mode(recipe, "val_abs_err") == "min"
    assert monitor_mode(recipe, "val_AUC") == "max"
    assert monitor_mode(recipe, "val_loss") == "min"
    assert monitor_mode(load_recipe(path, [metrics, "evaluation.mode=max"]).recipe, "val_logc") == "max"

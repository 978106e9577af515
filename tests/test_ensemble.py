"""``dlrun ensemble`` (the book's 7.3.3): fold models and named runs, averaged on the test split.

Real runs on a small generated regression task with a noisy target: three K-fold fold models
trained on different rows make partly independent errors, so their average is scored against
the mean of their scores (for MSE, a convex loss, never worse — Jensen's inequality).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.ensembling import ensemble
from dlrun.errors import UsageError

RECIPE = """\
name: noisy_regression
seed: 3
data:
  source: npz
  path: {path}
  x: x
  y: y
  x_test: x_test
  y_test: y_test
  split: {{test: dataset, validation: {{first: 15}}}}
preprocessing:
  - {{transform: standardize}}
model:
  layers:
    - Dense: {{units: 16, activation: relu}}
    - Dense: {{units: 1}}
compile:
  optimizer: {{adam: {{learning_rate: 0.01}}}}
  loss: mse
  metrics: [mae]
fit:
  epochs: 8
  batch_size: 16
"""


@pytest.fixture(scope="module")
def output_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")  # one MLflow store for the module


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 1))

    def make(n):
        x = rng.normal(size=(n, 6)) * 3 + 5  # standardize has work to do
        return x.astype("float32"), ((x - 5) / 3 @ w + rng.normal(scale=1.0, size=(n, 1))).astype("float32")

    (x, y), (x_test, y_test) = make(60), make(200)
    np.savez(folder / "noisy.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    path = folder / "noisy.yaml"
    path.write_text(RECIPE.format(path=folder / "noisy.npz"))
    return path


def _train(recipe, output_root, *overrides) -> str:
    summary = dlrun.train(recipe, list(overrides), output_root=output_root)
    assert summary.status == "FINISHED"
    return summary.run_dir


@pytest.fixture(scope="module")
def kfold_run(recipe, output_root):
    return _train(recipe, output_root, "evaluation={protocol: kfold, k: 3, monitor: val_loss}")


@pytest.fixture(scope="module")
def holdout_runs(recipe, output_root):
    return [_train(recipe, output_root, "fit.epochs=4", f"seed={seed}") for seed in (1, 2)]


def test_fold_models_ensemble(kfold_run, output_root):
    result = ensemble([kfold_run], output_root=output_root)
    assert [m["label"].split()[-1] for m in result.members] == ["fold_1", "fold_2", "fold_3"]
    assert result.method == "mean" and result.weights == pytest.approx([1 / 3] * 3)
    assert result.n_test == 200 and set(result.ensemble) == {"test_loss", "test_mae"}
    # Averaging can only lower a convex loss: the ensemble is at least as good as its members' mean.
    assert result.ensemble["test_loss"] <= result.members_mean["test_loss"] + 1e-6
    assert result.ensemble["test_loss"] < max(m["metrics"]["test_loss"] for m in result.members)

    record = json.loads((Path(result.ensemble_dir) / "ensemble.json").read_text())
    assert record["ensemble"] == pytest.approx(result.ensemble) and len(record["members"]) == 3

    from mlflow import MlflowClient

    run = MlflowClient(f"sqlite:///{output_root / 'mlflow.db'}").get_run(result.run_id)
    assert run.data.tags["dlrun.ensemble"] == "true"
    assert run.data.metrics["test_loss"] == pytest.approx(result.ensemble["test_loss"])
    fold_ids = [m["mlflow_run_id"] for m in result.members]
    assert all(fold_ids) and run.data.tags["dlrun.ensemble.members"] == ",".join(fold_ids)


def test_members_see_their_training_inputs(kfold_run, output_root):
    """Each fold's refitted preprocessing reproduces the validation loss it logged in training."""
    from dlrun.ensembling.combine import Scorer
    from dlrun.ensembling.core import _Data, _Prepared
    from dlrun.ensembling.members import resolve_members

    data = _Data()
    for member in resolve_members([kfold_run], output_root):
        prepared = _Prepared(member, data.of(member))
        pred, y = prepared.predict_rows(member.validation)
        logged = json.loads((member.model_path.parent / "metrics.json").read_text())
        assert Scorer(member.recipe.compile, pred.shape[1:])(pred, y)["loss"] == pytest.approx(
            logged["val_loss"], rel=1e-4)


def test_kfold_recipe_is_read_once(kfold_run, output_root, monkeypatch):
    """The K-fold run's recipe.yaml is read and validated once, not once per fold."""
    import functools

    from dlrun.ensembling import members
    from dlrun.track.runs import RunReader

    calls = []
    real = RunReader.__dict__["resolved"].func
    counting = functools.cached_property(lambda self: calls.append(self.path) or real(self))
    counting.__set_name__(RunReader, "resolved")
    monkeypatch.setattr(RunReader, "resolved", counting)
    folds = members.resolve_members([kfold_run], output_root)
    assert len(folds) == 3 and calls == [Path(kfold_run)]
    assert all(m.recipe is folds[0].recipe for m in folds)


def test_given_and_fitted_weights(kfold_run, output_root):
    one = ensemble([kfold_run], weights="2,0,0", output_root=output_root, track=False)
    assert one.weights == [1.0, 0.0, 0.0] and one.weights_from == "given"
    assert one.ensemble["test_loss"] == pytest.approx(one.members[0]["metrics"]["test_loss"], rel=1e-5)

    folds = [os.path.join(kfold_run, "folds", name) for name in ("fold_1", "fold_3")]  # folds named one by one
    pair = ensemble(folds, output_root=output_root, track=False)
    assert [m["label"].split()[-1] for m in pair.members] == ["fold_1", "fold_3"]
    assert pair.members[0]["metrics"] == pytest.approx(one.members[0]["metrics"], rel=1e-5)

    fitted = ensemble([kfold_run], fit_weights=True, output_root=output_root, track=False)
    assert fitted.weights_from.startswith("fitted: 1/loss") and sum(fitted.weights) == pytest.approx(1.0)
    val = [json.loads((Path(m["model"]).parent / "metrics.json").read_text())["val_loss"] for m in fitted.members]
    expected = (1 / np.array(val)) / (1 / np.array(val)).sum()
    assert fitted.weights == pytest.approx(expected.tolist(), rel=1e-3)


def test_named_runs_fit_weights_on_shared_validation(holdout_runs, output_root):
    plain = ensemble(holdout_runs, output_root=output_root, track=False)
    fitted = ensemble(holdout_runs, fit_weights=True, output_root=output_root, track=False)
    assert len(fitted.members) == 2 and not fitted.members[0]["label"].endswith("fold_1")
    assert fitted.weights_from.startswith("fitted: recipe loss minimized on 15 validation rows")
    assert sum(fitted.weights) == pytest.approx(1.0) and min(fitted.weights) >= 0
    assert plain.ensemble["test_loss"] <= plain.members_mean["test_loss"] + 1e-6


def test_errors(recipe, kfold_run, holdout_runs, output_root):
    different = _train(recipe, output_root, "fit.epochs=1", "data.limit=50")
    with pytest.raises(UsageError, match="different data sections"):
        ensemble([holdout_runs[0], different], output_root=output_root, track=False)
    unsaved = _train(recipe, output_root, "fit.epochs=1", "tracking.log_model=false")
    with pytest.raises(UsageError, match="tracking.log_model: false"):
        ensemble([holdout_runs[0], unsaved], output_root=output_root, track=False)
    with pytest.raises(UsageError, match="3 weights given for 2 members"):
        ensemble(holdout_runs, weights="1,2,3", output_root=output_root, track=False)
    with pytest.raises(UsageError, match="K-fold run without a refit model"):
        ensemble([kfold_run, holdout_runs[0]], output_root=output_root, track=False)
    with pytest.raises(UsageError, match="either --weights or --fit-weights"):
        ensemble(holdout_runs, weights="1,1", fit_weights=True, output_root=output_root, track=False)
    with pytest.raises(UsageError, match="two or more"):
        ensemble([holdout_runs[0]], output_root=output_root, track=False)


def _cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "dlrun", "ensemble", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_json(kfold_run, output_root):
    done = _cli(kfold_run, "--weights", "1,1,2", "--no-track", "--json", "-o", output_root)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "OK" and record["weights"] == pytest.approx([0.25, 0.25, 0.5])
    assert record["ensemble"]["test_loss"] <= max(m["metrics"]["test_loss"] for m in record["members"])

    bad = _cli(kfold_run, "--weights", "1,2", "--json", "-o", output_root)
    assert bad.returncode == 2 and "2 weights given for 3 members" in bad.stderr
    assert json.loads(bad.stdout)["status"] == "FAILED" and "Traceback" not in bad.stderr


def test_boston_kfold_ensemble_recipe(recipes_dir, output_root):
    """The recipe's workflow: train the K-fold run, then ensemble it by its recipe name."""
    _train(recipes_dir / "boston_kfold_ensemble.yaml", output_root, "fit.epochs=2", "fit.batch_size=32",
           "data.limit=90", "evaluation.k=3")
    result = ensemble(["boston_kfold_ensemble"], output_root=output_root, track=False)
    assert len(result.members) == 3 and result.n_test == 102
    assert result.ensemble["test_loss"] <= result.members_mean["test_loss"] + 1e-4

"""``dlrun tune``: a real Optuna search of a tiny iris network, trained by the normal runner,
its trial runs read back from the MLflow store."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import dlrun
from dlrun.errors import RecipeError
from dlrun.recipe.loading import load_recipe

RECIPE = """\
name: {name}
seed: 1
data: {{source: embedded, name: iris, shuffle: true, split: {{test: {{fraction: 0.2}}, validation: {{fraction: 0.25}}}}}}
preprocessing: [{{transform: standardize}}]
model:
  layers:
    - Dense: {{units: 8, activation: relu}}
    - Dropout: {{rate: 0.1}}
    - Dense: {{units: 3, activation: softmax}}
compile:
  optimizer: {{adam: {{learning_rate: 0.01}}}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
fit: {{epochs: 2, batch_size: 16, checkpoint: false}}
tracking: {{log_model: false}}
search:
{search}
"""

SPACE = """\
  space:
    model.layers[0].Dense.units: {int: [4, 16], step: 4}
    model.layers[1].Dropout.rate: {float: [0.0, 0.4], step: 0.2}
    compile.optimizer.adam.learning_rate: {log_uniform: [1.0e-3, 1.0e-1]}
    fit.batch_size: {choice: [8, 16]}
  sampler: random
  budget: {trials: 3}
"""


def _write(folder, search, name="iris_tune", file=None):
    path = folder / (file or f"{name}.yaml")
    path.write_text(RECIPE.format(name=name, search=search), encoding="utf-8")
    return path


def _tune(path, output_root, **options):
    from dlrun.tuning.tune import tune

    return tune(load_recipe(path), output_root=output_root, **options)


@pytest.fixture(scope="module")
def output_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tune")  # one MLflow store for all: creating one costs seconds


@pytest.fixture(scope="module")
def first(output_root):
    path = _write(output_root, SPACE)
    return path, _tune(path, output_root)


def _client(result):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=result.tracking_uri)


def test_best_recipe_trains_as_is(first, output_root):
    _, result = first
    assert result.trials_run == 3 and not result.resumed and result.message.startswith("new study iris_tune-")
    assert [t["state"] for t in result.trials] == ["COMPLETE"] * 3
    best = yaml.safe_load(open(result.best_recipe))
    assert "search" not in best
    assert best["model"]["layers"][0]["Dense"]["units"] == result.best_params["model.layers[0].Dense.units"]
    summary = dlrun.train(result.best_recipe, output_root=output_root)
    assert summary.status == "FINISHED" and "final_val_loss" in summary.metrics


def test_trials_are_nested_runs_of_one_parent(first):
    _, result = first
    client = _client(result)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["dlrun.tune.study"] == result.study
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert len(children) == 3
    assert {r.info.run_id for r in children} == {t["run_id"] for t in result.trials}
    trial_0 = next(r for r in children if r.data.tags["dlrun.tune.trial"] == "0")
    assert float(trial_0.data.params["fit.batch_size"]) == result.trials[0]["params"]["fit.batch_size"]
    artifacts = [a.path for a in client.list_artifacts(result.parent_run_id)]
    assert "iris_tune-best.yaml" in artifacts


def test_rerun_resumes_the_same_study(first, output_root):
    path, result = first
    again = _tune(path, output_root, trials=4)
    assert again.resumed and again.study == result.study
    assert again.message == f"resuming study {result.study}: 3 trials done (3 complete)"
    assert again.trials_run == 1 and len(again.trials) == 4
    assert again.parent_run_id == result.parent_run_id  # the same parent run goes on
    done = _tune(path, output_root, trials=4)
    assert done.trials_run == 0 and len(done.trials) == 4


def test_changed_space_starts_a_new_study(first, output_root):
    path, result = first
    _write(output_root, SPACE.replace("step: 4", "step: 2").replace("trials: 3", "trials: 1"))
    changed = _tune(path, output_root)
    assert not changed.resumed and changed.study != result.study
    assert result.study in changed.message and changed.study in changed.message
    assert "changed" in changed.message and len(changed.trials) == 1


def test_hopeless_trials_are_pruned(output_root):
    search = """\
  space:
    compile.optimizer.adam.learning_rate: {choice: [0.05, 1.0e-9]}
    seed: {choice: [1, 2]}
  sampler: grid
  pruning: {startup_trials: 1}
"""
    path = _write(output_root, search, name="iris_prune")
    result = _tune(path, output_root, reporter=None)
    states = {t["number"]: t["state"] for t in result.trials}
    assert "PRUNED" in states.values(), result.trials
    pruned = [t for t in result.trials if t["state"] == "PRUNED"]
    assert all(t["params"]["compile.optimizer.adam.learning_rate"] == 1e-9 for t in pruned)
    run = _client(result).get_run(pruned[0]["run_id"])
    assert run.info.status == "KILLED" and run.data.tags["dlrun.tune.pruned"] == "true"
    assert result.best_params["compile.optimizer.adam.learning_rate"] == 0.05


@pytest.mark.parametrize("space, message", [
    ("model.layer[0].Dense.units: {int: [4, 8]}", "no key 'layer' in model — did you mean 'layers'?"),
    ("model.layers[5].Dense.units: {int: [4, 8]}", "model.layers has 3 items; no index 5"),
    ("fit.epochs: {int: [0, 3]}", "the value 0 does not fit the recipe: fit.epochs:"),
    ("compile.loss.foo: {choice: [1]}", "compile.loss is \"sparse_categorical_crossentropy\", not a mapping"),
    ("fit.batch_size: {int: [8]}", "int takes [low, high]"),
])
def test_bad_space_is_a_located_recipe_error(tmp_path, space, message):
    path = _write(tmp_path, f"  space:\n    {space}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    text = str(caught.value)
    assert message in text, text
    assert f"{path}:18:" in text  # the line of the space entry


def test_cli_refuses_a_recipe_without_search(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(RECIPE.format(name="plain", search="").replace("search:\n", ""), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "dlrun", "tune", str(path), "-o", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "no 'search:' section" in done.stdout


def test_boston_tuning_recipe_runs(recipes_dir, output_root):
    """recipes/boston_tuning.yaml end to end, its space cut to one cheap dimension."""
    from dlrun.tuning.tune import tune

    loaded = load_recipe(recipes_dir / "boston_tuning.yaml", [
        "data.limit=80", "fit.epochs=1", 'search.space={"model.layers[0].Dense.units": {choice: [8, 16]}}',
        "search.kfold.k=2", "search.budget={trials: 2}"])
    result = tune(loaded, output_root=output_root)
    assert [t["state"] for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert result.metric == "val_mae" and result.direction == "minimize"
    assert yaml.safe_load(open(result.best_recipe))["evaluation"]["protocol"] == "holdout"  # the recipe's own


def test_pruning_reporter_stops_holdout_at_the_epoch_and_kfold_before_the_next_fold():
    from dlrun.report import Reporter
    from dlrun.tuning.trial import PrunedRun, TrialReporter

    class Trial:  # Optuna's side, answering "prune" from the second report on
        number, reports = 7, []

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return len(self.reports) > 1

    holdout = TrialReporter(Reporter(), Trial(), "val_loss", kfold=False)
    holdout.epoch("holdout", 1, 3, {"val_loss": 2.0}, 0.1)
    with pytest.raises(PrunedRun, match="after epoch 2") as caught:
        holdout.epoch("holdout", 2, 3, {"val_loss": 3.0}, 0.1)
    assert caught.value.run_status == "KILLED"  # how the runner ends the trial's run

    trial = Trial()
    trial.reports = []
    folds = TrialReporter(Reporter(), trial, "val_mae", kfold=True)
    for fold, value in (("fold_1", 2.0), ("fold_2", 4.0)):
        folds.job_started(fold, 3)
        folds.job_finished(fold, {"val_mae": value})  # a finished fold is never the one killed
    assert trial.reports == [(1, 2.0), (2, 3.0)]  # the running mean, one step per fold
    with pytest.raises(PrunedRun, match="after fold_2"):
        folds.job_started("fold_3", 3)


def test_best_recipe_written_elsewhere_keeps_every_relative_file(tmp_path, monkeypatch):
    """Not only data.path: recipe layers' files (embeddings, saved models, weights) resolve
    against the recipe's folder, so the best recipe, written under the output root, makes
    them absolute; 'imagenet', null and absolute paths stay as written."""
    from dlrun.recipe.loading import rebase_paths
    from dlrun.tuning.best import best_recipe

    import numpy as np

    (tmp_path / "recipes").mkdir()
    (tmp_path / "shared").mkdir()
    np.savez(tmp_path / "shared" / "d.npz", x=np.zeros((4, 3)), y=np.zeros(4))
    for name in ("vectors.txt", "encoder.keras", "base.weights.h5"):
        (tmp_path / "shared" / name).write_text("stand-in")
    absolute = str(tmp_path / "shared" / "encoder.keras")
    recipe = tmp_path / "recipes" / "paths.yaml"
    recipe.write_text(f"""\
name: paths
data: {{source: npz, path: ../shared/d.npz, split: {{validation: {{fraction: 0.25}}}}}}
model:
  type: graph
  inputs: {{a: {{shape: [3]}}}}
  shared:
    enc: {{SavedModel: {{path: ../shared/encoder.keras}}}}
  nodes:
    emb: {{layer: {{PretrainedEmbedding: {{path: ../shared/vectors.txt}}}}, inputs: a}}
    e1: {{shared: enc, inputs: emb}}
    e2: {{layer: {{SavedModel: {{path: {absolute}}}}}, inputs: e1}}
    base: {{layer: {{Pretrained: {{application: VGG16, weights: ../shared/base.weights.h5}}}}, inputs: e2}}
    out: {{layer: {{Dense: {{units: 1}}}}, inputs: base}}
  outputs: out
compile: {{loss: mse}}
fit: {{epochs: 1}}
search:
  space: {{fit.epochs: {{int: [1, 3]}}}}
""", encoding="utf-8")
    monkeypatch.setenv("DLRUN_ALLOW_READ", str(tmp_path / "shared"))  # outside the recipe's folder
    loaded = load_recipe(recipe)
    best = best_recipe(loaded, {"fit.epochs": 3})
    shared = (tmp_path / "shared").resolve()
    nodes = best["model"]["nodes"]
    assert best["fit"]["epochs"] == 3 and "search" not in best
    assert best["data"]["path"] == str(shared / "d.npz")
    assert best["model"]["shared"]["enc"]["SavedModel"]["path"] == str(shared / "encoder.keras")
    assert nodes["emb"]["layer"]["PretrainedEmbedding"]["path"] == str(shared / "vectors.txt")
    assert nodes["e2"]["layer"]["SavedModel"]["path"] == absolute
    assert nodes["base"]["layer"]["Pretrained"]["weights"] == str(shared / "base.weights.h5")
    assert loaded.resolved["data"]["path"] == "../shared/d.npz"  # the loaded recipe is left as is
    elsewhere = tmp_path / "out" / "tuning" / "paths-best.yaml"  # where write_best_recipe puts it
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_text(yaml.safe_dump(best, sort_keys=False), encoding="utf-8")
    again = load_recipe(elsewhere).resolved
    assert again["model"]["nodes"]["emb"]["layer"]["PretrainedEmbedding"]["path"] == str(shared / "vectors.txt")
    # sequential layers, a pretrained feature base's weights; imagenet/null are no files
    raw = {"data": {"source": "image_directory", "path": "imgs", "features": {"application": "VGG16",
                                                                            "weights": "w.h5"}},
           "model": {"layers": [{"Pretrained": {"application": "VGG16", "weights": "imagenet"}},
                                {"Pretrained": {"application": "VGG16", "weights": None}},
                                {"SavedModel": {"path": "m.keras"}}, "Flatten"]}}
    rebased = rebase_paths(raw, tmp_path)
    assert rebased["data"]["path"] == str(tmp_path.resolve() / "imgs")
    assert rebased["data"]["features"]["weights"] == str(tmp_path.resolve() / "w.h5")
    assert [layer if isinstance(layer, str) else next(iter(layer.values())) for layer in rebased["model"]["layers"]] \
        == [{"application": "VGG16", "weights": "imagenet"}, {"application": "VGG16", "weights": None},
            {"path": str(tmp_path.resolve() / "m.keras")}, "Flatten"]
    assert raw["data"]["path"] == "imgs"  # a copy

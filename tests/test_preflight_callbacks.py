"""A recipe's callbacks, checked before a run exists: names inside their strings (a `monitor`,
a ModelCheckpoint filepath's fields) against the metrics the compiled model logs, the arguments
Keras refuses when it builds them, and callbacks that reach the network without the user's
`--allow-network`. Each is a located recipe error, exit 2, and nothing is created: no run
directory, no MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DLRUN = [sys.executable, "-m", "dlrun"]

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402


def write(tmp_path: Path, *callbacks: str, validation: bool = True) -> Path:
    """The iris recipe (tests/_recipes.py) with these callbacks, one YAML flow mapping each."""
    text = iris_recipe("callbacks_checked", epochs=1, extra="  callbacks:\n" + "".join(f"    - {c}\n" for c in callbacks))
    if not validation:
        text = text.replace("    validation: {fraction: 0.2}\n", "")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    return recipe


def dlrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*DLRUN, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_callback_names_and_arguments_are_checked_before_the_run_exists(tmp_path):
    """A `monitor` the model never logs failed after the run started with Keras' raw ValueError;
    a filepath field that does not exist with a raw KeyError after the first epoch; an argument
    Keras refuses, or a monitor whose direction Keras cannot tell, once the run existed. All are
    found by one preflight, each at its place."""
    recipe = write(tmp_path,
                   "EarlyStopping: {monitor: val_acuracy, patience: 2}",
                   "ModelCheckpoint: {filepath: 'ckpt/{epoch:02d}-{val_los:.2f}.keras'}",
                   "ModelCheckpoint: {filepath: best.keras, save_weights_only: true}",
                   "ReduceLROnPlateau: {monitor: learning_rate, cooldown: 1}")
    for command in ("train", "kfold"):
        result = dlrun(command, str(recipe), "-o", "out", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"{recipe}:23:32: fit.callbacks[0].EarlyStopping.monitor: EarlyStopping monitor 'val_acuracy' is not a "
            f"metric this model logs — did you mean 'val_accuracy'? (it logs: accuracy, loss, val_accuracy, val_loss, "
            f"learning_rate)",
            f"{recipe}:24:35: fit.callbacks[1].ModelCheckpoint.filepath: ModelCheckpoint filepath has the field "
            f"'{{val_los}}', which Keras cannot fill in — did you mean 'val_loss'? (it fills in: accuracy, epoch, "
            f"learning_rate, loss, val_accuracy, val_loss)",
            f"{recipe}:25:7: fit.callbacks[2]: When using `save_weights_only=True` in `ModelCheckpoint`, the filepath "
            f"provided must end in `.weights.h5` (Keras weights format). Received: filepath=best.keras",
            f"{recipe}:26:7: fit.callbacks[3]: ReduceLROnPlateau callback received monitor=learning_rate, but Keras "
            f"isn't able to automatically determine whether that metric should be maximized or minimized. Pass "
            f"`mode='max'` in order to monitor based on the highest metric value, or pass `mode='min'` in order to "
            f"use the lowest value.",
            "4 problems in the recipe; nothing was run."]
        assert list(tmp_path.iterdir()) == [recipe]  # no output root: no run directory, no mlflow.db


def test_without_validation_only_the_training_metrics_are_logged(tmp_path):
    recipe = write(tmp_path, "EarlyStopping: {monitor: val_loss}", "ModelCheckpoint: {filepath: 'c/{loss:.2f}.keras', "
                   "monitor: acuracy}", validation=False)
    result = dlrun("train", str(recipe), "-o", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    (line, _) = result.stderr.splitlines()  # val_loss: left out of a job without validation, not an error
    assert line == (f"{recipe}:23:66: fit.callbacks[1].ModelCheckpoint.monitor: ModelCheckpoint monitor 'acuracy' is "
                    f"not a metric this model logs — did you mean 'accuracy'? (it logs: accuracy, loss)")


def test_a_batch_checkpoint_names_only_what_batches_log(tmp_path):
    recipe = write(tmp_path, "ModelCheckpoint: {filepath: 'c/{epoch}-{batch}-{val_loss:.2f}.keras', save_freq: 4, "
                             "monitor: loss}")
    result = dlrun("train", str(recipe), "-o", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert "has the field '{val_loss}', which Keras cannot fill in" in result.stderr
    assert "(it fills in: accuracy, batch, epoch, loss)" in result.stderr


@pytest.mark.slow
def test_callbacks_the_model_logs_for_still_train(tmp_path):
    recipe = write(tmp_path, "EarlyStopping: {monitor: val_accuracy, mode: max}",
                   "ModelCheckpoint: {filepath: 'ckpt/{epoch:02d}-{val_loss:.2f}.keras', monitor: val_accuracy}",
                   "ReduceLROnPlateau: {monitor: learning_rate, mode: max}")
    result = dlrun("train", str(recipe), "-o", "out", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").rglob("ckpt/*.keras")] and '"status": "FINISHED"' in result.stdout


NETWORK = "RemoteMonitor: {root: 'http://127.0.0.1:9', path: /collect}"


def test_a_callback_that_reaches_the_network_needs_the_users_consent(tmp_path):
    """RemoteMonitor posts every epoch's logs to any URL the recipe names. Without
    --allow-network, train, kfold and tune refuse the recipe before anything is created;
    validate says what a run will need; show never runs callbacks and builds nothing online."""
    recipe = write(tmp_path, "EarlyStopping: {patience: 2}", NETWORK)
    recipe.write_text(recipe.read_text() + "search:\n  space: {fit.epochs: {int: [1, 2]}}\n"
                                           "  objective: {metric: val_loss}\n")
    refusal = (f"{recipe}:24:7: fit.callbacks[1]: RemoteMonitor posts every epoch's logs to the URL in its 'root' "
               f"argument: a recipe reaches the network only when you allow it — run with --allow-network")
    for command in ("train", "kfold", "tune"):
        result = dlrun(command, str(recipe), "-o", "out", cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.splitlines() == [refusal, "1 problem in the recipe; nothing was run."]
    assert list(tmp_path.iterdir()) == [recipe]
    checked = dlrun("validate", str(recipe), cwd=tmp_path)
    assert checked.returncode == 0 and f"warning: {refusal} (the recipe is valid; a run needs that permission)" in \
        checked.stderr
    assert dlrun("validate", str(recipe), "--allow-network", cwd=tmp_path).stderr == ""
    assert dlrun("show", "--no-model", str(recipe), cwd=tmp_path).returncode == 0


def test_allowed_network_callbacks_pass_the_checks(tmp_path):
    from dlrun.model.builder import build_model, compile_model
    from dlrun.recipe.loading import load_recipe
    from dlrun.recipe.permissions import granted
    from dlrun.training.callbacks import build_callbacks, check_callbacks

    recipe = write(tmp_path, NETWORK)
    with granted(network=True):
        loaded = load_recipe(recipe)
        model = build_model(loaded.recipe.model, (4,))
        compile_model(model, loaded.recipe.compile)
        check_callbacks(loaded.recipe, model, ["loss", "accuracy"], True)
        (monitor,) = build_callbacks(loaded.recipe.fit.callbacks, tmp_path / "run")
    assert type(monitor).__name__ == "RemoteMonitor" and monitor.root == "http://127.0.0.1:9"
    from dlrun.errors import ModelBuildError

    with pytest.raises(ModelBuildError, match="run with --allow-network"):  # a job outside the scope: refused too
        build_callbacks(loaded.recipe.fit.callbacks, tmp_path / "run")

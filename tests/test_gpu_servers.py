"""GPU servers, tried on the CPU: mixed precision trains and is recorded; steps_per_execution > 1
keeps the NaN guard, step checkpoints and an exact resume; the XLA setting Keras resolved is
recorded; ``--gpus`` on a machine without a GPU is a clear usage error (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.errors import TrainingDiverged

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from _recipes import iris_recipe, resumable_iris_recipe  # noqa: E402

PLUGIN = "_interrupt_once"  # tests/_interrupt_once.py


def _cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = env or {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(
        [str(TESTS.parent), str(TESTS)])}
    return subprocess.run([sys.executable, "-m", "dlrun", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _compute(run_dir) -> dict:
    return json.loads((Path(run_dir) / "environment.json").read_text())["compute"]


@pytest.mark.slow
def test_mixed_precision_trains_a_small_model_on_the_cpu_with_its_policy_recorded(tmp_path):
    import keras

    recipe = tmp_path / "mixed.yaml"
    recipe.write_text(iris_recipe("mixed", epochs=2))
    done = _cli("train", str(recipe), "-o", "out", "--set", "fit.precision=mixed_float16", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert np.isfinite(summary["metrics"]["test_loss"]) and summary["metrics"]["test_accuracy"] > 0.5

    compute = _compute(summary["run_dir"])
    assert compute["precision"] == "mixed_float16" and compute["loss_scaling"] is True
    from mlflow import MlflowClient

    tags = MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"]).data.tags
    assert tags["dlrun.precision"] == "mixed_float16" and tags["dlrun.loss_scaling"] == "true"

    # The hidden layer computed in float16, the output layer in float32; the saved model says so.
    model = keras.saving.load_model(Path(summary["run_dir"]) / "model.keras", compile=False)
    assert [layer.dtype_policy.name for layer in model.layers] == ["mixed_float16", "float32"]
    from dlrun.inference.trained import TrainedModel
    from dlrun.track.runs import RunReader

    # The run reader loads it under the run's policy: compiled with loss scaling, its optimizer state loaded.
    loaded = TrainedModel(RunReader(Path(summary["run_dir"])), compile=True).model
    assert type(loaded.optimizer).__name__ == "LossScaleOptimizer"


@pytest.mark.slow
def test_steps_per_execution_keeps_step_checkpoints_and_an_exact_resume_under_mixed_precision(tmp_path):
    """Keras calls batch callbacks once per execution (batches 0, 6, 12, 18…): a SIGTERM at batch 18
    saves there, and the resumed run ends as its never-interrupted twin, loss scale included."""
    fit = "precision: mixed_float16\nsteps_per_execution: 6\ncheckpoint_steps: 12"

    def recipe(name, callbacks=""):
        path = tmp_path / f"{name}.yaml"
        path.write_text(resumable_iris_recipe(name, epochs=3, fit=fit, callbacks=callbacks, plugins=PLUGIN))
        return path

    stopped = recipe("stopped", f"InterruptOnce: {{epoch: 2, batch: 18, marker: {tmp_path / 'sent'}}}")
    killed = _cli("train", str(stopped), "-o", "out", cwd=tmp_path)
    assert killed.returncode == 143, killed.stderr
    (run_dir,) = (tmp_path / "out" / "runs" / "stopped").iterdir()
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == (1, 18), state
    resumed = _cli("train", "--resume", str(run_dir), "-o", "out", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch 1 and 18 batches of epoch 2" in resumed.stderr

    twin = _cli("train", str(recipe("twin")), "-o", "out", "--json", cwd=tmp_path)
    assert twin.returncode == 0, twin.stderr
    assert json.loads(resumed.stdout)["metrics"] == json.loads(twin.stdout)["metrics"]
    assert (run_dir / "history.csv").read_text() == next((tmp_path / "out" / "runs" / "twin").iterdir()).joinpath(
        "history.csv").read_text()
    assert _compute(run_dir)["steps_per_execution"] == 6


def test_calls_of_n_batches_end_where_an_epoch_ends():
    """Reading a repeating dataset, Keras runs whole calls of N batches: N must divide the epoch
    (else it trains past the epoch's end), the checkpoint interval and validation_steps."""
    from types import SimpleNamespace

    from dlrun.recipe.schema import FitSpec
    from dlrun.training.compute import steps_for_call, steps_per_execution

    def steps(model_weights=5000, batches=48, repeating=True, **fit):
        notes = []
        recipe = SimpleNamespace(fit=FitSpec(**fit))
        model = SimpleNamespace(count_params=lambda: model_weights)
        return steps_per_execution(recipe, model, batches, repeating, notes.append), notes

    assert steps(steps_per_execution="auto", batch_size=16) == (24, [])  # largest divisor of 48 up to 32
    assert steps(steps_per_execution="auto", batch_size=16, repeating=False, batches=19) == (19, [])
    assert steps(steps_per_execution="auto", batch_size=16, checkpoint_steps=10) == (2, [])
    assert steps(steps_per_execution="auto", model_weights=10**6, batch_size=128) == (1, [])  # not a tiny step
    assert steps(steps_per_execution="auto", batches=None) == (1, [])  # length unknown
    chosen, notes = steps(steps_per_execution=7)
    assert chosen == 1 and "instead" in notes[0]
    assert steps(steps_per_execution=7, repeating=False) == (7, [])  # the epoch's data ends by itself
    assert steps_for_call(6, 30) == 6 and steps_for_call(8, 30) == 2 and steps_for_call(8, None) == 8


def test_step_checkpoints_fall_every_n_batches_with_steps_per_execution(tmp_path, monkeypatch):
    recipe = tmp_path / "every.yaml"
    recipe.write_text(resumable_iris_recipe("every", epochs=1, fit="steps_per_execution: 4\ncheckpoint_steps: 8"))
    saved: list[int] = []
    from dlrun.training import checkpoints

    original = checkpoints.save_checkpoint

    def spy(job_dir, model, epoch, *args, **kwargs):
        done = original(job_dir, model, epoch, *args, **kwargs)
        saved.append(json.loads((Path(job_dir) / "checkpoint" / "state.json").read_text())["batch"])
        return done

    monkeypatch.setattr(checkpoints, "save_checkpoint", spy)
    result = dlrun.train(recipe, output_root=tmp_path / "out")
    assert result.status == "FINISHED"
    assert saved == [8, 16, 24, 32, 40, 0]  # 48 batches of 2: every 8th, then the epoch's end
    assert _compute(result.run_dir)["steps_per_execution"] == 4


def test_the_nan_guard_stops_within_the_execution_and_keeps_the_last_finite_checkpoint(tmp_path):
    recipe = tmp_path / "nan.yaml"
    recipe.write_text(resumable_iris_recipe("nan", epochs=4, fit="steps_per_execution: 3\ncheckpoint_steps: 3"))
    with pytest.raises(TrainingDiverged, match=r"became (nan|inf) at epoch \d+, (one of batches (\d+)–(\d+)|"
                                               r"batch \d+)") as caught:
        dlrun.train(recipe, ["compile.optimizer={SGD: {learning_rate: 1e6}}", "deterministic=false"],
                    output_root=tmp_path / "out")
    import re

    span = re.search(r"one of batches (\d+)–(\d+)", str(caught.value))
    assert span and int(span[2]) - int(span[1]) == 2 and int(span[2]) % 3 == 0, str(caught.value)
    folder = Path(caught.value.run_summary.run_dir) / "checkpoint"
    state = json.loads((folder / "state.json").read_text())
    assert state["batch"] % 3 == 0
    import h5py

    with h5py.File(folder / state["weights"]) as saved:
        arrays = []
        saved.visititems(lambda name, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    assert arrays and all(np.isfinite(a).all() for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating))


@pytest.mark.slow
def test_the_xla_setting_keras_resolved_is_recorded_with_auto_steps_per_execution(tmp_path):
    """Asked for XLA, a fresh process gets it on the CPU; under op determinism Keras turns it off
    (only a warning): the record says what ran, beside what was asked."""
    from mlflow import MlflowClient

    recipe = tmp_path / "xla.yaml"
    recipe.write_text(iris_recipe("xla", epochs=1))

    def run(*overrides):
        done = _cli("train", str(recipe), "-o", "out", "--json", "--set", "compile.jit_compile=true",
                    *[arg for o in overrides for arg in ("--set", o)], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        return _compute(summary["run_dir"]), MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"]).data.tags

    compute, tags = run("fit.steps_per_execution=auto")
    assert compute["jit_compile"] is True and tags["dlrun.jit_compile"] == "true"
    assert compute["steps_per_execution"] == 6 and compute["steps_per_execution_asked"] == "auto"  # 96 rows / 16
    assert tags["dlrun.steps_per_execution"] == "6" and compute["strategy"] == "default" and compute["replicas"] == 1

    compute, tags = run("deterministic=true")
    assert compute["jit_compile"] is False and compute["jit_compile_asked"] is True
    assert tags["dlrun.jit_compile"] == "false" and tags["dlrun.jit_compile_asked"] == "true"


def test_checkpoint_steps_not_a_multiple_of_steps_per_execution_is_a_located_recipe_error(tmp_path):
    recipe = tmp_path / "odd.yaml"
    recipe.write_text(resumable_iris_recipe("odd", fit="steps_per_execution: 4\ncheckpoint_steps: 10"))
    done = _cli("validate", str(recipe), cwd=tmp_path)
    assert done.returncode == 2
    assert "odd.yaml:" in done.stderr and "fit" in done.stderr
    assert "checkpoint_steps 10 is not a multiple of steps_per_execution 4" in done.stderr
    assert "use steps_per_execution 2, or checkpoint_steps 12" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["train", "--gpus", "0"], ["kfold", "--workers", "2", "--gpus", "0,1"]])
def test_gpus_on_a_machine_without_a_gpu_is_a_clear_usage_error(tmp_path, args):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(iris_recipe("r", epochs=1))
    no_gpu = tmp_path / "bin"  # no nvidia-smi on the PATH, no CUDA_VISIBLE_DEVICES
    no_gpu.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PATH=str(no_gpu), TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(TESTS.parent))
    done = _cli(args[0], str(recipe), *args[1:], "-o", "out", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert "this machine has no GPU that CUDA can see" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()

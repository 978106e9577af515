"""Callbacks (chapter 7.2): named learning-rate schedules land in history.csv, their typos are
located recipe errors; an optimizer takes a Keras schedule object; TensorBoard's event files
(with histograms) are in the run and in MLflow; the model picture is drawn or skipped with a
note; the 7.2/7.3.1 recipes train; checkpoints, TensorBoard logs and schedules survive --resume."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.errors import RecipeError
from dlrun.recipe.loading import load_recipe
from dlrun.report import Reporter
from dlrun.training.schedules import SCHEDULES, learning_rate_function, schedule_problems

RECIPE = """\
name: {name}
data:
  source: embedded
  name: digits
  limit: 120
  split:
    test: {{fraction: 0.25}}
    validation: {{fraction: 0.25}}
preprocessing:
  - {{transform: reshape, shape: [64]}}
model:
  layers:
    - Dense: {{units: 8, activation: relu}}
    - Dense: {{units: 10, activation: softmax}}
compile:
  optimizer: {{Adam: {{learning_rate: {lr}}}}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
fit:
  epochs: {epochs}
  batch_size: 32
  callbacks:
{callbacks}
"""
# One example of each named schedule, with the arguments it needs.
EXAMPLES = {
    "constant": {},
    "step_decay": {"drop": 0.5, "every": 2},
    "exponential": {"rate": 0.8},
    "cosine": {"epochs": 3, "min_learning_rate": 0.001},
    "linear_warmup": {"warmup_epochs": 2, "start_factor": 0.2},
    "warmup_cosine": {"warmup_epochs": 1, "epochs": 4},
}


class Notes(Reporter):
    def __init__(self):
        self.notes = []

    def note(self, text):
        self.notes.append(text)


@pytest.fixture(scope="module")
def output_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")  # one MLflow store for the module


def _recipe(folder: Path, name: str, callbacks: list[str], lr: float = 0.01, epochs: int = 4) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name, lr=lr, epochs=epochs,
                                  callbacks="\n".join(f"    - {c}" for c in callbacks)))
    return path


def _history(run_dir) -> list[dict]:
    with open(Path(run_dir) / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_schedule_has_an_example():
    assert set(EXAMPLES) == set(SCHEDULES)
    for name, args in EXAMPLES.items():
        assert schedule_problems({"schedule": name, **args}) == [], name


def test_schedule_values():
    def rates(name, base=0.1, **args):
        f = learning_rate_function({"schedule": name, **args}, base)
        return [round(f(epoch), 8) for epoch in range(5)]

    assert rates("constant") == [0.1] * 5
    assert rates("step_decay", drop=0.5, every=2) == [0.1, 0.1, 0.05, 0.05, 0.025]
    assert rates("exponential", rate=0.5) == [0.1, 0.05, 0.025, 0.0125, 0.00625]
    assert rates("cosine", epochs=2) == [0.1, 0.05, 0.0, 0.0, 0.0]
    assert rates("linear_warmup", warmup_epochs=2, start_factor=0.0) == [0.0, 0.05, 0.1, 0.1, 0.1]
    assert rates("warmup_cosine", warmup_epochs=1, epochs=3, start_factor=0.5) == [0.05, 0.1, 0.05, 0.0, 0.0]
    assert rates("step_decay", drop=0.1, every=1, initial_learning_rate=1.0) == [1.0, 0.1, 0.01, 0.001, 0.0001]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_schedule_learning_rate_per_epoch_in_history(tmp_path, output_root, name):
    args = "".join(f", {k}: {v}" for k, v in EXAMPLES[name].items())
    recipe = _recipe(tmp_path, f"lr_{name}", [f"LearningRateScheduler: {{schedule: {name}{args}}}"])
    summary = dlrun.train(recipe, output_root=output_root)
    assert summary.status == "FINISHED"
    expected = learning_rate_function({"schedule": name, **EXAMPLES[name]}, 0.01)
    logged = [float(row["learning_rate"]) for row in _history(summary.run_dir)]
    assert logged == pytest.approx([expected(epoch) for epoch in range(4)], rel=1e-5)  # epoch 1 is Keras' 0


def _problems(tmp_path, callback: str, optimizer: str = "{Adam: {learning_rate: 0.01}}") -> str:
    recipe = _recipe(tmp_path, "bad", [callback])
    text = recipe.read_text().replace("{Adam: {learning_rate: 0.01}}", optimizer)
    recipe.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    return str(info.value)


def test_schedule_typos_are_located_recipe_errors(tmp_path):
    text = _problems(tmp_path, "LearningRateScheduler: {schedule: step_decya, drop: 0.5, every: 2}")
    assert "bad.yaml:23:31: " in text and "fit.callbacks[0].LearningRateScheduler.schedule: unknown schedule " \
        "'step_decya' — did you mean 'step_decay'?" in text
    text = _problems(tmp_path, "LearningRateScheduler: {schedule: step_decay, dorp: 0.5, every: 0}")
    assert "LearningRateScheduler.dorp: schedule step_decay has no argument 'dorp' — did you mean 'drop'?" in text
    assert "LearningRateScheduler.every: every must be at least 1" in text
    assert "needs the argument 'drop'" not in text  # the typo is reported once
    text = _problems(tmp_path, "LearningRateScheduler: {schedule: cosine, epochs: 2.5}")
    assert "epochs must be an integer, not 2.5" in text
    text = _problems(tmp_path, "LearningRateScheduler: {drop: 0.5}")
    assert "LearningRateScheduler needs 'schedule'" in text


def test_keras_schedule_objects_are_checked_and_exclusive_with_a_scheduler(tmp_path):
    text = _problems(tmp_path, "TerminateOnNaN",
                     "{SGD: {learning_rate: {ExponentialDecay: {initial_learning_rate: 0.1, decay_step: 3}}}}")
    assert "compile.optimizer.SGD.learning_rate.ExponentialDecay.decay_step: ExponentialDecay has no argument " \
           "'decay_step' — did you mean 'decay_steps'?" in text
    text = _problems(tmp_path, "LearningRateScheduler: {schedule: constant}",
                     "{SGD: {learning_rate: {CosineDecay: {initial_learning_rate: 0.1, decay_steps: 3}}}}")
    assert "fit.callbacks[0].LearningRateScheduler: the optimizer's learning_rate is already a schedule" in text


def test_optimizer_learning_rate_as_keras_schedule(tmp_path, output_root):
    import keras

    recipe = _recipe(tmp_path, "exp_decay", ["CSVLogger", "TerminateOnNaN"], epochs=2)
    recipe.write_text(recipe.read_text().replace(
        "{Adam: {learning_rate: 0.01}}",
        "{Adam: {learning_rate: {ExponentialDecay: {initial_learning_rate: 0.01, decay_steps: 2, decay_rate: 0.5}}}}"))
    summary = dlrun.train(recipe, output_root=output_root)
    assert summary.status == "FINISHED"
    model = keras.saving.load_model(Path(summary.run_dir) / "model.keras", safe_mode=True)
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.ExponentialDecay)
    steps = int(model.optimizer.iterations.numpy())  # batches trained, across both epochs
    assert steps >= 2
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01 * 0.5 ** (steps / 2))
    rows = list(csv.DictReader(open(Path(summary.run_dir) / "keras_log.csv")))  # CSVLogger's default file
    assert [row["epoch"] for row in rows] == ["0", "1"]


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """Integer word-index sequences like Keras' IMDB with 2,000 words (padded to 500)."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "sequences.npz"
    np.savez(path, x=rng.integers(1, 2000, (48, 40)), y=rng.integers(0, 2, 48),
             x_test=rng.integers(1, 2000, (16, 40)), y_test=rng.integers(0, 2, 16))
    return path


def test_tensorboard_recipe_logs_histograms_to_run_and_mlflow(recipes_dir, output_root, sequences):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = (f"data={{source: npz, path: {sequences}, x_test: x_test, y_test: y_test, "
            f"split: {{test: dataset, validation: {{fraction: 0.25}}}}}}")
    summary = dlrun.train(recipes_dir / "imdb_conv1d_tensorboard.yaml", ["fit.epochs=2", data],
                          output_root=output_root)
    assert summary.status == "FINISHED"
    board = Path(summary.run_dir) / "tensorboard"
    events = sorted(board.glob("*/events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"train", "validation"}
    accumulator = EventAccumulator(str(board / "train"), size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["tensors"]
    histograms = [t for t in tags if t.endswith("/histogram")]
    assert any("/embed/embeddings/" in t for t in histograms) and len(histograms) >= 5, tags
    assert [e.step for e in accumulator.Tensors(histograms[0])] == [0, 1]  # one per epoch
    assert "epoch_loss" in tags

    client = MlflowClient(summary.tracking_uri)
    logged = {a.path for a in client.list_artifacts(summary.run_id, "tensorboard/train")}
    assert {f"tensorboard/train/{p.name}" for p in events if p.parent.name == "train"} <= logged


def test_callbacks_example_recipe(recipes_dir, output_root):
    summary = dlrun.train(recipes_dir / "callbacks_example.yaml",
                          ["fit.epochs=2", "data.limit=300"], output_root=output_root)
    assert summary.status == "FINISHED"
    run_dir = Path(summary.run_dir)
    assert (run_dir / "checkpoints" / "best.keras").stat().st_size > 0  # ModelCheckpoint, best only
    assert len((run_dir / "keras_log.csv").read_text().splitlines()) == 3  # CSVLogger: header + 2
    rows = _history(run_dir)
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([0.001, 0.001])  # ReduceLROnPlateau's


@pytest.fixture
def fresh_picture_notes(monkeypatch):
    """The missing-picture note is said once per process: start these tests as a fresh process."""
    import dlrun.model.plot

    monkeypatch.setattr(dlrun.model.plot, "_said", set())


def test_separable_convnet_recipe(recipes_dir, output_root, fresh_picture_notes):
    reporter = Notes()
    summary = dlrun.train(recipes_dir / "separable_convnet.yaml", ["fit.epochs=1", "data.limit=200"],
                          output_root=output_root, reporter=reporter)
    assert summary.status == "FINISHED" and 0 <= summary.metrics["test_accuracy"] <= 1
    from dlrun.model.plot import missing

    picture = Path(summary.run_dir) / "model.png"
    if missing() is None:
        assert picture.stat().st_size > 0
    else:  # pydot or graphviz is not here: one note, no picture
        assert not picture.exists()
        skipped = [n for n in reporter.notes if "model picture" in n]
        assert skipped == [f"model picture (model.png) skipped: {missing()}"]


def test_model_picture_check_is_cached_and_cheap(fresh_picture_notes):
    from dlrun.model.plot import missing, save_model_picture

    missing()
    start = time.perf_counter()
    for _ in range(1000):
        missing()
    assert time.perf_counter() - start < 0.01
    if missing() is not None:
        notes = []
        assert save_model_picture(object(), Path("/nonexistent/model.png"), notes.append) is None
        assert len(notes) == 1


DLRUN = str(Path(sys.executable).with_name("dlrun"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_checkpoint_tensorboard_and_schedule_survive_resume(tmp_path):
    """SIGTERM after a few epochs, --resume: the best .keras, the TensorBoard logs (every epoch,
    no step twice) and the schedule's rate per epoch are those of an uninterrupted run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = _recipe(tmp_path, "resumed", [
        "ModelCheckpoint: {filepath: best.keras, save_best_only: true}",
        "TensorBoard: {histogram_freq: 1}",
        "LearningRateScheduler: {schedule: step_decay, drop: 0.5, every: 3}",
    ], epochs=10)
    recipe.write_text(recipe.read_text().replace("batch_size: 32", "batch_size: 2"))  # slow enough to stop
    proc = subprocess.Popen([DLRUN, "train", str(recipe), "-o", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        files = list(tmp_path.glob("runs/resumed/*/history.csv"))
        if files and len(files[0].read_text().splitlines()) > 3:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    (run_dir,) = (tmp_path / "runs" / "resumed").iterdir()
    done = len(_history(run_dir))
    assert 3 <= done < 10 and (run_dir / "best.keras").is_file()

    resumed = subprocess.run([DLRUN, "train", "--resume", str(run_dir), "-o", str(tmp_path)],
                             capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = _history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([0.01 * 0.5 ** (e // 3) for e in range(10)])
    assert (run_dir / "best.keras").stat().st_size > 0
    accumulator = EventAccumulator(str(run_dir / "tensorboard" / "train"), size_guidance={"tensors": 0})
    accumulator.Reload()
    steps = sorted(e.step for e in accumulator.Tensors("epoch_loss"))
    assert steps == list(range(10)), steps
    assert math.isfinite(float(rows[-1]["val_loss"]))

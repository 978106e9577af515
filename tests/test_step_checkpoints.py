"""Checkpoints inside an epoch (``fit.checkpoint_steps``): a SIGTERM in the middle of an epoch
saves the state where it stops, and --resume finishes that epoch from the next batch — ending,
in deterministic mode, exactly as a twin that was never interrupted (and never saved mid-epoch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.errors import RecipeError, ResumeError, TrainingDiverged

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import resumable_iris_recipe  # noqa: E402
from _runs import dlrun_cli as _dlrun, only_run_dir as _run_dir, saved_weights as _weights  # noqa: E402
from _runs import spy_on_saves  # noqa: E402

PLUGIN = "_interrupt_once"  # tests/_interrupt_once.py: InterruptOnce at one (epoch, batch)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("steps")


def _recipe(root: Path, name: str, fit: str = "", callbacks: str = "", plugins: str = "") -> Path:
    path = root / f"{name}.yaml"
    path.write_text(resumable_iris_recipe(name, epochs=4, fit=fit, callbacks=callbacks, plugins=plugins))
    return path


def _history(run_dir: Path) -> list[str]:
    return (run_dir / "history.csv").read_text().splitlines()


def test_sigterm_mid_epoch_then_resume_finishes_that_epoch_exactly(root):
    recipe = _recipe(root, "mid_epoch", fit="checkpoint_steps: 7", plugins=PLUGIN,
                     callbacks=f"InterruptOnce: {{epoch: 2, batch: 20, marker: {root / 'sent'}}}")
    killed = _dlrun(root, "train", str(recipe))
    assert killed.returncode == 143, killed.stderr
    run_dir = _run_dir(root, "mid_epoch")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "KILLED"
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    # Saved where the signal stopped it, not at the last multiple of 7: 1 epoch and 20 batches.
    assert (state["epoch"], state["batch"]) == (1, 20), state
    assert len(_history(run_dir)) == 2  # header + epoch 1: the cut-short epoch is not a row

    # A forced resume may not change the batch size under a checkpoint that counts batches.
    recipe.write_text(recipe.read_text().replace("batch_size: 2", "batch_size: 4"))
    refused = _dlrun(root, "train", "--resume", str(run_dir), "--force")
    assert refused.returncode == 2 and "after 20 batches of 2 in epoch 2" in refused.stderr, refused.stderr
    recipe.write_text(recipe.read_text().replace("batch_size: 4", "batch_size: 2"))

    resumed = _dlrun(root, "train", "--resume", str(run_dir), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch 1 and 20 batches of epoch 2" in resumed.stderr
    summary = json.loads(resumed.stdout)

    # The twin saves only whole epochs and never stops: same order of batches, same numbers.
    twin = _dlrun(root, "train", str(_recipe(root, "twin")), "--json")
    assert twin.returncode == 0, twin.stderr
    assert summary["metrics"] == json.loads(twin.stdout)["metrics"]
    assert all(np.array_equal(a, b) for a, b in zip(_weights(run_dir), _weights(_run_dir(root, "twin"))))
    # Epoch 2's row holds whole-epoch training metrics: its first 20 batches' totals were restored.
    assert _history(run_dir) == _history(_run_dir(root, "twin"))

    from mlflow import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    steps = [m.step for m in client.get_metric_history(summary["run_id"], "loss")]
    assert sorted(steps) == [1, 2, 3, 4]
    assert client.get_run(summary["run_id"]).info.status == "FINISHED"


def test_checkpoints_inside_epochs_are_saved_every_n_batches_and_replace_each_other(root, monkeypatch):
    recipe = _recipe(root, "every_n", fit="checkpoint_steps: 5\ncheckpoint_every: 0")  # and every epoch
    saved = spy_on_saves(monkeypatch)
    result = dlrun.train(recipe, ["fit.epochs=2", "fit.keep_checkpoint=true"], output_root=root)
    assert result.status == "FINISHED"
    batches = 48  # 96 training rows in batches of 2
    expected = [(0, b) for b in range(5, batches, 5)] + [(1, 0)] + [(1, b) for b in range(5, batches, 5)] + [(2, 0)]
    assert saved == expected
    left = sorted(p.name for p in (Path(result.run_dir) / "checkpoint").iterdir())
    assert left == ["best-2-0.npz", "state.json", "weights-2.weights.h5"]  # earlier states removed


def test_a_nan_inside_an_epoch_keeps_the_last_finite_step_checkpoint(root):
    recipe = _recipe(root, "nan_steps", fit="checkpoint_steps: 3")
    with pytest.raises(TrainingDiverged, match=r"last good checkpoint \(after epoch \d+( and \d+ batches of epoch "
                                               r"\d+)?\) is kept") as caught:
        dlrun.train(recipe, ["compile.optimizer={SGD: {learning_rate: 1e6}}", "deterministic=false"],
                    output_root=root)
    folder = Path(caught.value.run_summary.run_dir) / "checkpoint"
    state = json.loads((folder / "state.json").read_text())
    import h5py

    with h5py.File(folder / state["weights"]) as saved:
        arrays = []
        saved.visititems(lambda name, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    assert arrays and all(np.isfinite(a).all() for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating))


def test_checkpoint_steps_need_checkpoints(root):
    recipe = _recipe(root, "no_checkpoints", fit="checkpoint: false\ncheckpoint_steps: 10")
    with pytest.raises(RecipeError, match="checkpoint_steps.*needs checkpoint: true"):
        dlrun.load(recipe)


def test_a_mid_epoch_checkpoint_refuses_a_new_batch_size_before_anything_changes(root, tmp_path):
    from dlrun.training.checkpoints import CHECKPOINT_DIR, STATE_FILE
    from dlrun.training.resume import prepare_resume

    recipe = _recipe(root, "batch_guard", fit="checkpoint_steps: 5")
    result = dlrun.train(recipe, ["fit.epochs=1", "fit.keep_checkpoint=true"], output_root=root)
    run_dir = Path(result.run_dir)
    state_file = run_dir / CHECKPOINT_DIR / STATE_FILE
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "epoch": 0, "batch": 10}))  # as if stopped mid-epoch 1
    status = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**status, "status": "KILLED"}))
    with pytest.raises(ResumeError, match="after 10 batches of 2 in epoch 1; fit.batch_size is now 8"):
        prepare_resume(str(run_dir), root, None, ["fit.batch_size=8"], force=True)
    assert prepare_resume(str(run_dir), root, None, [], force=False).run_dir == run_dir


# --------------------------------------------------------------------------- streamed data, fine-tuning

@pytest.fixture
def stop_once(tmp_path):
    """Overrides that interrupt an in-process run once at (epoch, batch), as a signal would."""
    return lambda epoch, batch: [f"plugins=[{PLUGIN}]", f"fit.callbacks=[{{InterruptOnce: {{epoch: {epoch}, "
                                                        f"batch: {batch}, marker: {tmp_path / 'stopped'}, signal: false}}}}]"]


def _interrupt_then_resume(recipe: Path, overrides: list[str], root: Path, expect: str, job_dir: str = "."):
    from dlrun.training.runner import RunInterrupted

    with pytest.raises(RunInterrupted):
        dlrun.train(recipe, overrides, output_root=root)
    (run_dir,) = (root / "runs").glob("*/*")
    state = json.loads((run_dir / job_dir / "checkpoint" / "state.json").read_text())
    assert state["batch"] > 0, state
    notes: list[str] = []
    from dlrun.report import Reporter

    class Notes(Reporter):
        def note(self, text):
            notes.append(text)

    summary = dlrun.train(None, output_root=root, resume=run_dir, reporter=Notes())
    assert summary.status == "FINISHED"
    assert any(expect in note for note in notes), notes
    return summary, run_dir


@pytest.mark.parametrize("steps_per_epoch", [6, None])
def test_a_time_series_resumes_mid_epoch_exactly(recipes_dir, tmp_path, stop_once, steps_per_epoch):
    """Windows are streamed in passes whose order depends only on the seed: the resumed job
    continues the stream at the batch where it stopped, with or without steps_per_epoch."""
    import pandas as pd

    rows = 300
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"Date Time": pd.date_range("2009-01-01", periods=rows, freq="10min").astype(str),
                          "T (degC)": np.sin(np.arange(rows) / 20) + rng.normal(0, 0.1, rows),
                          "p (mbar)": rng.normal(1000, 5, rows)})
    table.to_csv(tmp_path / "weather.csv", index=False)
    recipe = recipes_dir / "jena_dense.yaml"
    overrides = [f"data.path={tmp_path / 'weather.csv'}", "data.lookback=12", "data.step=1", "data.delay=2",
                 "data.train={start: 0, end: 150}", "data.validation={start: 150, end: 220}", "data.test={start: 220}",
                 "deterministic=true", "fit.batch_size=8", "fit.epochs=3", "fit.validation_steps=2",
                 "fit.checkpoint_steps=2", f"fit.steps_per_epoch={steps_per_epoch or 'null'}"]
    summary, run_dir = _interrupt_then_resume(recipe, [*overrides, *stop_once(2, 3)], tmp_path / "out",
                                              "resumed after epoch 1 and 3 batches of epoch 2 (stage 1)")
    twin = dlrun.train(recipe, overrides, output_root=tmp_path / "twin")
    twin_dir = Path(twin.run_dir)
    assert summary.metrics == twin.metrics
    assert all(np.array_equal(a, b) for a, b in zip(_weights(run_dir), _weights(twin_dir)))
    assert _history(run_dir) == _history(twin_dir)  # epochs 1–3, each once, equal
    import keras

    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    per_epoch = steps_per_epoch or 17  # 136 training windows in batches of 8
    assert int(model.optimizer.iterations.numpy()) == 3 * per_epoch  # the resumed epoch trained its rest only


def test_the_fine_tuning_stage_resumes_mid_epoch(recipes_dir, tmp_path, stop_once):
    from test_data_images import write_image_folder

    folder = write_image_folder(tmp_path / "cats_and_dogs_small", {"train": 6, "validation": 3, "test": 3})
    overrides = [f"data.path={folder}", "data.image_size=[32, 32]", "model.layers[4].Pretrained.weights=null",
                 "fit.epochs=1", "fit.fine_tune.epochs=2", "fit.batch_size=2", "fit.checkpoint_steps=4",
                 *stop_once(2, 2)]
    summary, run_dir = _interrupt_then_resume(recipes_dir / "vgg16_fine_tuning.yaml", overrides, tmp_path / "out",
                                              "resumed after epoch 1 and 2 batches of epoch 2 (stage 2)")
    assert len(_history(run_dir)) == 4  # stage one's epoch, then two fine-tuning epochs
    facts = json.loads((run_dir / "model_facts.json").read_text())
    assert any("trainable" in key for key in facts), facts  # the fine-tuning stage was set up again


def test_a_kfold_run_resumes_its_fold_mid_epoch(root, tmp_path, stop_once):
    recipe = _recipe(tmp_path, "folds_mid_epoch", fit="checkpoint_steps: 4")
    overrides = ["evaluation={protocol: kfold, k: 3}", "fit.epochs=3", *stop_once(2, 5)]
    summary, run_dir = _interrupt_then_resume(recipe, overrides, tmp_path / "out",
                                              "fold_1: resumed after epoch 1 and 5 batches of epoch 2 (stage 1)",
                                              job_dir="folds/fold_1")
    assert summary.protocol == "kfold" and np.isfinite(summary.metrics["cv_val_loss_mean"])
    for fold in ("fold_1", "fold_2", "fold_3"):
        assert len(_history(run_dir / "folds" / fold)) == 4, fold

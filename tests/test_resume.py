"""Runs that survive: SIGTERM mid-run then --resume ends as an uninterrupted twin (deterministic
mode); K-fold resumes with its finished folds kept; a NaN loss fails clearly; a changed recipe,
a finished run and a live run are not resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.errors import ResumeError, TrainingDiverged

DLRUN = str(Path(sys.executable).with_name("dlrun"))
sys.path.insert(0, str(Path(__file__).parent))
from _recipes import resumable_iris_recipe  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("resume")


def _recipe(root: Path, name: str, epochs: int = 12) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(resumable_iris_recipe(name, epochs=epochs))
    return path


def _dlrun(*args, **kwargs):
    return subprocess.run([DLRUN, *args], capture_output=True, text=True, env=ENV, timeout=300, **kwargs)


def _terminate_after(args: list[str], history_glob: str, rows: int, root: Path) -> subprocess.CompletedProcess:
    """Start ``dlrun args``; SIGTERM it once a history file matching ``history_glob`` has ``rows`` epochs."""
    proc = subprocess.Popen([DLRUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        files = list(root.glob(history_glob))
        if files and len(files[0].read_text().splitlines()) > rows:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run_dir(root: Path, name: str) -> Path:
    (path,) = (root / "runs" / name).iterdir()
    return path


def _weights(run_dir: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(run_dir / "model.keras", safe_mode=True).get_weights()


def test_sigterm_then_resume_ends_as_an_uninterrupted_twin(root):
    recipe = _recipe(root, "twin_a")
    killed = _terminate_after([ "train", str(recipe), "-o", str(root)], "runs/twin_a/*/history.csv", 4, root)
    assert killed.returncode == 143, killed.stderr
    run_dir = _run_dir(root, "twin_a")
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "KILLED"
    done = len((run_dir / "history.csv").read_text().splitlines()) - 1
    assert 4 <= done < 12 and (run_dir / "checkpoint" / "state.json").is_file()

    resumed = _dlrun("train", "--resume", str(run_dir), "-o", str(root), "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["run_id"] == status["mlflow_run_id"] and summary["run_dir"] == str(run_dir)
    assert f"resumed after epoch {done}" in resumed.stderr

    twin = _dlrun("train", str(_recipe(root, "twin_b")), "-o", str(root), "--json")
    assert twin.returncode == 0, twin.stderr
    assert json.loads(twin.stdout)["metrics"] == summary["metrics"]
    assert all(np.array_equal(a, b) for a, b in zip(_weights(run_dir), _weights(_run_dir(root, "twin_b"))))
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == list(range(1, 13))

    from mlflow import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    steps = [m.step for m in client.get_metric_history(summary["run_id"], "val_loss")]
    assert sorted(steps) == list(range(1, 13))  # continued: no gap, no step twice
    assert client.get_run(summary["run_id"]).info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(summary["run_id"])}
    assert "history.csv" in logged and "checkpoint" not in logged and ".lock" not in logged


def test_kfold_resume_keeps_finished_folds(root):
    recipe = _recipe(root, "folds", epochs=6)
    killed = _terminate_after(["kfold", str(recipe), "--k", "3", "-o", str(root)],
                              "runs/folds/*/folds/fold_2/history.csv", 2, root)
    assert killed.returncode == 143, killed.stderr
    run_dir = _run_dir(root, "folds")
    fold_1 = run_dir / "folds" / "fold_1" / "history.csv"
    before = fold_1.stat().st_mtime_ns
    resumed = _dlrun("train", "--resume", str(run_dir), "-o", str(root), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "fold_1: finished before the interruption, kept" in resumed.stderr
    assert "fold_2: resumed after epoch" in resumed.stderr
    assert fold_1.stat().st_mtime_ns == before
    metrics = json.loads(resumed.stdout)["metrics"]
    assert np.isfinite(metrics["cv_val_loss_mean"])
    for fold in ("fold_1", "fold_2", "fold_3"):
        assert json.loads((run_dir / "folds" / fold / "run.json").read_text())["status"] == "FINISHED"
        assert len((run_dir / "folds" / fold / "history.csv").read_text().splitlines()) == 7


def test_a_changed_recipe_is_refused_with_a_diff_unless_forced(root):
    recipe = _recipe(root, "changed", epochs=3)
    first = dlrun.train(recipe, output_root=root)
    status_file = Path(first.run_dir) / "run.json"
    status = json.loads(status_file.read_text())
    with pytest.raises(ResumeError, match="finished; there is nothing to resume"):
        dlrun.train(None, output_root=root, resume=first.run_dir)
    status_file.write_text(json.dumps({**status, "status": "KILLED"}))  # as if preempted
    recipe.write_text(recipe.read_text().replace("epochs: 3", "epochs: 4"))
    with pytest.raises(ResumeError, match=r"(?s)recipe changed.*-  epochs: 3.*\+  epochs: 4"):
        dlrun.train(None, output_root=root, resume=first.run_id)  # by MLflow run id
    forced = dlrun.train(None, output_root=root, resume=first.run_id, force=True)
    assert forced.status == "FINISHED" and forced.metrics["epochs_run"] == 4
    assert (Path(first.run_dir) / "recipe.before-resume-1.yaml").is_file()


def test_a_live_run_is_not_resumed_twice(root):
    from dlrun.training.resume import locked_run

    with locked_run(root):
        with pytest.raises(ResumeError, match="still running in another process"):
            with locked_run(root):
                pass
    with locked_run(root):  # released when the run ends
        pass


def test_a_nan_loss_fails_naming_epoch_and_batch_and_keeps_the_last_checkpoint(root):
    recipe = _recipe(root, "diverges", epochs=5)
    # Finite for the first epoch, then the weights blow up: a NaN in epoch 2 or later.
    overrides = ["compile.optimizer={SGD: {learning_rate: 1e6}}", "deterministic=false", "fit.callbacks=[CSVLogger]"]
    with pytest.raises(TrainingDiverged, match=r"the loss became (nan|inf) at epoch \d+, batch \d+") as caught:
        dlrun.train(recipe, overrides, output_root=root)
    summary = caught.value.run_summary
    assert summary.status == "FAILED"
    run_dir = Path(summary.run_dir)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "FAILED"
    rows = (run_dir / "history.csv").read_text().splitlines()[1:] if (run_dir / "history.csv").exists() else []
    assert all("nan" not in row.lower() for row in rows)  # the cut-short epoch is not recorded…
    logged = (run_dir / "keras_log.csv").read_text().splitlines()[1:] if (run_dir / "keras_log.csv").exists() else []
    assert len(logged) == len(rows) and all("nan" not in row.lower() for row in logged)  # …nor seen by callbacks
    assert not (run_dir / "model.keras").exists()

    from mlflow import MlflowClient

    run = MlflowClient(summary.tracking_uri).get_run(summary.run_id)
    assert run.info.status == "FAILED" and "batch" in run.data.tags["dlrun.error"]


def test_a_full_disk_is_reported_before_anything_is_written(root, monkeypatch, tmp_path):
    from dlrun.errors import UsageError

    monkeypatch.setenv("DLRUN_MIN_FREE_MB", str(10**12))  # more than any disk has free
    with pytest.raises(UsageError, match="MB free on the disk of the output folder"):
        dlrun.train(_recipe(root, "full_disk", epochs=1), output_root=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_resume_that_waited_while_another_finished_the_run_does_not_run_it_again(root):
    """B reads the run (KILLED) and gets ready (data, model: tests/_wait_for_go.py holds it
    there); meanwhile A resumes the run to FINISHED; B then takes the lock, sees the run has
    finished and stops: test_loss logged once, one logged model."""
    from mlflow import MlflowClient

    from dlrun.training.runner import RunInterrupted

    recipe = root / "race.yaml"
    recipe.write_text(resumable_iris_recipe("race", epochs=4, plugins="_interrupt_once, _wait_for_go",
                                            callbacks=f"InterruptOnce: {{epoch: 2, batch: 3, marker: "
                                                      f"{root / 'race.sent'}, signal: false}}"))
    with pytest.raises(RunInterrupted):
        dlrun.train(recipe, output_root=root)
    run_dir = _run_dir(root, "race")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), str(Path(__file__).parent)])}
    go = root / "race.go"
    waiting = subprocess.Popen([DLRUN, "train", "--resume", str(run_dir), "-o", str(root)], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**env, "DLRUN_TEST_WAIT_FOR": str(go)})
    try:
        deadline = time.monotonic() + 240
        while not Path(f"{go}.waiting").exists() and waiting.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Path(f"{go}.waiting").exists(), waiting.communicate()[1]
        first = subprocess.run([DLRUN, "train", "--resume", str(run_dir), "-o", str(root), "--json"],
                               capture_output=True, text=True, env=env, timeout=300)
        assert first.returncode == 0, first.stderr
        go.write_text("go")
        out, err = waiting.communicate(timeout=240)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 2, err
    assert f"run {run_dir} finished in another process while this one was getting ready" in err
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "FINISHED" and status["resumed"] == ["KILLED"]
    client = MlflowClient(status["tracking_uri"])
    run_id = status["mlflow_run_id"]
    assert len(client.get_metric_history(run_id, "test_loss")) == 1
    assert client.get_run(run_id).info.status == "FINISHED"
    experiment = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
    assert len(models) == 1


def test_a_run_held_by_a_live_process_is_refused_before_any_work(root):
    from dlrun.training.resume import locked_run, prepare_resume

    run_dir = root / "held"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "RUNNING"}))
    with locked_run(run_dir):
        with pytest.raises(ResumeError, match=rf"run {run_dir} is still running in another process "
                                              rf"\(pid {os.getpid()}\)"):
            prepare_resume(str(run_dir), root, None, [], force=False)


@pytest.mark.parametrize("damage", ["weights", "state"])
def test_a_damaged_checkpoint_is_refused_before_the_run_is_touched(root, damage):
    """A checkpoint whose weights or state file is corrupt (a full disk, a bad copy) is named with
    the way out; the run keeps its status and history (it used to fail with h5py's bare OSError,
    or start again from epoch 1 without a word)."""
    recipe = _recipe(root, f"damaged_{damage}", epochs=2)
    first = dlrun.train(recipe, ["fit.keep_checkpoint=true"], output_root=root)
    run_dir = Path(first.run_dir)
    status = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**status, "status": "KILLED"}))  # as if preempted
    (state,) = (run_dir / "checkpoint").glob("state.json")
    target = state if damage == "state" else state.parent / json.loads(state.read_text())["weights"]
    target.write_bytes(b"\x00not what was saved")
    kept = {name: (run_dir / name).read_bytes() for name in ("run.json", "history.csv", "metrics.json")}
    with pytest.raises(ResumeError, match=rf"{run_dir / 'checkpoint'} is damaged \(.*\), so the run cannot "
                                          r"continue from it: remove that folder"):
        dlrun.train(None, output_root=root, resume=first.run_dir)
    assert {name: (run_dir / name).read_bytes() for name in kept} == kept

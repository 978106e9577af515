"""When a job saves its training state (``fit.checkpoint_every``): at most every N seconds at an
epoch's end, always at the end of training and where a stop lands; a run killed outright between
two time-based saves resumes from the last one and, in deterministic mode, ends as an
uninterrupted twin, with every epoch once in MLflow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import dlrun

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import resumable_iris_recipe  # noqa: E402
from _runs import dlrun_cli as _dlrun, only_run_dir as _run_dir, saved_weights as _weights  # noqa: E402
from _runs import spy_on_saves  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("policy")


def _recipe(root: Path, name: str, epochs: int, fit: str = "", callbacks: str = "", plugins: str = "") -> Path:
    path = root / f"{name}.yaml"
    path.write_text(resumable_iris_recipe(name, epochs=epochs, fit=fit, callbacks=callbacks, plugins=plugins))
    return path


def _steps(summary: dict, key: str = "val_loss") -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(summary["tracking_uri"]).get_metric_history(summary["run_id"], key))


@pytest.mark.parametrize(("every", "expected"), [(0, [(1, 0), (2, 0), (3, 0), (4, 0)]), (3600, [(4, 0)])])
def test_checkpoint_every_sets_how_often_an_epoch_is_saved(root, monkeypatch, every, expected):
    saved = spy_on_saves(monkeypatch)
    recipe = _recipe(root, f"every_{every}", epochs=4)
    result = dlrun.train(recipe, [f"fit.checkpoint_every={every}", "fit.keep_checkpoint=true"], output_root=root)
    assert result.status == "FINISHED"
    assert saved == expected  # 0: every epoch; an hour: only the end of training
    from mlflow import MlflowClient

    history = MlflowClient(result.tracking_uri).get_metric_history(result.run_id, "val_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # every epoch reached MLflow, once


def test_a_stop_saves_where_it_lands_whatever_the_interval(root, monkeypatch, tmp_path):
    from dlrun.training.runner import RunInterrupted

    saved = spy_on_saves(monkeypatch)
    recipe = _recipe(root, "stop_saves", epochs=4, plugins="_interrupt_once",
                     callbacks=f"InterruptOnce: {{epoch: 3, batch: 5, marker: {tmp_path / 'sent'}, signal: false}}")
    with pytest.raises(RunInterrupted):
        dlrun.train(recipe, ["fit.checkpoint_every=3600"], output_root=root)
    assert saved == [(2, 5)]  # no epoch was due; the stop at batch 5 of epoch 3 saved there
    run_dir = _run_dir(root, "stop_saves")
    summary = dlrun.train(None, output_root=root, resume=run_dir)
    assert summary.status == "FINISHED"
    assert [int(line.split(",")[0]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]] == [1, 2, 3, 4]


def test_a_stop_during_validation_lets_it_finish_and_saves_the_whole_epoch(root, monkeypatch, tmp_path):
    from dlrun.training.runner import RunInterrupted

    saved = spy_on_saves(monkeypatch)
    recipe = _recipe(root, "stop_validating", epochs=4, plugins="_interrupt_once",
                     callbacks=f"InterruptOnce: {{epoch: 2, batch: 0, marker: {tmp_path / 'sent'}, signal: false, "
                               f"validation: true}}")
    with pytest.raises(RunInterrupted):
        dlrun.train(recipe, ["fit.checkpoint_every=3600"], output_root=root)
    assert saved == [(2, 0)]  # epoch 2 validated in full, recorded and saved
    run_dir = _run_dir(root, "stop_validating")
    assert len((run_dir / "history.csv").read_text().splitlines()) - 1 == 2
    summary = dlrun.train(None, output_root=root, resume=run_dir)
    assert summary.status == "FINISHED"
    assert [int(line.split(",")[0]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_run_killed_between_two_time_based_saves_resumes_exactly_from_the_last(root):
    # Epoch 2 ends 6 s after the start: the 5-second save falls due there and nowhere else before
    # the SIGKILL in epoch 4 (iris epochs take well under a second).
    recipe = _recipe(root, "killed", epochs=6, fit="checkpoint_every: 5", plugins="_pause_once, _interrupt_once",
                     callbacks=f"PauseOnce: {{epoch: 2, seconds: 6, marker: {root / 'paused'}}}\n"
                               f"InterruptOnce: {{epoch: 4, batch: 10, marker: {root / 'killed'}, signals: [SIGKILL]}}")
    killed = _dlrun(root, "train", str(recipe))
    assert killed.returncode == -9, killed.stderr
    run_dir = _run_dir(root, "killed")
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == (2, 0)  # the last time-based save, not epoch 3
    assert len((run_dir / "history.csv").read_text().splitlines()) - 1 == 3  # epoch 3 was trained
    status = json.loads((run_dir / "run.json").read_text())
    mlflow_run = {"tracking_uri": status["tracking_uri"], "run_id": status["mlflow_run_id"]}
    assert _steps(mlflow_run) == [1, 2]  # MLflow never holds an epoch the checkpoint lacks

    resumed = _dlrun(root, "train", "--resume", str(run_dir), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch 2 (stage 1)" in resumed.stderr
    summary = json.loads(resumed.stdout)
    twin = _dlrun(root, "train", str(_recipe(root, "killed_twin", epochs=6)), "--json")
    assert twin.returncode == 0, twin.stderr
    assert summary["metrics"] == json.loads(twin.stdout)["metrics"]
    assert all(np.array_equal(a, b) for a, b in zip(_weights(run_dir), _weights(_run_dir(root, "killed_twin"))))
    assert [int(line.split(",")[0]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]] == \
        [1, 2, 3, 4, 5, 6]
    assert _steps(summary) == [1, 2, 3, 4, 5, 6]  # epoch 3 trained again, logged once

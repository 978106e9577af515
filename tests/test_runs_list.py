"""dlrun runs: lists and filters runs from their directories and the MLflow store, says where they
disagree, and finds runs killed with SIGKILL (stale) — as a user runs it, after real runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402

DLRUN = [sys.executable, "-m", "dlrun"]


def dlrun(*args, cwd, check: int = 0) -> subprocess.CompletedProcess:
    out = subprocess.run([*DLRUN, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert out.returncode == check, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def listing(cwd, *args) -> list[dict]:
    return json.loads(dlrun("runs", "-o", "out", "--json", *args, cwd=cwd).stdout)["runs"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("runs")
    (cwd / "a.yaml").write_text(iris_recipe("iris_a", epochs=2))
    (cwd / "b.yaml").write_text(iris_recipe("iris_b", epochs=2))
    for recipe in ("a.yaml", "b.yaml", "a.yaml"):
        dlrun("train", recipe, "-o", "out", "--json", cwd=cwd)
    dlrun("kfold", "b.yaml", "--k", "2", "-o", "out", "--json", cwd=cwd)
    return cwd


def test_lists_newest_first_and_filters(runs):
    rows = listing(runs)
    assert [r["recipe"] for r in rows] == ["iris_b", "iris_a", "iris_b", "iris_a"]
    assert [r["protocol"] for r in rows] == ["kfold", "holdout", "holdout", "holdout"]
    assert all(r["status"] == "FINISHED" and r["mlflow_status"] == "FINISHED" and not r["disagreement"] for r in rows)
    assert set(rows[1]["metrics"]) == {"test_loss", "test_accuracy"}
    assert set(rows[0]["metrics"]) == {"cv_val_loss_mean", "cv_val_accuracy_mean"}
    assert [r["recipe"] for r in listing(runs, "--recipe", "iris_a")] == ["iris_a", "iris_a"]
    assert [r["recipe"] for r in listing(runs, "--recipe", "a.yaml", "-n", "1")] == ["iris_a"]
    assert listing(runs, "--status", "failed") == []
    out = dlrun("runs", "-o", "out", "--experiment", "iris_c", cwd=runs, check=2)
    assert "did you mean" in out.stderr
    table = dlrun("runs", "-o", "out", cwd=runs).stdout.splitlines()
    assert table[0].split()[:4] == ["run", "recipe", "protocol", "status"] and len(table) == 5


def test_says_where_the_run_directory_and_mlflow_disagree(runs):
    from mlflow import MlflowClient

    row = listing(runs, "--recipe", "iris_a", "-n", "1")[0]
    client = MlflowClient(f"sqlite:///{runs / 'out' / 'mlflow.db'}")
    client.update_run(row["mlflow_run_id"], status="RUNNING")  # what a crash during the final upload leaves
    try:
        (again,) = listing(runs, "--recipe", "iris_a", "-n", "1")
        assert again["disagreement"] == "finished on disk, running in MLflow"
        assert "finished on disk, running in MLflow" in dlrun("runs", "-o", "out", cwd=runs).stdout
    finally:
        client.set_terminated(row["mlflow_run_id"], "FINISHED")


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_stale_and_can_be_marked(tmp_path):
    (tmp_path / "slow.yaml").write_text(iris_recipe("iris_slow", epochs=400).replace("batch_size: 16",
                                                                                      "batch_size: 1"))
    proc = subprocess.Popen([*DLRUN, "train", "slow.yaml", "-o", "out", "--quiet"], cwd=tmp_path,
                            start_new_session=True)
    deadline = time.time() + 240
    history = None
    while time.time() < deadline:
        history = next((tmp_path / "out" / "runs" / "iris_slow").glob("*/history.csv"), None) \
            if (tmp_path / "out" / "runs" / "iris_slow").is_dir() else None
        if history is not None and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert history is not None, "the run never wrote an epoch"
    (row,) = listing(tmp_path)
    assert row["status"] == "STALE" and row["mlflow_status"] == "RUNNING"
    assert json.loads((history.parent / "run.json").read_text())["status"] == "RUNNING"
    out = dlrun("runs", "-o", "out", "--mark-stale", cwd=tmp_path)
    assert "marked KILLED (stale)" in out.stdout
    (row,) = listing(tmp_path)
    assert row["status"] == "KILLED" and row["mlflow_status"] == "KILLED" and row["disagreement"] is None
    assert "died" in json.loads((history.parent / "run.json").read_text())["error"]

"""Eight ``dlrun train`` processes started at once against one fresh store — the embedded
SQLite file (its creation is serialized by a file lock) and a real ``mlflow server`` on
loopback — all finish with eight complete runs in distinct run directories.

The figures (wall time, locked-store retries) are printed: run with ``-s`` to see them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _mlflow_server import MlflowServer  # noqa: E402
from _recipes import iris_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
JOBS = 8
EPOCHS = 3
RECIPE = iris_recipe("iris_many", epochs=EPOCHS, units=8, optimizer="adam")


def _train_many(tmp_path: Path, extra: list[str]) -> tuple[list[dict], float]:
    """Start JOBS trainings at once (one seed each); wait; return their --json summaries."""
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dlrun", "train", "recipe.yaml", "-o", "out", "--json", "--seed", str(seed), *extra],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        for seed in range(JOBS)
    ]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    elapsed = time.perf_counter() - started
    failures = [(p.returncode, err[-2000:]) for p, (_, err) in zip(procs, outputs) if p.returncode != 0]
    assert not failures, failures
    for _, err in outputs:
        assert "tracking is offline" not in err and "database is locked" not in err
    return [json.loads(out) for out, _ in outputs], elapsed


def _check_store(uri: str, summaries: list[dict]) -> int:
    """Eight complete runs; returns the locked-store retries the jobs reported."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("iris_many")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == JOBS
    assert sorted(r.info.run_id for r in runs) == sorted(s["run_id"] for s in summaries)
    assert len({s["run_dir"] for s in summaries}) == JOBS  # run directories never collide
    params = None
    retries = 0
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(1, EPOCHS + 1))
        assert "test_accuracy" in run.data.metrics
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"history.csv", "recipe.yaml", "run.json"} <= names
        assert "model.keras" not in names  # stored once in MLflow: as the run's logged model
        assert run.data.params["fit.epochs"] == str(EPOCHS)
        current = {k: v for k, v in run.data.params.items() if k != "seed"}
        assert params is None or current == params
        params = current
        retries += int(run.data.tags.get("dlrun.store_lock_retries", 0))
    for summary in summaries:
        status = json.loads((Path(summary["run_dir"]) / "run.json").read_text())
        assert status["status"] == "FINISHED" and status["mlflow_run_id"] == summary["run_id"]
    return retries


def test_eight_concurrent_runs_on_a_fresh_sqlite_store(tmp_path):
    summaries, elapsed = _train_many(tmp_path, [])
    uri = f"sqlite:///{(tmp_path / 'out' / 'mlflow.db').resolve()}"
    assert {s["tracking_uri"] for s in summaries} == {uri}
    retries = _check_store(uri, summaries)
    print(f"\n{JOBS} concurrent runs on a fresh SQLite store: {elapsed:.1f}s, {retries} locked-store retries")


def test_eight_concurrent_runs_on_a_tracking_server(tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    try:
        summaries, elapsed = _train_many(tmp_path, ["--tracking-uri", server.uri])
        retries = _check_store(server.uri, summaries)
    finally:
        server.stop()
    errors = sum(' HTTP/1.1" 5' in line for line in server.log.read_text().splitlines())
    print(f"\n{JOBS} concurrent runs on an mlflow server: {elapsed:.1f}s, {retries} locked-store retries, "
          f"{errors} server 5xx answers (retried by the client)")

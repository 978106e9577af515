"""Jobs that leave one process: K-fold's folds on local worker processes (the same numbers as
serial in deterministic mode), on a local Ray and on submitit's local executor, with their
nested MLflow runs read back; a worker killed with SIGKILL fails only its fold and --resume
runs only that one; SIGTERM stops the workers safely; parallel tuning trials land in one study;
configurations other hosts could not reach are refused before anything is created."""

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
from _recipes import resumable_iris_recipe  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def dlrun(*args, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlrun", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env or ENV, timeout=timeout)


def _recipe(folder: Path, name: str, epochs: int, fit: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(resumable_iris_recipe(name, epochs=epochs, fit=fit))
    return path


def _run_dir(root: Path, name: str) -> Path:
    (path,) = (root / "runs" / name).iterdir()
    return path


def _status(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def _children(summary: dict) -> dict:
    """The MLflow runs nested under the run, by fold name."""
    from mlflow import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary['run_id']}'")
    return {run.data.tags["dlrun.fold"]: run for run in children}


def _popen(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlrun", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=ENV)


def _wait_for_epochs(proc: subprocess.Popen, folds: list[Path], epochs: int) -> None:
    """Until every fold's history.csv has ``epochs`` rows (or the process ended)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        rows = [len(f.read_text().splitlines()) - 1 if f.is_file() else 0 for f in folds]
        if min(rows) >= epochs:
            return
        time.sleep(0.05)
    raise AssertionError(f"the folds never reached {epochs} epochs: {proc.communicate()[1][-2000:]}")


# --------------------------------------------------------------------------- local workers


@pytest.mark.slow
def test_local_workers_give_the_serial_fold_metrics(tmp_path):
    recipe = _recipe(tmp_path, "det", epochs=3)
    serial = dlrun("kfold", recipe, "--k", "2", "-o", "serial", "--json", cwd=tmp_path)
    assert serial.returncode == 0, serial.stderr
    local = dlrun("kfold", recipe, "--k", "2", "-o", "local", "--workers", "2", "--json", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    serial, local = json.loads(serial.stdout), json.loads(local.stdout)

    assert local["metrics"] == serial["metrics"]
    for fold in ("fold_1", "fold_2"):
        a, b = (Path(s["run_dir"]) / "folds" / fold for s in (serial, local))
        assert json.loads(a.joinpath("metrics.json").read_text()) == json.loads(b.joinpath("metrics.json").read_text())
        assert a.joinpath("history.csv").read_text() == b.joinpath("history.csv").read_text()
    # Two worker processes, not this one; the recipe's identity does not say where it ran.
    pids = {_status(Path(local["run_dir"]) / "folds" / f)["pid"] for f in ("fold_1", "fold_2")}
    assert len(pids) == 2
    assert (Path(local["run_dir"]) / "recipe.yaml").read_text() == (Path(serial["run_dir"]) / "recipe.yaml").read_text()
    assert _status(Path(local["run_dir"]))["executor"]["executor"] == "local"

    from mlflow import MlflowClient

    parents = {s["run_id"]: MlflowClient(s["tracking_uri"]).get_run(s["run_id"]) for s in (serial, local)}
    assert parents[local["run_id"]].data.tags["dlrun.executor"] == "local"
    assert parents[local["run_id"]].data.tags["dlrun.workers"] == "2"
    assert parents[serial["run_id"]].data.tags["dlrun.executor"] == "serial"
    assert parents[local["run_id"]].data.params == parents[serial["run_id"]].data.params
    children = _children(local)
    assert sorted(children) == ["fold_1", "fold_2"]
    assert all(run.info.status == "FINISHED" for run in children.values())
    assert "val_loss" in children["fold_1"].data.metrics


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_fails_its_fold_and_resume_runs_only_it(tmp_path):
    recipe = _recipe(tmp_path, "crash", epochs=30, fit="checkpoint_every: 0")  # a state saved before the kill
    proc = _popen("kfold", recipe, "--k", "2", "--workers", "2", "-o", "out", "--json", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "out" / "runs").glob("crash/*/folds/fold_2/history.csv")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    run_dir = _run_dir(tmp_path / "out", "crash")
    _wait_for_epochs(proc, [run_dir / "folds" / "fold_2" / "history.csv"], 2)
    os.kill(_status(run_dir / "folds" / "fold_2")["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 1, err
    failed = json.loads(out)
    assert failed["status"] == "FAILED" and "fold_2 (worker killed by SIGKILL)" in failed["error"]
    assert _status(run_dir)["status"] == "FAILED"
    assert _status(run_dir / "folds" / "fold_1")["status"] == "FINISHED"
    crashed = _status(run_dir / "folds" / "fold_2")
    assert (crashed["status"], crashed["error"]) == ("FAILED", "worker killed by SIGKILL")
    children = _children(failed)
    assert children["fold_1"].info.status == "FINISHED" and children["fold_2"].info.status == "FAILED"
    assert children["fold_2"].data.tags["dlrun.error"] == "worker killed by SIGKILL"

    kept = (run_dir / "folds" / "fold_1" / "history.csv").stat().st_mtime_ns
    resumed = dlrun("train", "--resume", run_dir, "-o", "out", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "fold_1: finished before the interruption, kept" in resumed.stderr
    assert "fold_2: resumed after epoch" in resumed.stderr
    assert (run_dir / "folds" / "fold_1" / "history.csv").stat().st_mtime_ns == kept
    assert _status(run_dir)["status"] == "FINISHED"
    history = (run_dir / "folds" / "fold_2" / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == list(range(1, 31))
    assert {k: r.info.status for k, r in _children(json.loads(resumed.stdout)).items()} == \
        {"fold_1": "FINISHED", "fold_2": "FINISHED"}


@pytest.mark.slow
def test_sigterm_stops_the_workers_at_a_safe_point_and_the_run_resumes(tmp_path):
    recipe = _recipe(tmp_path, "stop", epochs=30)
    proc = _popen("kfold", recipe, "--k", "2", "--workers", "2", "-o", "out", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "out" / "runs").glob("stop/*/folds/fold_2")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    run_dir = _run_dir(tmp_path / "out", "stop")
    _wait_for_epochs(proc, [run_dir / "folds" / f / "history.csv" for f in ("fold_1", "fold_2")], 2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 143, err
    assert _status(run_dir)["status"] == "KILLED"
    for fold in ("fold_1", "fold_2"):
        assert _status(run_dir / "folds" / fold)["status"] == "KILLED"
        assert (run_dir / "folds" / fold / "checkpoint" / "state.json").is_file()
    resumed = dlrun("train", "--resume", run_dir, "-o", "out", "--workers", "2", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "FINISHED" and summary["run_dir"] == str(run_dir)
    for fold in ("fold_1", "fold_2"):
        history = (run_dir / "folds" / fold / "history.csv").read_text().splitlines()
        assert [int(line.split(",")[0]) for line in history[1:]] == list(range(1, 31))


# --------------------------------------------------------------------------- Ray and Slurm


@pytest.mark.slow
def test_ray_runs_the_folds_as_tasks_of_a_local_two_cpu_instance(tmp_path):
    ray = pytest.importorskip("ray")
    import dlrun

    recipe = _recipe(tmp_path, "on_ray", epochs=2)
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, configure_logging=False)
    try:
        summary = dlrun.kfold(recipe, k=2, output_root=tmp_path / "out", executor="ray").to_dict()
    finally:
        ray.shutdown()
    assert summary["status"] == "FINISHED"
    children = _children(summary)
    assert sorted(children) == ["fold_1", "fold_2"]
    assert all(run.info.status == "FINISHED" and "val_loss" in run.data.metrics for run in children.values())
    run_dir = Path(summary["run_dir"])
    assert os.getpid() not in {_status(run_dir / "folds" / fold)["pid"] for fold in children}  # Ray's processes


@pytest.mark.slow
def test_submitit_local_executor_runs_the_folds_as_an_array(tmp_path):
    pytest.importorskip("submitit")
    recipe = _recipe(tmp_path, "on_slurm", epochs=2)
    profile = tmp_path / "local.yaml"
    profile.write_text("executor: slurm\ncluster: local\ntime: 10\n")
    done = dlrun("kfold", recipe, "--k", "2", "-o", "out", "--executor", "slurm", "--executor-profile", profile,
                 "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    children = _children(summary)
    assert sorted(children) == ["fold_1", "fold_2"]
    assert all(run.info.status == "FINISHED" and "val_loss" in run.data.metrics for run in children.values())
    logs = list((tmp_path / "out" / "slurm").glob("*/*_log.out"))
    assert len(logs) == 2 and "[fold_" in "".join(p.read_text() for p in logs)


# --------------------------------------------------------------------------- tuning


TUNE = """\
name: par_tune
seed: 1
data: {source: embedded, name: iris, shuffle: true, split: {test: {fraction: 0.2}, validation: {fraction: 0.25}}}
preprocessing: [{transform: standardize}]
model:
  layers:
    - Dense: {units: 8, activation: relu}
    - Dense: {units: 3, activation: softmax}
compile: {optimizer: {adam: {learning_rate: 0.01}}, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
fit: {epochs: 2, batch_size: 16, checkpoint: false}
tracking: {log_model: false}
search:
  space:
    model.layers[0].Dense.units: {choice: [4, 8, 12]}
    fit.batch_size: {choice: [8, 16]}
  sampler: grid
  budget: {trials: 5}
"""


@pytest.mark.slow
def test_parallel_trials_land_in_one_study_none_lost_or_run_twice(tmp_path):
    (tmp_path / "par_tune.yaml").write_text(TUNE)
    done = dlrun("tune", "par_tune.yaml", "--workers", "2", "-o", "out", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    trials = result["trials"]
    assert result["trials_run"] == 5 and [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    assert {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}, trials  # the median rule still prunes
    points = [tuple(sorted(t["params"].items())) for t in trials]
    assert len(set(points)) == 5  # five of the six grid points, none twice
    assert len({t["run_id"] for t in trials}) == 5

    import optuna

    summaries = optuna.get_all_study_summaries(result["storage"])
    assert [s.study_name for s in summaries] == [result["study"]] and summaries[0].n_trials == 5
    from mlflow import MlflowClient

    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["parent_run_id"])
    assert parent.data.tags["dlrun.executor"] == "local" and parent.data.tags["dlrun.workers"] == "2"
    nested = client.search_runs([parent.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
    assert sorted(r.info.run_id for r in nested) == sorted(t["run_id"] for t in trials)
    workers = sorted((tmp_path / "out" / "tuning" / result["study"]).glob("worker_*"))
    assert [_status(w)["status"] for w in workers] == ["FINISHED", "FINISHED"]
    assert len({_status(w)["pid"] for w in workers}) == 2


# --------------------------------------------------------------------------- refusals


def _fake_sbatch(tmp_path: Path) -> dict:
    """A PATH with an ``sbatch`` that must never be called: the refusal comes first."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "sbatch").write_text("#!/bin/sh\necho called >> \"$0.calls\"\nexit 1\n")
    (folder / "sbatch").chmod(0o755)
    return {**ENV, "PATH": f"{folder}{os.pathsep}{ENV['PATH']}"}


@pytest.mark.parametrize("args, says", [
    (["--executor", "ray", "--ray-address", "10.255.255.1:6379"],
     ["MLflow tracking store defaults to a SQLite file", "--tracking-uri", "local filesystem", "--output-root"]),
    (["--executor", "ray", "--ray-address", "ray://10.255.255.1:10001", "--tracking-uri", "http://localhost:5000"],
     ["names this host as localhost", "local filesystem"]),
    (["--executor", "slurm", "--tracking-uri", "sqlite:////tmp/mlflow.db"],
     ["is a file on this host's disk", "local filesystem"]),
    (["--executor", "slurm", "--tracking-uri", "http://mlflow-server:5000"], ["local filesystem"]),
    (["--workers", "3", "--gpus", "0,1"], ["--workers 3 with 2 GPU(s)"]),
    (["--executor", "dask"], ["'dask' is not one of serial, local, ray, slurm"]),
])
def test_a_configuration_other_hosts_cannot_reach_is_refused_with_nothing_created(tmp_path, args, says):
    (tmp_path / "r.yaml").write_text(resumable_iris_recipe("r", epochs=1))
    env = _fake_sbatch(tmp_path)
    done = dlrun("kfold", "r.yaml", "-o", "out", *args, "--json", cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    for text in says:
        assert text in done.stderr
    assert json.loads(done.stdout)["status"] == "FAILED"
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "bin" / "sbatch.calls").exists()


def test_a_profile_for_another_executor_or_with_a_typo_is_refused(tmp_path):
    from dlrun.errors import UsageError
    from dlrun.execution.options import ExecutorOptions, make_executor

    profile = tmp_path / "p.yaml"
    profile.write_text("executor: slurm\npartiton: gpu\n")
    with pytest.raises(UsageError, match="'partiton' is not a slurm setting — did you mean 'partition'"):
        make_executor(ExecutorOptions("slurm", profile=profile), output_root=tmp_path, tracking_uri=None)
    with pytest.raises(UsageError, match="a profile for 'slurm', not for --executor ray"):
        make_executor(ExecutorOptions("ray", profile=profile), output_root=tmp_path, tracking_uri=None)


def test_a_missing_extra_names_its_pip_install(tmp_path, monkeypatch):
    from dlrun.errors import UsageError
    from dlrun.execution.options import ExecutorOptions, make_executor

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UsageError, match=r"pip install 'dlrun\[ray\]'"):
        make_executor(ExecutorOptions("ray"), output_root=tmp_path, tracking_uri=None)
    with pytest.raises(UsageError, match=r"pip install 'dlrun\[slurm\]'"):
        make_executor(ExecutorOptions("slurm"), output_root=tmp_path, tracking_uri=None)


def test_a_job_spec_round_trips_and_only_known_kinds_run(tmp_path):
    from dlrun.errors import UsageError
    from dlrun.execution.worker import JOB_KINDS
    from dlrun.training.jobspec import KINDS, JobSpec, signal_cause

    assert set(JOB_KINDS) == set(KINDS)
    spec = JobSpec(kind="fold", name="fold_1", job_dir=str(tmp_path / "fold_1"), recipe={"name": "x"}, base_dir=None,
                   output_root=str(tmp_path), tracking_uri=None, experiment="x", seed=1, devices={"gpus": ["1"]})
    assert JobSpec.read(spec.write()) == spec and JobSpec.read(tmp_path / "fold_1") == spec
    (tmp_path / "bad.json").write_text('{"kind": "shell", "name": "x", "command": "rm -rf /"}')
    with pytest.raises(UsageError, match="not a job spec this dlrun runs"):
        JobSpec.read(tmp_path / "bad.json")
    assert signal_cause(-signal.SIGKILL) == "worker killed by SIGKILL"
    assert signal_cause(137) == "worker killed by SIGKILL" and signal_cause(1) == "worker exited with code 1"

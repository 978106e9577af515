"""A tracking store that can never work is refused before anything is created (exit 2), and the
message names the store actually used — the default one under the output root, MLFLOW_TRACKING_URI,
--tracking-uri or the one a resumed run recorded — while a store that is only away (a server that
refuses) still sends the run offline (tests/test_track_outage.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dlrun
from dlrun.errors import UsageError

pytest.importorskip("mlflow")

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import iris_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DLRUN = [sys.executable, "-m", "dlrun"]


def dlrun_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT)}
    full.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([*DLRUN, *args], cwd=cwd, env={**full, **(env or {})}, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def _recipe(folder: Path, name: str = "iris_store") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(iris_recipe(name, epochs=1))
    return path


def _nothing_run(out: Path) -> None:
    assert not (out / "runs").exists(), sorted(p.name for p in (out / "runs").rglob("*"))


@pytest.mark.slow  # a dlrun subprocess
def test_a_corrupt_default_store_is_refused_naming_the_output_root_not_the_tracking_options(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mlflow.db").write_text("these are notes, not a database\n")
    result = dlrun_cli("train", str(_recipe(tmp_path)), "-o", "out", "--json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert f"{out / 'mlflow.db'} is not an SQLite database" in line
    assert f"the output root {out}" in line and "neither --tracking-uri nor MLFLOW_TRACKING_URI is set" in line
    assert "check --tracking-uri" not in line and "Traceback" not in result.stderr
    record = json.loads(result.stdout)
    assert record["exit_code"] == 2 and record["status"] == "FAILED"
    _nothing_run(out)
    assert (out / "mlflow.db").read_text() == "these are notes, not a database\n"  # untouched


@pytest.mark.slow  # a dlrun subprocess
def test_a_deleted_experiment_is_refused_before_the_run_exists(tmp_path):
    from mlflow import MlflowClient

    out = tmp_path / "out"
    out.mkdir()
    uri = f"sqlite:///{out}/mlflow.db"
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("iris_store"))
    result = dlrun_cli("train", str(_recipe(tmp_path)), "-o", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "MLflow experiment 'iris_store'" in result.stderr and "is deleted" in result.stderr
    assert "mlflow experiments restore --experiment-id" in result.stderr and "Traceback" not in result.stderr
    _nothing_run(out)
    assert client.search_runs([client.get_experiment_by_name("iris_store").experiment_id],
                              run_view_type=3) == []  # ViewType.ALL: no run, deleted or not


def test_stores_that_cannot_work_are_usage_errors_naming_where_the_uri_came_from(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    recipe = _recipe(tmp_path)

    folder_root = tmp_path / "folder_store"
    (folder_root / "mlflow.db").mkdir(parents=True)  # a folder where the database should be
    with pytest.raises(UsageError, match=r"embedded store under the output root .*: .*mlflow\.db is a folder, not a database file"):
        dlrun.train(recipe, output_root=folder_root)
    _nothing_run(folder_root)

    file_parent = tmp_path / "a_file"
    file_parent.write_text("x")
    with pytest.raises(UsageError, match=r"given by --tracking-uri\): .*a_file is a file, so the folder .* cannot be made"):
        dlrun.train(recipe, output_root=tmp_path / "o1", tracking_uri=f"sqlite:///{file_parent}/sub/mlflow.db")
    _nothing_run(tmp_path / "o1")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "htp://localhost:5000")  # a typo of http
    with pytest.raises(UsageError, match=r"htp://localhost:5000 \(from the environment variable MLFLOW_TRACKING_URI"
                                         r"\): .*unsupported URI .* check MLFLOW_TRACKING_URI"):
        dlrun.train(recipe, output_root=tmp_path / "o2")
    _nothing_run(tmp_path / "o2")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any file: permissions cannot be tested as root")
def test_an_unwritable_store_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    from dlrun.track.mlflow_store import Tracker

    Tracker(f"sqlite:///{out}/mlflow.db", "warmup", out / "mlartifacts")  # a real store…
    (out / "mlflow.db").chmod(0o444)  # …that this user may not write
    with pytest.raises(UsageError, match=r"mlflow\.db cannot be read and written by this user"):
        dlrun.train(_recipe(tmp_path), output_root=out)
    _nothing_run(out)


def test_a_resumed_run_whose_recorded_store_cannot_work_names_its_run_json(tmp_path):
    first = dlrun.train(_recipe(tmp_path), output_root=tmp_path / "out")
    status_file = Path(first.run_dir) / "run.json"
    status = json.loads(status_file.read_text())
    status_file.write_text(json.dumps({**status, "status": "KILLED", "tracking_uri": "nosuchscheme://gone"}))
    before = status_file.read_text()
    with pytest.raises(UsageError, match=rf"nosuchscheme://gone \(recorded in {status_file}\): .* give --tracking-uri"):
        dlrun.train(None, output_root=tmp_path / "out", resume=first.run_dir)
    assert status_file.read_text() == before  # the run was not touched

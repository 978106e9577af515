"""RunDir: layout, safe names, no collisions, history that survives a crash, run.json."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from dlrun.errors import DlrunError, UsageError
from dlrun.track.rundir import RunDir, environment_info, safe_name


def test_create_layout(tmp_path):
    run = RunDir.create(tmp_path, "boston housing", run_name="k=4")
    assert run.path.is_dir()
    assert run.path.parent == tmp_path / "runs" / "boston_housing"
    date, time, hexpart, name = run.path.name.split("-", 3)
    datetime.strptime(f"{date}-{time}", "%Y%m%d-%H%M%S")
    assert len(hexpart) == 6 and int(hexpart, 16) >= 0
    assert name == "k_4"
    assert RunDir.create(tmp_path, "e").path.name.count("-") == 2  # no name, no suffix


def test_relative_output_root_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RunDir.create(Path("out"), "e")
    assert run.path.is_absolute()
    assert run.path.is_relative_to(tmp_path / "out")


def test_fifty_quick_runs_never_collide(tmp_path):
    paths = {RunDir.create(tmp_path, "e", run_name="same").path for _ in range(50)}
    assert len(paths) == 50
    assert all(p.is_dir() for p in paths)


@pytest.mark.parametrize(
    "experiment, run_name",
    [("../../escape", "../../x"), ("/abs/path", "a/../../b"), ("..", ".."), (".hidden", "..\\..\\w")],
)
def test_names_stay_inside_output_root(tmp_path, experiment, run_name):
    root = tmp_path / "out"
    run = RunDir.create(root, experiment, run_name=run_name)
    resolved = run.path.resolve()
    assert resolved.is_relative_to((root / "runs").resolve())
    assert len(resolved.relative_to((root / "runs").resolve()).parts) == 2
    assert not run.path.parent.name.startswith(".")
    child = run.child("../../" + run_name)
    assert child.path.resolve().is_relative_to(resolved)


def test_safe_name():
    assert safe_name("../etc/passwd") == "_etc_passwd"
    assert safe_name("..") == "run"
    assert safe_name("", default="experiment") == "experiment"
    assert safe_name("imdb lstm (v2)") == "imdb_lstm_v2_"
    assert safe_name("a.b-c_d") == "a.b-c_d"
    assert len(safe_name("x" * 500)) <= 80


def test_unwritable_output_root_is_a_usage_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError) as info:
        RunDir.create(blocker / "out", "e")
    assert isinstance(info.value, DlrunError)
    assert str(blocker / "out") in str(info.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_output_root_is_a_usage_error(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="ro"):
            RunDir.create(root, "e")
    finally:
        root.chmod(0o700)


def test_child_and_files(tmp_path):
    run = RunDir.create(tmp_path, "e")
    fold = run.child("folds/fold_1")
    assert fold.path == run.path / "folds" / "fold_1"
    assert isinstance(fold, RunDir) and fold.path.is_dir()
    p = fold.write_json("metrics/final.json", {"mae": 2.5, "nested": {"a": [1, 2]}})
    assert json.loads(p.read_text()) == {"mae": 2.5, "nested": {"a": [1, 2]}}
    y = run.write_yaml("recipe.yaml", {"name": "x", "b": 1, "a": [1e-3, "no"]})
    assert list(yaml.safe_load(y.read_text())) == ["name", "b", "a"]  # order kept
    assert yaml.safe_load(y.read_text())["a"] == [1e-3, "no"]
    t = run.write_text("command.txt", "dlrun train x.yaml\n")
    assert t.read_text() == "dlrun train x.yaml\n"
    f = run.file("plots/deep/curve.png")
    assert f.parent.is_dir() and not f.exists()
    with pytest.raises(ValueError):
        run.file("../outside.txt")
    with pytest.raises(ValueError):
        run.file("/etc/passwd")


def test_write_json_converts_numpy_and_paths(tmp_path):
    np = pytest.importorskip("numpy")
    run = RunDir.create(tmp_path, "e")
    run.write_json("x.json", {"f": np.float32(0.5), "i": np.int64(3), "a": np.arange(3), "p": tmp_path})
    assert run.read_json("x.json") == {"f": 0.5, "i": 3, "a": [0, 1, 2], "p": str(tmp_path)}


def test_history_appended_per_epoch(tmp_path):
    run = RunDir.create(tmp_path, "e")
    for epoch in range(1, 4):
        run.append_history(epoch, {"loss": 1.0 / epoch, "val_loss": 2.0 / epoch, "mae": math.nan})
        lines = (run.path / "history.csv").read_text().splitlines()
        assert len(lines) == epoch + 1  # written at once, not at the end
    assert lines[0] == "epoch,loss,val_loss,mae"
    assert lines[1].startswith("1,")
    hist = run.read_history()
    assert list(hist) == ["loss", "val_loss", "mae"]
    assert hist["loss"] == [1.0, 0.5, 1.0 / 3]  # full precision
    assert all(math.isnan(v) for v in hist["mae"])


def test_history_new_key_widens_header(tmp_path):
    run = RunDir.create(tmp_path, "e")
    run.append_history(1, {"loss": 1.0})
    run.append_history(2, {"loss": 0.5, "learning_rate": 1e-3})
    hist = run.read_history()
    assert hist["loss"] == [1.0, 0.5]
    assert math.isnan(hist["learning_rate"][0]) and hist["learning_rate"][1] == 1e-3


def test_history_survives_a_crash(tmp_path):
    """A process killed after two epochs (mid-write of the third) leaves two readable rows."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from dlrun.track.rundir import RunDir\n"
        "run = RunDir(Path(sys.argv[1]))\n"
        "for e in (1, 2):\n"
        "    run.append_history(e, {'loss': 1.0 / e, 'val_loss': 2.0 / e})\n"
        "with open(run.path / 'history.csv', 'a') as fh:\n"
        "    fh.write('3,0.33')\n"  # a row cut short by the crash
        "    fh.flush()\n"
        "    os._exit(137)\n"
    )
    run = RunDir.create(tmp_path, "e")
    proc = subprocess.run([sys.executable, "-c", code, str(run.path)], capture_output=True)
    assert proc.returncode == 137, proc.stderr.decode()
    hist = RunDir(run.path).read_history()
    assert hist == {"loss": [1.0, 0.5], "val_loss": [2.0, 1.0]}


def test_history_resumes_in_a_new_process(tmp_path):
    run = RunDir.create(tmp_path, "e")
    run.append_history(1, {"loss": 1.0})
    again = RunDir(run.path)  # e.g. a resumed job
    again.append_history(2, {"loss": 0.5})
    assert again.read_history() == {"loss": [1.0, 0.5]}
    assert (run.path / "history.csv").read_text().count("epoch") == 1


def test_read_history_empty(tmp_path):
    assert RunDir.create(tmp_path, "e").read_history() == {}


def test_status_lifecycle_keeps_fields(tmp_path):
    run = RunDir.create(tmp_path, "e")
    first = run.write_status("RUNNING", command="dlrun train r.yaml", seed=42)
    assert first["status"] == "RUNNING" and "end_time" not in first
    run.write_status("RUNNING", mlflow_run_id="abc")
    info = run.write_status("FAILED", error="ValueError: boom")
    on_disk = json.loads((run.path / "run.json").read_text())
    assert on_disk == info
    assert info["status"] == "FAILED"
    assert info["command"] == "dlrun train r.yaml" and info["seed"] == 42
    assert info["mlflow_run_id"] == "abc" and info["error"] == "ValueError: boom"
    start = datetime.fromisoformat(info["start_time"])
    end = datetime.fromisoformat(info["end_time"])
    assert start.utcoffset().total_seconds() == 0 and end >= start
    assert info["start_time"] == first["start_time"]
    assert info["duration_s"] >= 0
    with pytest.raises(ValueError):
        run.write_status("DONE")


@pytest.mark.parametrize("status", ["FINISHED", "KILLED"])
def test_terminal_statuses(tmp_path, status):
    run = RunDir.create(tmp_path, "e")
    run.write_status("RUNNING")
    assert run.write_status(status)["status"] == status
    assert run.read_status()["end_time"]


def test_environment_info_reads_metadata_only():
    before = set(sys.modules)
    info = environment_info()
    imported = set(sys.modules) - before
    assert not {"tensorflow", "keras", "mlflow", "sklearn", "pydantic"} & imported
    assert info["python"].count(".") == 2
    assert info["hostname"] and info["platform"]
    for name in ("dlrun", "tensorflow", "keras", "mlflow", "numpy", "scikit-learn", "pydantic"):
        assert name in info["packages"]
    assert info["packages"]["dlrun"]


def test_importing_track_modules_stays_light():
    code = (
        "import sys\n"
        "import dlrun.track, dlrun.track.rundir, dlrun.track.mlflow_store, dlrun.track.plots\n"
        "import dlrun.track._writes, dlrun.track._keras_model\n"
        "heavy = {'mlflow', 'tensorflow', 'keras', 'matplotlib'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Strings from a recipe that become paths never lead out of the output root: refused with a
located recipe error, or made into one safe folder name."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from dlrun.errors import ModelBuildError, RecipeError
from dlrun.recipe.loading import load_recipe
from dlrun.recipe.schema import KerasObject
from dlrun.track.rundir import RunDir

HOSTILE = ["../../etc", "/abs/olute", "..\\..\\x", "a\x00b", "..", ".", "", "~", "x" * 5000, "a/../../b",
           "-rf", ".hidden", "ok name ✓", "CON", "a\nb"]

IRIS = """\
name: iris_paths
data:
  source: embedded
  name: iris
  shuffle: true
  split: {{test: {{fraction: 0.2}}, validation: {{fraction: 0.2}}}}
preprocessing: [{{transform: standardize}}]
model:
  layers:
    - Dense: {{units: 3, activation: softmax}}
compile:
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
fit:
  epochs: 1
  batch_size: 32
  callbacks: {callbacks}
tracking: {tracking}
"""


def _write(tmp_path: Path, callbacks="[]", tracking="{}") -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(IRIS.format(callbacks=callbacks, tracking=tracking))
    return recipe


@pytest.mark.parametrize("name", HOSTILE)
def test_run_directories_stay_under_the_output_root(tmp_path, name):
    root = tmp_path / "out"
    for experiment, run_name in [(name, None), ("exp", name), (name, name)]:
        run = RunDir.create(root, experiment, run_name).path
        assert run.parent.parent == root.absolute() / "runs"
        assert run.resolve().is_relative_to(root.resolve() / "runs")
        assert len(run.name.encode()) < 255 and len(run.parent.name.encode()) < 255
        child = RunDir(run).child(f"folds/{name}").path
        assert child.resolve().is_relative_to(run.resolve())


@pytest.mark.parametrize("name", ["../../etc", "/abs", "..\\x", "a b", ".hidden", "x" * 101, "a/b"])
def test_hostile_recipe_names_are_refused(tmp_path, name):
    recipe = _write(tmp_path)
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe, [f"name={name}"])
    assert str(caught.value).startswith("--set #1") and "name:" in str(caught.value)


@pytest.mark.parametrize("field", ["experiment", "run_name"])
@pytest.mark.parametrize("value", ['"a\\0b"', '"a\\nb"', '"\\x7f"', '"\\t"'])
def test_control_characters_in_tracking_names_are_refused(tmp_path, field, value):
    recipe = _write(tmp_path, tracking=f"{{{field}: {value}}}")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    assert "r.yaml:18:" in str(caught.value) and f"tracking.{field}: control characters" in str(caught.value)


@pytest.mark.parametrize("callback, problem", [
    ("ModelCheckpoint: {filepath: ../../x.keras}", "goes up with '..'"),
    ("ModelCheckpoint: {filepath: ckpt/../../../x.keras}", "goes up with '..'"),
    ("ModelCheckpoint: {filepath: /tmp/x.keras}", "is absolute"),
    ("CSVLogger: {filename: '..\\x.csv'}", "contains a backslash"),
    ("TensorBoard: {log_dir: \"a\\0b\"}", "contains a NUL character"),
    ("BackupAndRestore: {backup_dir: ../backup}", "goes up with '..'"),
    ("OrbaxCheckpoint: {directory: /abs}", "is absolute"),
    ("ModelCheckpoint: {filepath: 'c/..{epoch:/^3}../..{epoch:/^3}../x.keras'}", "has the field '{epoch:/^3}'"),
    ("ModelCheckpoint: {filepath: 'c/{epoch!r}.keras'}", "has the field '{epoch!r}'"),
    ("ModelCheckpoint: {filepath: 'c/{epoch.__class__}.keras'}", "has the field"),
    ("ModelCheckpoint: {filepath: 'c/{epoch'}", "is not a valid format string"),
    (f"CSVLogger: {{filename: {'x' * 300}.csv}}", "is too long"),
])
def test_callback_paths_that_leave_the_run_directory_are_refused_at_validate(tmp_path, callback, problem):
    recipe = _write(tmp_path, callbacks=f"[{{{callback}}}]")
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    text = str(caught.value)
    assert text.startswith(f"{recipe}:17:") and "fit.callbacks[0]." in text and problem in text, text


def test_callback_paths_are_checked_again_against_the_real_run_directory(tmp_path):
    from dlrun.training.callbacks import build_callbacks

    run = tmp_path / "run"
    outside = tmp_path / "outside"
    run.mkdir(), outside.mkdir()
    os.symlink(outside, run / "link")  # a symlink inside the run directory that points out

    def build(name, **args):
        return build_callbacks([KerasObject.model_validate({name: args})], run)

    for name, args in [("ModelCheckpoint", {"filepath": "link/x.keras"}), ("CSVLogger", {"filename": "link/log.csv"}),
                       ("TensorBoard", {"log_dir": "link"}), ("BackupAndRestore", {"backup_dir": "link/b"}),
                       ("ModelCheckpoint", {"filepath": "../x.keras"}), ("ModelCheckpoint", {"filepath": "/abs.keras"}),
                       ("ModelCheckpoint", {"filepath": "..{epoch:/^3}../x.keras"})]:
        with pytest.raises(ModelBuildError, match="must stay inside the run directory"):
            build(name, **args)
    assert list(outside.iterdir()) == []
    (callback,) = build("ModelCheckpoint", filepath="ckpt/{epoch:02d}-{val_loss:.3f}.keras")
    assert Path(callback.filepath).parent == (run / "ckpt").resolve()


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def test_a_run_with_hostile_names_writes_only_under_the_output_root(tmp_path, monkeypatch):
    """Experiment and run names that try to escape, callbacks writing files: every new file on
    disk is under the output root (tmp_path holds the recipe, the cwd and the output root)."""
    from dlrun.training.runner import run_recipe

    cwd, root = tmp_path / "cwd", tmp_path / "a" / "b" / "c" / "out"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    recipe = _write(
        tmp_path,
        callbacks="[{ModelCheckpoint: {filepath: 'ckpt/{epoch:02d}.keras'}}, {CSVLogger: {filename: logs/train.csv}}, "
                  "BackupAndRestore]",
        tracking="{experiment: '../../../../../escaped_experiment', run_name: '..\\..\\..\\up/../../x'}",
    )
    before = _files(tmp_path)
    summary = run_recipe(load_recipe(recipe), output_root=root, command=["test"])
    assert summary.status == "FINISHED"
    new = _files(tmp_path) - before
    assert new and all(p.resolve().is_relative_to(root.resolve()) for p in new), \
        sorted(str(p) for p in new if not p.resolve().is_relative_to(root.resolve()))
    assert not list(tmp_path.parent.glob("escaped_experiment*")) and not list(tmp_path.glob("**/escaped_experiment"))
    run_dir = Path(summary.run_dir)
    assert run_dir.parent == root / "runs" / "_.._.._.._.._escaped_experiment"
    assert run_dir.name.endswith("-_.._.._up_.._.._x")
    assert (run_dir / "ckpt" / "01.keras").is_file() and (run_dir / "logs" / "train.csv").is_file()
    assert list(cwd.iterdir()) == []

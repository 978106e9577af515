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


# --------------------------------------------------------------------------- files a recipe reads

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

DLRUN = [sys.executable, "-m", "dlrun"]
ROOT = Path(__file__).resolve().parent.parent

READER = """\
name: reader
data: {{source: npz, path: data.npz}}
model:
  layers:
    - {layer}
    - Dense: {{units: 1}}
compile: {{loss: mse}}
"""


@pytest.fixture
def reader_folder(tmp_path):
    """``recipes/`` with its data, beside ``private/`` holding a file no recipe may read."""
    import numpy as np

    recipes, private = tmp_path / "recipes", tmp_path / "private"
    recipes.mkdir(), private.mkdir()
    np.savez(recipes / "data.npz", x=np.zeros((4, 3)), y=np.zeros(4))
    (private / "secret.txt").write_text("password\nhunter2\n")
    np.savez(private / "data.npz", x=np.zeros((4, 3)), y=np.zeros(4))
    os.symlink(private / "secret.txt", recipes / "innocent.txt")  # a link inside that points out
    return tmp_path


def _dlrun(*args, cwd: Path, env: dict | None = None):
    env = {**{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DLRUN_ALLOW_READ")},
           "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([*DLRUN, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("layer, where", [
    ("TextVectorization: {vocabulary: SECRET, output_mode: multi_hot}", "model.layers[0].TextVectorization.vocabulary"),
    ("StringLookup: {vocabulary: ../private/secret.txt}", "model.layers[0].StringLookup.vocabulary"),
    ("IntegerLookup: {vocabulary: '~/secret.txt'}", "model.layers[0].IntegerLookup.vocabulary"),
    ("StringLookup: {vocabulary: innocent.txt}", "model.layers[0].StringLookup.vocabulary"),
    ("Bidirectional: {layer: {MyReader: {vocab_path: ../private/secret.txt}}}",
     "model.layers[0].Bidirectional.layer.MyReader.vocab_path"),
    ("PretrainedEmbedding: {path: SECRET}", "model.layers[0].PretrainedEmbedding.path"),
    ("SavedModel: {path: ../private/secret.txt}", "model.layers[0].SavedModel.path"),
    ("Pretrained: {application: VGG16, weights: ../private/secret.txt}", "model.layers[0].Pretrained.weights"),
    ("Dense: {units: 2}", "data.path"),
])
def test_a_recipe_reads_no_file_outside_its_folder(reader_folder, layer, where):
    """`TextVectorization: {vocabulary: /some/secret.txt}` baked the file into every saved model.
    Every file a recipe reads — data, vocabularies, embeddings, weights, saved models, any
    `*_path` argument of a plugin — must lie under the recipe's folder (links followed):
    validate warns, a run refuses with a located error before anything exists."""
    secret = reader_folder / "private" / "secret.txt"
    text = READER.format(layer=layer.replace("SECRET", str(secret)))
    if where == "data.path":
        text = text.replace("path: data.npz", f"path: {reader_folder / 'private' / 'data.npz'}")
    if "MyReader" in layer:
        text = "plugins: [dlrun_no_such_plugin]\n" + text  # the check needs no import
    recipe = reader_folder / "recipes" / "r.yaml"
    recipe.write_text(text)
    env = {"HOME": str(reader_folder / "private")}  # ~/secret.txt is the secret
    checked = _dlrun("validate", str(recipe), cwd=reader_folder, env=env)
    assert checked.returncode == 0, checked.stderr
    assert f"warning: {recipe}:" in checked.stderr and f"{where}: " in checked.stderr
    assert "is outside the recipe's folder" in checked.stderr and "a run needs that permission" in checked.stderr
    for command in (["train", "-o", "out"], ["show"]):
        result = _dlrun(*command, str(recipe), cwd=reader_folder, env=env)
        assert result.returncode == 2, result.stderr
        line = next(line for line in result.stderr.splitlines() if f"{where}: " in line)
        assert line.startswith(f"{recipe}:") and "is outside the recipe's folder" in line, line
        assert f"--allow-read {reader_folder / 'private'}" in line and f"--set {where}=" in line
        assert "Traceback" not in result.stderr
    assert not (reader_folder / "out").exists()


def test_urls_are_no_files(reader_folder):
    recipe = reader_folder / "recipes" / "r.yaml"
    recipe.write_text(READER.format(layer="StringLookup: {vocabulary: 'gs://bucket/vocab.txt'}"))
    result = _dlrun("train", str(recipe), "-o", "out", cwd=reader_folder)
    assert result.returncode == 2
    assert "model.layers[0].StringLookup.vocabulary: is a URL: a recipe reads local files only" in result.stderr


def test_the_user_widens_what_a_recipe_reads(reader_folder, monkeypatch):
    """--allow-read (or DLRUN_ALLOW_READ) for a folder; a path typed with --set is the user's own."""
    from dlrun.recipe.permissions import granted

    secret = reader_folder / "private" / "secret.txt"
    recipe = reader_folder / "recipes" / "r.yaml"
    recipe.write_text(READER.format(layer="StringLookup: {vocabulary: ../private/secret.txt}"))
    with pytest.raises(RecipeError, match="is outside the recipe's folder"):
        load_recipe(recipe)
    with granted(read=[reader_folder / "private"]):
        loaded = load_recipe(recipe)
    assert [(format_place, path) for format_place, _, path in loaded.reads] == [
        (("data", "path"), reader_folder / "recipes" / "data.npz"),
        (("model", "layers", 0, "StringLookup", "vocabulary"), secret)]
    monkeypatch.setenv("DLRUN_ALLOW_READ", f"/elsewhere{os.pathsep}{reader_folder / 'private'}")
    load_recipe(recipe)
    monkeypatch.delenv("DLRUN_ALLOW_READ")
    load_recipe(recipe, [f"model.layers[0].StringLookup.vocabulary={secret}"])


def test_a_search_may_not_choose_a_file(reader_folder):
    recipe = reader_folder / "recipes" / "r.yaml"
    recipe.write_text(READER.format(layer="Dense: {units: 2}") + "search:\n  space:\n"
                      f"    data.path: {{choice: [data.npz, {reader_folder / 'private' / 'data.npz'}]}}\n"
                      "  objective: {metric: loss}\n")
    with pytest.raises(RecipeError, match=r"search.space.data.path: a search may not choose a file the recipe "
                                          r"reads \(data.path\)"):
        load_recipe(recipe)


@pytest.mark.slow
def test_allowed_files_are_read_from_the_recipes_folder_and_recorded(reader_folder):
    """A run reads a relative vocabulary from the recipe's folder (not the working directory)
    and data from a folder the user allowed; inputs.json names each with its SHA-256 or file
    count, and the saved model holds that vocabulary."""
    import hashlib
    import zipfile

    recipes, private = reader_folder / "recipes", reader_folder / "private"
    for part, label, words in (("train", "neg", "bad awful"), ("train", "pos", "good great"),
                               ("test", "neg", "bad plot"), ("test", "pos", "good fun")):
        (private / "reviews" / part / label).mkdir(parents=True)
        for i in range(4):
            (private / "reviews" / part / label / f"{i}.txt").write_text(f"{words} movie {i}\n")
    (recipes / "vocab.txt").write_text("good\nbad\ngreat\nawful\n")
    recipe = recipes / "text.yaml"
    recipe.write_text("""\
name: allowed_reads
data: {source: text_directory, path: ../private/reviews, classes: [neg, pos], split: {validation: {fraction: 0.25}}}
model:
  layers:
    - TextVectorization: {vocabulary: vocab.txt, output_mode: multi_hot}
    - Dense: {units: 1, activation: sigmoid}
compile: {loss: binary_crossentropy, metrics: [accuracy]}
fit: {epochs: 1, batch_size: 4}
""")
    elsewhere = reader_folder / "cwd"
    elsewhere.mkdir()
    (elsewhere / "vocab.txt").write_text("wrong\n")  # Keras alone would read this one
    result = _dlrun("train", str(recipe), "-o", str(reader_folder / "out"), "--allow-read", str(private / "reviews"),
                    "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    inputs = json.loads((run_dir / "inputs.json").read_text())
    assert inputs == [
        {"place": "data.path", "given": "../private/reviews", "path": str(private / "reviews"), "files": 16},
        {"place": "model.layers[0].TextVectorization.vocabulary", "given": "vocab.txt",
         "path": str(recipes / "vocab.txt"), "bytes": (recipes / "vocab.txt").stat().st_size,
         "sha256": hashlib.sha256((recipes / "vocab.txt").read_bytes()).hexdigest()}]
    with zipfile.ZipFile(run_dir / "model.keras") as saved:
        vocabulary = saved.read("assets/layers/text_vectorization/vocabulary.txt").decode().split()
    assert vocabulary == ["[UNK]", "good", "bad", "great", "awful"]

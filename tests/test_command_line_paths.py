"""Paths and overrides as a user types them: a path given on the command line (``--set``, ``-o``,
``--resume``) is relative to the shell's folder, a recipe's own paths to its file; a resumed run
replays its recorded overrides from anywhere; ``--set`` of a section's kind starts the section anew;
``dlrun validate`` warns of a missing recipe-named file once, naming the recipes it concerns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def dlrun(*args: str, cwd: Path, plugins: bool = False) -> subprocess.CompletedProcess:
    paths = [str(ROOT), *([str(ROOT / "tests")] if plugins else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dlrun", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def write_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=rng.normal(y[:, None], 1.0, (120, 4)).astype("float32"), y=y)
    return path


RESUMABLE = """\
name: npz_run
plugins: [_interrupt_once]
data: {{source: npz, path: not_here.npz, split: {{validation: {{fraction: 0.25}}}}}}
model:
  layers:
    - Dense: {{units: 8, activation: relu}}
    - Dense: {{units: 2, activation: softmax}}
compile: {{optimizer: rmsprop, loss: sparse_categorical_crossentropy, metrics: [accuracy]}}
fit:
  epochs: 3
  batch_size: 10
  callbacks:
    - InterruptOnce: {{epoch: 2, batch: 3, marker: {marker}}}
"""


@pytest.mark.slow
def test_set_paths_and_output_root_are_read_from_the_shell_folder_and_resume_replays_them_anywhere(tmp_path):
    project = tmp_path / "project"
    data = write_npz(project / "data" / "d.npz")
    (project / "recipes").mkdir()
    (project / "recipes" / "npz_run.yaml").write_text(RESUMABLE.format(marker=tmp_path / "interrupted"))
    # Typed from the project's root: data/d.npz is there, not under recipes/.
    killed = dlrun("train", "recipes/npz_run.yaml", "--set", "data.path=data/d.npz", "-o", "out", cwd=project,
                   plugins=True)
    assert killed.returncode == 143, killed.stderr
    (run_dir,) = (project / "out" / "runs" / "npz_run").iterdir()
    status = json.loads((run_dir / "run.json").read_text())
    assert status["status"] == "KILLED" and status["overrides"] == [f"data.path={json.dumps(str(data))}"]
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]["path"] == str(data)

    # From another folder: the run named relative to it, its overrides replayed as recorded.
    resumed = dlrun("train", "--resume", str(run_dir.relative_to(tmp_path)), "-o", "project/out", "--json",
                    cwd=tmp_path, plugins=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["run_dir"] == str(run_dir)
    assert "resumed after epoch 1" in resumed.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "FINISHED"


BASE = """\
name: book
data:
  source: keras
  name: imdb
  options: {num_words: 100}
  split: {validation: {first: 10}}
model:
  layers:
    - Dense: {units: 1, activation: sigmoid}
compile: {optimizer: rmsprop, loss: binary_crossentropy}
"""


def test_setting_a_sections_kind_starts_it_anew_and_keeps_what_the_command_line_gave(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "book.yaml").write_text(BASE)
    (tmp_path / "recipes" / "child.yaml").write_text("extends: book.yaml\nname: child\n")
    data = write_npz(tmp_path / "local" / "imdb.npz")
    for sets in (["data.source=npz", "data.path=local/imdb.npz"],  # the kind first, or after the path
                 ["data.path=local/imdb.npz", "data.source=npz"],
                 ["data={source: npz, path: local/imdb.npz}"]):
        shown = dlrun("show", "--no-model", "recipes/child.yaml", *(f"--set={s}" for s in sets), cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        section = yaml.safe_load(shown.stdout)["data"]
        assert section["source"] == "npz" and section["path"] == str(data), sets
        assert "name" not in section and "options" not in section
        assert section["split"] == {"test": "dataset", "validation": "none"}  # the book's split went with its kind

    kept = dlrun("show", "--no-model", "recipes/child.yaml", "--set", "data.source=npz", "--set",
                 "data.path=local/imdb.npz", "--set", "data.split.validation={first: 10}", cwd=tmp_path)
    assert yaml.safe_load(kept.stdout)["data"]["split"]["validation"]["first"] == 10


def test_validate_warns_of_a_missing_embedding_file_once_naming_the_recipes_that_extend_it(tmp_path):
    (tmp_path / "glove").mkdir()
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.yaml").write_text(
        "name: base\ndata: {source: keras, name: imdb}\npreprocessing:\n  - {transform: pad_sequences, maxlen: 10}\n"
        "model:\n  layers:\n    - PretrainedEmbedding: {path: ../glove/glove.6B.100d.txt}\n    - Flatten\n"
        "    - Dense: {units: 1, activation: sigmoid}\ncompile: {optimizer: rmsprop, loss: binary_crossentropy}\n")
    for name in ("a", "b"):
        (tmp_path / "recipes" / f"{name}.yaml").write_text(f"extends: base.yaml\nname: {name}\n")
    checked = dlrun("validate", "recipes/a.yaml", "recipes/b.yaml", "--allow-read", "glove", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "ok: recipes/a.yaml\nok: recipes/b.yaml\n"
    base = tmp_path / "recipes" / "base.yaml"
    assert checked.stderr == (f"warning: {base}:7:35: model.layers[0].PretrainedEmbedding.path: no such file: "
                              f"{tmp_path / 'glove' / 'glove.6B.100d.txt'} (the recipe is valid; it runs where the "
                              f"data is) (in recipes/a.yaml, recipes/b.yaml)\n")

    # Outside the recipe's folder and missing: both are said (a run would stop at each in turn).
    alone = dlrun("validate", "recipes/base.yaml", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    warnings = alone.stderr.splitlines()
    assert len(warnings) == 2 and "is outside the recipe's folder" in warnings[0] and "no such file" in warnings[1]
    assert all(w.startswith(f"warning: {base}:7:35: model.layers[0].PretrainedEmbedding.path: ") for w in warnings)
    assert not any("(in " in w for w in warnings)  # the recipe's own line: nothing to add

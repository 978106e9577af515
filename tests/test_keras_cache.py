"""`source: keras` never hands Keras a file it may delete or overwrite: a file in the Keras
cache that is not the one Keras expects (a user's own file named by `options.path`, a damaged
copy) is refused with a message, untouched, before a run exists."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dlrun.data import keras_datasets

ROOT = Path(__file__).resolve().parent.parent
RECIPE = """\
name: keras_cache
data: {{source: keras, name: {name}, options: {options}}}
model:
  layers:
    - Flatten
    - Dense: {{units: 10, activation: softmax}}
compile: {{loss: sparse_categorical_crossentropy}}
fit: {{epochs: 1}}
"""


@pytest.mark.parametrize("name, options, file", [
    ("mnist", "{path: precious.npz}", "precious.npz"),  # the example: a user's file in the cache
    ("mnist", "{}", "mnist.npz"),  # a damaged copy under Keras' own name
    ("boston_housing", "{path: notes.txt}", "notes.txt"),
])
def test_a_cached_file_keras_does_not_expect_is_left_untouched(tmp_path, name, options, file):
    datasets = tmp_path / "keras_home" / "datasets"
    datasets.mkdir(parents=True)
    precious = datasets / file
    precious.write_bytes(b"years of work")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(name=name, options=options))
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
           "PYTHONPATH": str(ROOT), "KERAS_HOME": str(tmp_path / "keras_home")}
    result = subprocess.run([sys.executable, "-m", "dlrun", "train", str(recipe), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert f"error: data: {precious} is not the file Keras expects: its SHA-256 hash did not match" in result.stderr
    assert "dlrun leaves it untouched" in result.stderr and "Traceback" not in result.stderr
    assert precious.read_bytes() == b"years of work" and sorted(p.name for p in datasets.iterdir()) == [file]
    assert not (tmp_path / "out").exists()


def test_a_folder_under_the_cache_name_is_refused(monkeypatch, tmp_path):
    from dlrun.errors import DataError
    from dlrun.recipe.data_schema import KerasData

    (tmp_path / "datasets" / "mnist.npz").mkdir(parents=True)
    monkeypatch.setattr(keras_datasets, "keras_home", lambda: tmp_path)
    monkeypatch.setattr(keras_datasets, "_load_data_function",
                        lambda name: lambda path="mnist.npz": pytest.fail("Keras was called"))
    for options in ({}, {"path": ".."}):
        spec = KerasData(source="keras", name="mnist", options=options)
        with pytest.raises(DataError, match="is not a file. Keras would replace it"):
            keras_datasets.load_keras(spec, tmp_path)


def test_the_expected_hashes_are_keras_own():
    """The table of cached files mirrors keras/src/datasets/*.py: the hash each load_data checks."""
    for name, files in keras_datasets._CACHE_FILES.items():
        source = inspect.getsource(importlib.import_module(f"keras.src.datasets.{name}").load_data)
        hashes = re.findall(r'file_hash=\(?\s*(?:#[^\n]*\n\s*)?"([0-9a-f]{64})"', source)
        assert [digest for _, _, digest in files if digest] == hashes, name


def test_the_real_file_is_handed_to_keras(monkeypatch, tmp_path):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "mnist.npz").write_bytes(b"the real one")
    real = hashlib.sha256(b"the real one").hexdigest()
    monkeypatch.setitem(keras_datasets._CACHE_FILES, "mnist", [("{path}", "url", real)])
    monkeypatch.setattr(keras_datasets, "keras_home", lambda: tmp_path)
    import numpy as np

    monkeypatch.setattr(keras_datasets, "_load_data_function", lambda name: lambda path="mnist.npz": (
        (np.zeros((2, 2)), np.zeros(2)), (np.zeros((1, 2)), np.zeros(1))))
    from dlrun.recipe.data_schema import KerasData

    ds = keras_datasets.load_keras(KerasData(source="keras", name="mnist"), tmp_path)
    assert len(ds.y_train) == 2

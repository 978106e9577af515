"""Real runs for the export and MLflow-model tests, and how the tests look at them.

digits (8×8 images → reshape, rescale, standardize: every step has a layer) and tiny made-up
reviews (strings → text_vectorization, with or without a fixed length). Import it the way tests
import ``_recipes``::

    sys.path.insert(0, str(Path(__file__).parent))
    from _export_runs import DIGITS, cli, dlrun_predicts, raw_test_rows, text_run_in
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.inference.trained import open_trained

ROOT = Path(__file__).resolve().parent.parent
FILES = {"keras": "model.keras", "savedmodel": "model_savedmodel", "onnx": "model.onnx", "tflite": "model.tflite"}

DIGITS = """\
name: digits_export
data:
  source: embedded
  name: digits
  split:
    test: {fraction: 0.2}
    validation: {fraction: 0.2}
preprocessing:
  - {transform: reshape, shape: [64]}
  - {transform: rescale, scale: 0.0625}
  - {transform: standardize}
  - {transform: one_hot}
model:
  layers:
    - Dense: {units: 16, activation: relu}
    - Dense: {units: 10, activation: softmax}
compile:
  optimizer: {Adam: {learning_rate: 1e-2}}
  loss: categorical_crossentropy
  metrics: [accuracy]
fit:
  epochs: 2
  batch_size: 64
"""

TEXT = """\
name: reviews_export
data:
  source: npz
  path: reviews.npz
  split:
    test: dataset
    validation: {{fraction: 0.2}}
preprocessing:
{steps}model:
  layers:
    - Embedding: {{input_dim: 40, output_dim: 8}}
    - GlobalAveragePooling1D
    - Dense: {{units: 1, activation: sigmoid}}
compile:
  optimizer: {{Adam: {{learning_rate: 1e-2}}}}
  loss: binary_crossentropy
  metrics: [accuracy]
fit:
  epochs: 2
  batch_size: 16
"""
FIXED_LENGTH = "  - {transform: text_vectorization, max_tokens: 40, output_sequence_length: 10}\n"
PADDED = "  - {transform: text_vectorization, max_tokens: 40}\n  - {transform: pad_sequences, maxlen: 12}\n"


def reviews(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Short made-up reviews: filler words and three words of the label's sentiment."""
    good, bad = "good great fine lovely superb nice".split(), "bad awful poor dull boring weak".split()
    filler = "the a movie film plot actor it was and".split()
    y = rng.integers(0, 2, n)
    texts = []
    for label in y:
        words = [*rng.choice(filler, 5), *rng.choice(good if label else bad, 3)]
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + "!")
    return np.array(texts), y


def digits_run_in(root: Path):
    (root / "digits.yaml").write_text(DIGITS)
    return dlrun.train(root / "digits.yaml", output_root=root)


def text_run_in(root: Path, name: str, steps: str):
    folder = root / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    (x, y), (x_test, y_test) = reviews(rng, 80), reviews(rng, 24)
    np.savez(folder / "reviews.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    (folder / "reviews.yaml").write_text(TEXT.format(steps=steps).replace("reviews_export", name))
    return dlrun.train(folder / "reviews.yaml", output_root=root)

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export_runs")  # one output root and MLflow store for the module


@pytest.fixture(scope="module")
def digits_run(root):
    return digits_run_in(root)


@pytest.fixture(scope="module")
def text_run(root):
    return text_run_in(root, "reviews_fixed", FIXED_LENGTH)


def cli(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dlrun", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def export(run, fmt: str, out: Path, *more) -> dict:
    result = cli("export", run.run_dir, "--format", fmt, "-o", out, "--output-root", Path(run.run_dir).parents[2],
                 "--json", *more, cwd=out.parent)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1])


def raw_test_rows(run) -> np.ndarray:
    """The run's raw test rows, loaded as the run loaded them."""
    from dlrun.data.sources import load_data
    from dlrun.data.splits import apply_test_split

    trained = open_trained(run.run_dir, Path(run.run_dir).parents[2])
    recipe = trained.recipe
    ds = apply_test_split(load_data(recipe.data, trained.run.base_dir, recipe.seed), recipe.data.split, recipe.seed)
    return ds.x_test



def dlrun_predicts(run, x) -> np.ndarray:
    trained = open_trained(run.run_dir, Path(run.run_dir).parents[2])
    return trained.predict(trained.inputs(x))


def run_export(fmt: str, path: Path, x) -> np.ndarray:
    """The export at ``path`` on inputs ``x``, through the format's own runtime."""
    if fmt == "keras":
        import keras

        return keras.saving.load_model(path, safe_mode=True).predict(x, verbose=0)
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # kept: its function needs the object's variables
        return loaded.serve(tf.constant(x)).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (name,) = runner.get_input_details()
    (out,) = runner(**{name: x}).values()
    return out

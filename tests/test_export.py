"""``dlrun export``: each format, loaded back with its own runtime, predicts from raw rows what the
run's model predicts from the run's restored preprocessing of them (``dlrun predict``).

Two real runs: digits (8×8 images → reshape, rescale, standardize: every step inside the export)
and tiny reviews (strings → text_vectorization: inside for keras/savedmodel, left to the caller
for onnx/tflite, which have no string ops). The tests load each export with the format's runtime
themselves, not with dlrun's code.
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


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export_runs")  # one output root and MLflow store for the module


@pytest.fixture(scope="module")
def digits_run(root):
    (root / "digits.yaml").write_text(DIGITS)
    return dlrun.train(root / "digits.yaml", output_root=root)


def _text_run(root: Path, name: str, steps: str):
    folder = root / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    (x, y), (x_test, y_test) = reviews(rng, 80), reviews(rng, 24)
    np.savez(folder / "reviews.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    (folder / "reviews.yaml").write_text(TEXT.format(steps=steps).replace("reviews_export", name))
    return dlrun.train(folder / "reviews.yaml", output_root=root)


@pytest.fixture(scope="module")
def text_run(root):
    return _text_run(root, "reviews_fixed", FIXED_LENGTH)


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


def test_rows(run) -> np.ndarray:
    """The run's raw test rows, loaded as the run loaded them."""
    from dlrun.data.sources import load_data
    from dlrun.data.splits import apply_test_split

    trained = open_trained(run.run_dir, Path(run.run_dir).parents[2])
    recipe = trained.recipe
    ds = apply_test_split(load_data(recipe.data, trained.run.base_dir, recipe.seed), recipe.data.split, recipe.seed)
    return ds.x_test


test_rows.__test__ = False  # a helper, not a test


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


# --------------------------------------------------------------------------- every format


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FILES))
def test_digits_export_takes_raw_images_and_agrees(fmt, digits_run, tmp_path):
    result = export(digits_run, fmt, tmp_path / FILES[fmt])
    print(f"digits {fmt}: max abs difference {result['max_abs_diff']:.3g} on {result['rows']} rows ({result['part']})")
    assert result["max_abs_diff"] <= 1e-4 and result["rows"] == 256 and result["part"] == "test of 360"
    assert [s["step"] for s in result["preprocessing"]["inside"]] == ["reshape", "rescale", "standardize"]
    assert result["preprocessing"]["caller_applies"] == [] and result["inputs"][0]["shape"] == [None, 8, 8]

    x = test_rows(digits_run).astype(np.float32)  # raw 8×8 pixel values 0..16
    got = run_export(fmt, tmp_path / FILES[fmt], x)
    diff = float(np.abs(got - dlrun_predicts(digits_run, x)).max())
    print(f"digits {fmt}: loaded back here, all {len(x)} test rows: max abs difference {diff:.3g}")
    assert got.shape == (len(x), 10) and diff <= 1e-4

    sidecar = json.loads((tmp_path / (FILES[fmt] + ".dlrun.json")).read_text())
    assert sidecar["class_names"] == [str(i) for i in range(10)]
    assert sidecar["output_kind"] == {"prediction": {"kind": "one_hot", "from_logits": False}}
    assert sidecar["preprocessing"]["label_transforms"] == ["one_hot (preprocessing[3])"]
    assert sidecar["check"]["max_abs_diff"] == result["max_abs_diff"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([FILES[fmt], FILES[fmt] + ".dlrun.json"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FILES))
def test_text_export_has_the_vocabulary_inside_where_the_format_has_string_ops(fmt, text_run, tmp_path):
    result = export(text_run, fmt, tmp_path / FILES[fmt])
    print(f"text {fmt}: max abs difference {result['max_abs_diff']:.3g} on {result['rows']} rows")
    assert result["max_abs_diff"] <= 1e-4
    x = test_rows(text_run)
    sidecar = json.loads((tmp_path / (FILES[fmt] + ".dlrun.json")).read_text())
    if fmt in ("keras", "savedmodel"):  # raw strings in
        assert [s["step"] for s in result["preprocessing"]["inside"]] == ["text_vectorization"]
        assert result["inputs"][0]["dtype"] == "string"
        model_input = x.astype(object)
    else:  # ONNX and TFLite have no string ops: the caller vectorizes with the saved vocabulary
        (outside,) = sidecar["preprocessing"]["caller_applies"]
        assert outside["step"] == "text_vectorization" and "string ops" in outside["why"]
        vocabulary = outside["fitted"]["vocabulary"]
        assert vocabulary[:2] == ["", "[UNK]"] and result["inputs"][0]["dtype"] == "int32"
        import keras

        layer = keras.layers.TextVectorization(vocabulary=vocabulary, output_sequence_length=10)
        model_input = np.asarray(layer(x)).astype(np.int32)
    got = run_export(fmt, tmp_path / FILES[fmt], model_input)
    diff = float(np.abs(got - dlrun_predicts(text_run, x)).max())
    print(f"text {fmt}: loaded back here: max abs difference {diff:.3g}")
    assert diff <= 1e-4


@pytest.mark.slow
def test_steps_without_a_layer_stay_with_the_caller(root, tmp_path):
    """text_vectorization without a length, then pad_sequences (no layer): the export starts after both."""
    run = _text_run(root, "reviews_padded", PADDED)
    result = export(run, "keras", tmp_path / "model.keras")
    outside = result["preprocessing"]["caller_applies"]
    assert [s["step"] for s in outside] == ["text_vectorization", "pad_sequences"]
    assert all("variable-length" in step["why"] for step in outside)
    assert result["preprocessing"]["inside"] == [] and result["inputs"][0]["shape"] == [None, 12]
    sidecar = json.loads((tmp_path / "model.keras.dlrun.json").read_text())
    assert len(sidecar["preprocessing"]["caller_applies"][0]["fitted"]["vocabulary"]) > 10


# --------------------------------------------------------------------------- refusals


def test_an_existing_output_is_refused_unless_forced(digits_run, tmp_path):
    (tmp_path / "model.onnx").write_text("mine")
    result = cli("export", digits_run.run_dir, "--format", "onnx", "-o", tmp_path / "model.onnx", cwd=tmp_path)
    assert result.returncode == 2 and "exists already" in result.stderr and "--force" in result.stderr
    assert (tmp_path / "model.onnx").read_text() == "mine"
    result = cli("export", digits_run.run_dir, "--format", "tflite", "-o", tmp_path / "model.onnx", cwd=tmp_path)
    assert result.returncode == 2 and ".tflite file" in result.stderr


@pytest.mark.slow
def test_force_replaces_an_export(digits_run, tmp_path):
    (tmp_path / "model.onnx").write_text("old")
    export(digits_run, "onnx", tmp_path / "model.onnx", "--force")
    assert (tmp_path / "model.onnx").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.dlrun.json"]


def test_an_export_that_differs_is_refused_and_leaves_nothing(digits_run, tmp_path, monkeypatch):
    from dlrun.inference import export as export_module

    monkeypatch.setattr(export_module, "TOLERANCE", 0.0)  # float32 round-off is then a difference
    with pytest.raises(export_module.ExportMismatch, match=r"max absolute difference .* nothing was written"):
        export_module.export_run(digits_run.run_dir, "keras", tmp_path / "model.keras",
                                 output_root=Path(digits_run.run_dir).parents[2])
    assert list(tmp_path.iterdir()) == []

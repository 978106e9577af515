"""Data of the wrong kind reaching a preprocessing step: raw text where word indices are due (a
missing text_vectorization step), fractions where indices are due (they would be cut silently),
text labels. A recipe error naming the step and the fix (exit 2), never a library's ValueError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlrun.data.transforms import fit_pipeline
from dlrun.errors import DataError
from dlrun.recipe.schema import TransformSpec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from test_split_checks import TEXT_RECIPE, write_reviews  # noqa: E402


def test_raw_text_into_pad_sequences_names_the_missing_text_vectorization_step(tmp_path):
    write_reviews(tmp_path / "reviews")
    recipe = TEXT_RECIPE.replace("  limit: 30\n", "  shuffle: true\n").replace(
        "{transform: text_vectorization, max_tokens: 50, output_sequence_length: 8}", "{transform: pad_sequences, maxlen: 8}")
    (tmp_path / "reviews.yaml").write_text(recipe)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    run = subprocess.run([sys.executable, "-m", "dlrun", "train", "reviews.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith("error: preprocessing[0] (pad_sequences, apply_to: x): sample 0 is text ('")
    assert line.endswith("'), but pad_sequences takes numbers — put a text_vectorization step (output_mode: int) "
                         "before it")
    assert not (tmp_path / "artifacts").exists()


def specs(*items):
    return [TypeAdapter(TransformSpec).validate_python(item) for item in items]


def texts(*items) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


@pytest.mark.parametrize("step, x, message", [
    ({"transform": "multi_hot", "dimension": 10}, texts("a fine film", "dull"),
     r"preprocessing\[0\] \(multi_hot, apply_to: x\): sample 0 is text \('a fine film'\), but multi_hot takes "
     r"numbers — put a text_vectorization step \(output_mode: int\) before it"),
    ({"transform": "multi_hot", "dimension": 10}, np.array(["a", "b"]), r"sample 0 is text \('a'\)"),
    ({"transform": "pad_sequences", "maxlen": 4}, texts([1, 2], "dull"), r"sample 1 is text \('dull'\)"),
    ({"transform": "standardize"}, np.array([["a", "b"], ["c", "d"]]), r"sample 0 is text \('a'\), but standardize"),
    ({"transform": "rescale", "scale": 0.5}, texts("x", "y"), r"sample 0 is text \('x'\), but rescale"),
    # Fractions would be cut to indices without a word.
    ({"transform": "multi_hot", "dimension": 10}, texts([1, 2.5], [3]),
     r"sample 0 holds 2.5, not an index: multi_hot takes whole numbers"),
    ({"transform": "multi_hot", "dimension": 10}, np.array([[1.0, 2.0], [3.0, 0.5]]), r"sample 1 holds 0.5, not an"),
    ({"transform": "pad_sequences", "maxlen": 4}, np.array([1, 2, 3]),
     r"pad_sequences takes one sequence per sample; each sample here is one number"),
    ({"transform": "pad_sequences", "maxlen": 4}, texts([1, 2], {"a": 1}), r"sample 1 is dict .* not a sequence of "),
])
def test_the_wrong_kind_of_input_is_a_located_data_error(step, x, message):
    with pytest.raises(DataError, match=message):
        pipeline = fit_pipeline(specs(step), x, None)
        pipeline.apply(x)


def test_text_labels_into_one_hot_say_to_number_the_classes():
    with pytest.raises(DataError, match=r"preprocessing\[0\] \(one_hot, apply_to: y\): sample 0 is text \('cat'\), "
                                        r"but one_hot takes numbers — number the classes 0 … k−1"):
        fit_pipeline(specs({"transform": "one_hot", "apply_to": "y"}), np.zeros((2, 1)), np.array(["cat", "dog"]))


def test_pad_sequences_keeps_fractions_of_numeric_sequences_and_pads_indices_as_int32():
    pipeline = fit_pipeline(specs({"transform": "pad_sequences", "maxlen": 3}), texts([0.25, 0.5], [1.5]), None)
    padded, _ = pipeline.apply(texts([0.25, 0.5], [1.5]))
    assert padded.dtype == np.float32 and padded.tolist() == [[0, 0.25, 0.5], [0, 0, 1.5]]
    indices, _ = pipeline.apply(texts([4, 2], [7.0]))
    assert indices.dtype == np.int32 and indices.tolist() == [[0, 4, 2], [0, 0, 7]]

"""Preprocessing transforms: outputs on hand-computed examples, fitted on train only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlrun.data.splits import holdout_split
from dlrun.data.transforms import TRANSFORMS, fit_pipeline
from dlrun.errors import DataError
from dlrun.recipe.schema import HoldoutPart, TransformSpec


def specs(*items):
    return [TypeAdapter(TransformSpec).validate_python(item) for item in items]


def fit_apply(items, x, y=None):
    pipeline = fit_pipeline(specs(*items), x, y)
    return pipeline, pipeline.apply(x, y)


def ragged(*seqs):
    a = np.empty(len(seqs), dtype=object)
    a[:] = [list(s) for s in seqs]
    return a


def test_registry_covers_every_transform_of_the_schema():
    names = {m.model_fields["transform"].annotation.__args__[0]
             for m in TransformSpec.__origin__.__args__}
    assert set(TRANSFORMS) == names


# --------------------------------------------------------------------------- multi_hot


def test_multi_hot_is_the_books_vectorize_sequences():
    _, (x, _) = fit_apply([{"transform": "multi_hot", "dimension": 5}], ragged([1, 3, 3], [0], []))
    assert x.dtype == np.float32
    assert x.tolist() == [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]


def test_multi_hot_on_a_2d_int_array():
    _, (x, _) = fit_apply([{"transform": "multi_hot", "dimension": 4}], np.array([[0, 2], [3, 3]]))
    assert x.tolist() == [[1, 0, 1, 0], [0, 0, 0, 1]]


def test_multi_hot_index_out_of_range_says_which_and_how_to_fix():
    with pytest.raises(DataError) as err:
        fit_apply([{"transform": "multi_hot", "dimension": 10}], ragged([1, 2], [4, 12]))
    message = str(err.value)
    assert message.startswith("preprocessing[0] (multi_hot, apply_to: x): ")
    assert "sample 1 contains index 12, outside 0..9" in message and "num_words: 10" in message


# --------------------------------------------------------------------------- one_hot


def test_one_hot_counts_classes_on_the_training_labels():
    pipeline = fit_pipeline(specs({"transform": "one_hot"}), np.zeros((3, 1)), np.array([0, 2, 1]))
    _, y = pipeline.apply(np.zeros((2, 1)), np.array([2, 0]))
    assert y.dtype == np.float32 and y.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert pipeline.state() == [{"transform": "one_hot", "apply_to": "y", "num_classes": 3}]
    with pytest.raises(DataError, match="label 3 of sample 1 is outside the 3 classes"):
        pipeline.apply(np.zeros((2, 1)), np.array([0, 3]))


def test_one_hot_given_num_classes_and_n_by_1_labels():
    pipeline = fit_pipeline(specs({"transform": "one_hot", "num_classes": 4}), np.zeros(2),
                            np.array([[1], [0]], dtype=np.uint8))
    _, y = pipeline.apply(np.zeros(1), np.array([[3]]))
    assert y.tolist() == [[0, 0, 0, 1]]
    with pytest.raises(DataError, match="up to 5, outside the 4 classes"):
        fit_pipeline(specs({"transform": "one_hot", "num_classes": 4}), np.zeros(2),
                     np.array([0, 5]))


def test_y_transforms_are_skipped_when_y_is_none():
    pipeline = fit_pipeline(specs({"transform": "one_hot"}), np.ones((2, 1)), np.array([0, 1]))
    x, y = pipeline.apply(np.ones((1, 1)))
    assert y is None and x.tolist() == [[1.0]]


# --------------------------------------------------------------------------- standardize


def test_standardize_hand_computed():
    x = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0]])
    pipeline, (out, _) = fit_apply([{"transform": "standardize"}], x)
    assert out.dtype == np.float32
    assert out.tolist() == [[-1, -1, 0], [1, 1, 0]]  # std 0 column: divided by 1
    assert pipeline.state()[0]["mean"] == [2.0, 20.0, 5.0]
    assert pipeline.state()[0]["std"] == [1.0, 10.0, 1.0]


def test_standardize_uses_the_training_rows_statistics_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3)) + np.arange(100)[:, None] / 10  # drifts: parts differ
    split = holdout_split(100, HoldoutPart(last=30), seed=0)
    pipeline = fit_pipeline(specs({"transform": "standardize"}), x[split.train], None)
    state = pipeline.state()[0]
    np.testing.assert_allclose(state["mean"], x[split.train].mean(axis=0))
    np.testing.assert_allclose(state["std"], x[split.train].std(axis=0))
    assert not np.allclose(state["mean"], x.mean(axis=0))  # train + validation differs
    val, _ = pipeline.apply(x[split.validation])
    np.testing.assert_allclose(val, (x[split.validation] - x[split.train].mean(0))
                               / x[split.train].std(0), rtol=1e-5)
    assert abs(val.mean()) > 0.5  # validation is not centred: no leakage of its statistics


def test_standardize_per_pixel_and_on_y():
    images = np.arange(8.0).reshape(2, 2, 2)
    pipeline, (out, _) = fit_apply([{"transform": "standardize"}], images)
    assert np.array(pipeline.state()[0]["mean"]).shape == (2, 2) and out.shape == (2, 2, 2)
    _, (_, y) = fit_apply([{"transform": "standardize", "apply_to": "y"}], np.zeros((2, 1)),
                          np.array([10.0, 30.0]))
    assert y.tolist() == [-1.0, 1.0]


def test_standardize_refuses_sequences():
    with pytest.raises(DataError, match="multi_hot or pad_sequences first"):
        fit_apply([{"transform": "standardize"}], ragged([1, 2], [3]))


# --------------------------------------------------------------------------- rescale, reshape


def test_rescale():
    _, (x, _) = fit_apply([{"transform": "rescale", "scale": 1 / 255}], np.array([[0, 255]],
                                                                                  np.uint8))
    assert x.dtype == np.float32 and x.tolist() == [[0.0, 1.0]]
    _, (x, _) = fit_apply([{"transform": "rescale", "scale": 2, "offset": -1}], np.array([[1.5]]))
    assert x.tolist() == [[2.0]]


def test_reshape_keeps_the_batch_axis():
    _, (x, _) = fit_apply([{"transform": "reshape", "shape": [6]}], np.zeros((4, 2, 3)))
    assert x.shape == (4, 6)
    _, (x, _) = fit_apply([{"transform": "reshape", "shape": [28, 28, 1]}], np.zeros((2, 784)))
    assert x.shape == (2, 28, 28, 1)


def test_reshape_size_mismatch_names_both_shapes():
    with pytest.raises(DataError, match=r"samples of shape \[28, 28\] \(784 values\) into "
                                        r"shape \[780\]"):
        fit_apply([{"transform": "reshape", "shape": [780]}], np.zeros((2, 28, 28)))


# --------------------------------------------------------------------------- pipeline


def test_each_transform_is_fitted_on_the_output_of_the_previous_ones():
    x = np.array([[0, 255], [255, 255]], dtype=np.uint8)
    pipeline, (out, _) = fit_apply([{"transform": "rescale", "scale": 1 / 255},
                                    {"transform": "standardize"}], x)
    assert pipeline.state()[1]["mean"] == pytest.approx([0.5, 1.0])  # of the rescaled values
    assert out.tolist() == [[-1.0, 0.0], [1.0, 0.0]]


def test_state_is_json_serializable():
    pipeline = fit_pipeline(specs({"transform": "multi_hot", "dimension": 4},
                                  {"transform": "standardize"},
                                  {"transform": "one_hot"}),
                            ragged([1], [2, 3]), np.array([0, 1]))
    state = json.loads(json.dumps(pipeline.state()))
    assert [s["transform"] for s in state] == ["multi_hot", "standardize", "one_hot"]
    assert state[0]["dimension"] == 4 and state[1]["std"] == [1.0, 0.5, 0.5, 0.5]
    assert state[2]["num_classes"] == 2


def test_pad_sequences_with_keras():
    pipeline, (x, _) = fit_apply([{"transform": "pad_sequences", "maxlen": 3}],
                                 ragged([1, 2, 3, 4], [5]))
    assert x.tolist() == [[2, 3, 4], [0, 0, 5]]  # pre-truncated, pre-padded (Keras defaults)
    post = fit_pipeline(specs({"transform": "pad_sequences", "maxlen": 3, "padding": "post",
                               "truncating": "post", "value": -1}), ragged([1]), None)
    assert post.apply(ragged([1, 2, 3, 4], [5]))[0].tolist() == [[1, 2, 3], [5, -1, -1]]

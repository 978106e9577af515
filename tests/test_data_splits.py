"""Splits: test part, hold-out validation, K-fold family, stratification choice."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.data.dataset import Dataset
from dlrun.data.splits import (Split, apply_test_split, holdout_split, kfold_splits,
                               resolve_stratify, take)
from dlrun.errors import DataError
from dlrun.recipe.schema import HoldoutPart, SplitSpec


def part(**fields):
    return HoldoutPart(**fields)


def assert_partition(split: Split, n: int):
    both = np.concatenate([split.train, split.validation])
    assert len(both) == n and set(both.tolist()) == set(range(n))


# --------------------------------------------------------------------------- hold-out


def test_first_n_is_the_books_x_train_colon_10000():
    s = holdout_split(25000, part(first=10000), seed=0)
    assert s.name == "holdout"
    np.testing.assert_array_equal(s.validation, np.arange(10000))
    np.testing.assert_array_equal(s.train, np.arange(10000, 25000))


def test_last_n():
    s = holdout_split(10, part(last=3), seed=0)
    assert s.validation.tolist() == [7, 8, 9] and s.train.tolist() == list(range(7))


def test_fraction_is_seeded_disjoint_and_covers_every_row():
    a = holdout_split(100, part(fraction=0.25), seed=7)
    assert len(a.validation) == 25
    assert_partition(a, 100)
    again = holdout_split(100, part(fraction=0.25), seed=7)
    other = holdout_split(100, part(fraction=0.25), seed=8)
    np.testing.assert_array_equal(a.validation, again.validation)
    assert a.validation.tolist() != other.validation.tolist()
    assert a.validation.tolist() != list(range(75, 100))  # shuffled, not the tail


def test_fraction_rounds_up_and_without_shuffle_takes_the_last_rows():
    s = holdout_split(10, part(fraction=0.25, shuffle=False), seed=0)
    assert s.validation.tolist() == [7, 8, 9]  # ceil(2.5) rows, like train_test_split


def test_no_validation():
    s = holdout_split(5, "none", seed=0)
    assert s.validation is None and s.train.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("held", [{"first": 10}, {"last": 12}, {"fraction": 0.95}])
def test_holding_out_everything_is_an_error(held):
    with pytest.raises(DataError, match=r"data.split.validation\.\w+: .*10 rows|none for training"):
        holdout_split(10, part(**held), seed=0)


def test_take_indexes_ragged_object_arrays():
    seqs = np.empty(3, dtype=object)
    seqs[:] = [[1], [2, 2], [3, 3, 3]]
    assert take(seqs, np.array([2, 0])).tolist() == [[3, 3, 3], [1]]
    assert take(None, np.array([0])) is None


# --------------------------------------------------------------------------- test part


def small_dataset(with_test=False):
    x, y = np.arange(20).reshape(10, 2), np.arange(10)
    return Dataset(x, y, x[:2] if with_test else None, y[:2] if with_test else None,
                   name="toy", info={"source": "npz"})


def test_test_dataset_keeps_and_none_drops_the_sources_test_split():
    ds = small_dataset(with_test=True)
    kept = apply_test_split(ds, SplitSpec(test="dataset"), seed=0)
    assert kept.x_test is ds.x_test and kept.info["test_split"] == "dataset"
    dropped = apply_test_split(ds, SplitSpec(test="none"), seed=0)
    assert dropped.x_test is None and dropped.y_test is None
    assert ds.x_test is not None  # the input is not modified


def test_test_part_is_taken_out_of_the_training_data():
    ds = apply_test_split(small_dataset(), SplitSpec(test=part(last=3)), seed=0)
    assert ds.y_train.tolist() == list(range(7)) and ds.y_test.tolist() == [7, 8, 9]
    assert ds.x_test.tolist() == [[14, 15], [16, 17], [18, 19]]
    assert ds.info["test_indices"] == [7, 8, 9] and ds.info["test_split"] == {"last": 3}
    assert ds.info["n_train"] == 7 and ds.info["n_test"] == 3


def test_test_fraction_is_reproducible_with_the_seed():
    spec = SplitSpec(test=part(fraction=0.3))
    a, b = (apply_test_split(small_dataset(), spec, seed=3) for _ in range(2))
    assert a.info["test_indices"] == b.info["test_indices"] and len(a.y_test) == 3
    assert sorted(a.y_train.tolist() + a.y_test.tolist()) == list(range(10))


def test_a_second_test_split_is_refused():
    with pytest.raises(DataError, match="test: dataset.*test: none"):
        apply_test_split(small_dataset(with_test=True), SplitSpec(test=part(first=2)), seed=0)


# --------------------------------------------------------------------------- K-fold


def test_kfold_counts_disjoint_validation_folds_covering_every_row():
    folds = kfold_splits(np.zeros(103), k=5, shuffle=True, stratify=False, seed=1)
    assert [f.name for f in folds] == ["fold_1", "fold_2", "fold_3", "fold_4", "fold_5"]
    validated = np.concatenate([f.validation for f in folds])
    assert sorted(validated.tolist()) == list(range(103))  # each row validated exactly once
    for f in folds:
        assert_partition(f, 103)


def test_unshuffled_kfold_is_the_books_listing_3_27_partition():
    n, k = 404, 4  # Boston housing
    num_val_samples = n // k
    for i, f in enumerate(kfold_splits(np.zeros(n), k, shuffle=False, stratify=False, seed=0)):
        val = np.arange(i * num_val_samples, (i + 1) * num_val_samples)
        np.testing.assert_array_equal(f.validation, val)
        np.testing.assert_array_equal(f.train, np.setdiff1d(np.arange(n), val))


def test_unshuffled_kfold_with_a_remainder_gives_the_first_folds_one_more_row():
    folds = kfold_splits(np.zeros(10), k=4, shuffle=False, stratify=False, seed=0)
    assert [f.validation.tolist() for f in folds] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]


def test_shuffled_kfold_depends_on_the_seed_only():
    y = np.zeros(50)
    a = kfold_splits(y, 5, shuffle=True, stratify=False, seed=1)
    b = kfold_splits(y, 5, shuffle=True, stratify=False, seed=1)
    c = kfold_splits(y, 5, shuffle=True, stratify=False, seed=2)
    assert all(np.array_equal(x.validation, z.validation) for x, z in zip(a, b))
    assert any(not np.array_equal(x.validation, z.validation) for x, z in zip(a, c))


def test_stratified_kfold_keeps_the_class_ratios():
    y = np.array([0] * 80 + [1] * 20)
    for f in kfold_splits(y, 5, shuffle=True, stratify=True, seed=0):
        assert np.bincount(y[f.validation]).tolist() == [16, 4]
        assert np.bincount(y[f.train]).tolist() == [64, 16]
    plain = kfold_splits(y, 5, shuffle=False, stratify=False, seed=0)
    assert np.bincount(y[plain[0].validation], minlength=2).tolist() == [20, 0]


def test_stratified_kfold_accepts_keras_style_n_by_1_labels():
    y = np.array([[0], [1]] * 10, dtype=np.uint8)  # e.g. CIFAR labels
    folds = kfold_splits(y, 2, shuffle=False, stratify=True, seed=0)
    assert all(np.bincount(y[f.validation, 0]).tolist() == [5, 5] for f in folds)


def test_repeated_kfold_names_and_different_repetitions():
    folds = kfold_splits(np.zeros(30), 3, shuffle=True, stratify=False, seed=0, repeats=2)
    assert [f.name for f in folds] == ["r1_fold_1", "r1_fold_2", "r1_fold_3",
                                       "r2_fold_1", "r2_fold_2", "r2_fold_3"]
    for rep in (folds[:3], folds[3:]):
        assert sorted(np.concatenate([f.validation for f in rep]).tolist()) == list(range(30))
    assert not np.array_equal(folds[0].validation, folds[3].validation)
    strat = kfold_splits(np.array([0, 1] * 15), 3, True, True, seed=0, repeats=3)
    assert len(strat) == 9 and strat[-1].name == "r3_fold_3"


def test_kfold_errors_give_the_numbers():
    with pytest.raises(DataError, match="at least 5 training samples; there are 3"):
        kfold_splits(np.zeros(3), 5, shuffle=True, stratify=False, seed=0)
    with pytest.raises(DataError, match="class 2 has only 2 samples, fewer than k = 4"):
        kfold_splits(np.array([0] * 10 + [1] * 10 + [2] * 2), 4, True, True, seed=0)
    with pytest.raises(DataError, match="repeat the same folds"):
        kfold_splits(np.zeros(10), 2, shuffle=False, stratify=False, seed=0, repeats=2)
    with pytest.raises(DataError, match="stratify: false"):
        kfold_splits(np.linspace(0, 1, 10), 2, shuffle=True, stratify=True, seed=0)


# --------------------------------------------------------------------------- stratify


@pytest.mark.parametrize("y, loss, expected", [
    (np.array([0, 1, 2]), "sparse_categorical_crossentropy", True),
    (np.array([0, 1, 2]), "SparseCategoricalCrossentropy", True),
    (np.array([0.0, 1.0, 1.0], dtype=np.float32), "binary_crossentropy", True),  # book's IMDB
    (np.array([0, 1, 1]), "BinaryFocalCrossentropy", True),
    (np.array([[3], [1]], dtype=np.uint8), "categorical_crossentropy", True),
    (np.array([0, 1, 1]), "hinge", True),
    (np.array([15.2, 42.3]), "mse", False),
    (np.array([1, 2, 3]), "mean_squared_error", False),
    (np.array([0.2, 0.9]), "binary_crossentropy", False),  # soft labels
    (np.eye(3), "categorical_crossentropy", False),  # already one-hot: not a label vector
])
def test_auto_stratify(y, loss, expected):
    assert resolve_stratify("auto", y, loss) is expected


def test_explicit_stratify_setting_wins():
    assert resolve_stratify(False, np.array([0, 1]), "binary_crossentropy") is False
    assert resolve_stratify(True, np.array([0, 1]), "mse") is True

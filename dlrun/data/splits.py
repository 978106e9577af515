"""Test, validation and K-fold splits as integer index arrays into the training data.

Every split is reproducible from the recipe seed; K-fold uses scikit-learn's splitters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from dlrun.data.dataset import Dataset, NamedArrays, describe
from dlrun.errors import DataError

if TYPE_CHECKING:
    from dlrun.recipe.schema import HoldoutPart, SplitSpec


@dataclass
class Split:
    """One training/validation partition: indices into the training arrays (``None`` for
    streamed data, whose parts the source fixes)."""

    name: str
    train: np.ndarray | None
    validation: np.ndarray | None


def take(a: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    """Rows ``idx`` of ``a`` (object arrays of ragged sequences included); ``None`` stays."""
    return None if a is None else a[idx]


# --------------------------------------------------------------------------- hold-out


def part_indices(
    n: int, part: HoldoutPart, seed: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, held)`` sorted indices for a ``HoldoutPart`` over ``n`` rows.

    ``first: N`` holds rows [0, N) (the book's ``x_val = x_train[:10000]``), ``last: N``
    rows [n-N, n). ``fraction: f`` holds ceil(f·n) rows (as scikit-learn's
    ``train_test_split``): chosen at random with ``seed`` when ``shuffle``, else the last
    ones (like Keras' ``validation_split``).
    """
    if part.first is not None or part.last is not None:
        size, key = (part.first, "first") if part.first is not None else (part.last, "last")
        if size >= n:
            raise DataError(f"{where}.{key}: {size} rows leave none for training: the data has "
                            f"{n} rows; hold out fewer, or use a fraction")
        held = np.arange(size) if key == "first" else np.arange(n - size, n)
    else:
        size = math.ceil(part.fraction * n)
        if size >= n:
            raise DataError(f"{where}.fraction: {part.fraction} of {n} rows is {size} rows and "
                            f"leaves none for training; use a smaller fraction")
        if part.shuffle:
            held = np.sort(np.random.default_rng(seed).permutation(n)[:size])
        else:
            held = np.arange(n - size, n)
    rest = np.setdiff1d(np.arange(n), held, assume_unique=True)
    return rest, held


def apply_test_split(ds: Dataset, spec: SplitSpec, seed: int) -> Dataset:
    """Apply ``spec.test`` (a ``SplitSpec``): keep the source's test split (``dataset``),
    drop it (``none``), or take a ``HoldoutPart`` of the training data as test data.
    Returns a new Dataset; what was done is recorded in ``info["test_split"]``."""
    info = dict(ds.info)
    if spec.test == "dataset":
        info["test_split"] = "dataset" if ds.x_test is not None else "dataset (the source has none)"
        return replace(ds, info=info)
    if spec.test == "none":
        info["test_split"] = "none"
        info.update(n_test=None)
        return replace(ds, x_test=None, y_test=None, info=info)
    if ds.x_test is not None:
        raise DataError(
            f"data.split.test: {ds.name or 'this dataset'} already has its own test split "
            f"({len(ds.x_test)} samples); write `test: dataset` to use it or `test: none` to "
            f"drop it, instead of taking another test part out of the training data"
        )
    rest, held = part_indices(len(ds.x_train), spec.test, seed, "data.split.test")
    info.update(test_split=spec.test.model_dump(exclude_none=True), test_indices=held.tolist())
    origin, rows = (ds.source_rows or {}).get("train") or ("train", np.arange(len(ds.x_train)))
    out = Dataset(ds.x_train[rest], ds.y_train[rest], ds.x_train[held], ds.y_train[held],
                  name=ds.name, info=info, source_rows={"train": (origin, rows[rest]), "test": (origin, rows[held])})
    out.info.update(describe(out))
    return out


def holdout_split(n: int, validation: Literal["none"] | HoldoutPart, seed: int) -> Split:
    """The hold-out protocol's one split of ``n`` training rows (validation ``None`` for "none")."""
    if validation == "none":
        return Split("holdout", np.arange(n), None)
    rest, held = part_indices(n, validation, seed, "data.split.validation")
    return Split("holdout", rest, held)


# --------------------------------------------------------------------------- K-fold


def kfold_splits(y: np.ndarray, k: int, shuffle: bool, stratify: bool, seed: int,
                 repeats: int = 1) -> list[Split]:
    """K-fold (``repeats`` > 1: iterated K-fold) over ``len(y)`` training rows.

    Folds are scikit-learn's KFold / StratifiedKFold / RepeatedKFold /
    RepeatedStratifiedKFold; ``seed`` is used only when shuffling. Unshuffled, fold i
    validates on a contiguous block of rows, the book's Listing 3.27 partition
    ``[i * (n // k), (i + 1) * (n // k))`` when k divides n (Boston: 404 rows, k = 4).
    When it does not, scikit-learn gives the first ``n % k`` folds one extra row so that
    every row is validated exactly once, whereas the listing validates n // k rows per fold
    and never validates the last ``n % k`` rows.
    Names: ``fold_1``…``fold_k``; with repeats ``r1_fold_1``….
    """
    from sklearn.model_selection import (KFold, RepeatedKFold, RepeatedStratifiedKFold,
                                         StratifiedKFold)

    n = len(y)
    if n < k:
        raise DataError(f"evaluation.k: {k}-fold needs at least {k} training samples; there "
                        f"are {n}")
    if repeats > 1 and not shuffle:
        raise DataError(f"evaluation.repeats: {repeats} repeats without shuffling would repeat "
                        f"the same folds; set `shuffle: true` or `repeats: 1`")
    labels = _labels_for_stratification(y, k) if stratify else None
    if repeats > 1:
        cls = RepeatedStratifiedKFold if stratify else RepeatedKFold
        splitter = cls(n_splits=k, n_repeats=repeats, random_state=seed)
    else:
        cls = StratifiedKFold if stratify else KFold
        splitter = cls(n_splits=k, shuffle=shuffle, random_state=seed if shuffle else None)
    target = labels if stratify else np.zeros(n)
    splits = []
    for i, (train, val) in enumerate(splitter.split(np.zeros((n, 1)), target)):
        fold = f"fold_{i % k + 1}"
        splits.append(Split(f"r{i // k + 1}_{fold}" if repeats > 1 else fold, train, val))
    return splits


def _labels_for_stratification(y: np.ndarray, k: int) -> np.ndarray:
    labels = None if isinstance(y, NamedArrays) else _as_label_vector(y)  # several targets: no one label
    if labels is None:
        what = ("are named arrays (several outputs)" if isinstance(y, NamedArrays)
                else f"have shape {list(y.shape)} and dtype {y.dtype}")
        raise DataError(f"evaluation.stratify: stratified K-fold needs one integer class label "
                        f"per sample; these targets {what}; set `stratify: false`")
    classes, counts = np.unique(labels, return_counts=True)
    small = counts < k
    if small.any():
        label, count = classes[small][0], counts[small][0]
        raise DataError(f"evaluation.stratify: class {label} has only {count} samples, fewer "
                        f"than k = {k} folds, so some folds could not contain it; lower k or "
                        f"set `stratify: false`")
    return labels


def _as_label_vector(y: np.ndarray) -> np.ndarray | None:
    """y as a 1-D int vector when it holds integer class labels of shape (n,) or (n, 1)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype == object:
        return None
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)  # e.g. the book's float32 0/1 IMDB labels
    return None


# Losses whose targets are class labels (matched on the lowercase name, "_" removed).
_CLASSIFICATION_LOSS_WORDS = ("crossentropy", "hinge")


def is_classification_loss(name: str) -> bool:
    """Any cross-entropy or hinge loss, in snake_case or CamelCase."""
    loss = name.lower().replace("_", "")
    return any(word in loss for word in _CLASSIFICATION_LOSS_WORDS)


def class_labels(y, loss_name: str) -> np.ndarray | None:
    """One integer class per row of ``y`` under a classification loss: integer labels of shape
    (n,) or (n, 1), or one-hot rows for a categorical (not sparse) loss; ``None`` for anything
    else (values, multi-hot rows, named targets, a loss that does not classify)."""
    if isinstance(y, NamedArrays) or not is_classification_loss(loss_name):
        return None
    labels = _as_label_vector(y)
    if labels is not None:
        return labels
    y = np.asarray(y)
    sparse = "sparse" in loss_name.lower()
    if sparse or "categorical" not in loss_name.lower() or y.ndim != 2 or y.dtype == object or not len(y):
        return None
    one_hot = np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()
    return np.argmax(y, axis=1) if one_hot else None


def resolve_stratify(setting: Literal["auto"] | bool, y: np.ndarray, loss_name: str | list[str]) -> bool:
    """``auto``: stratify when y holds integer labels and the loss is a classification one
    (any cross-entropy or hinge loss, in snake_case or CamelCase); never for named targets
    (several outputs: no one label to stratify on)."""
    if setting != "auto":
        return bool(setting)
    if not isinstance(loss_name, str):
        loss_name = loss_name[0] if len(loss_name) == 1 else ""
    if isinstance(y, NamedArrays) or not loss_name:
        return False
    return is_classification_loss(loss_name) and _as_label_vector(y) is not None

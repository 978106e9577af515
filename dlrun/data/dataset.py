"""The in-memory dataset every source returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class Dataset:
    """Training arrays, the source's own test split if it has one, and facts to record.

    ``x`` may be an object array of ragged integer sequences (IMDB, Reuters). ``info`` holds
    JSON-serializable facts for the run directory: source, file path, shapes, class counts…
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    name: str = ""
    info: dict = field(default_factory=dict)


def describe(ds: Dataset) -> dict:
    """Shapes, dtypes and class counts of ``ds`` as JSON-serializable facts."""
    facts = {
        "n_train": int(len(ds.x_train)),
        "n_test": None if ds.x_test is None else int(len(ds.x_test)),
        "x_sample_shape": _sample_shape(ds.x_train),
        "x_dtype": str(ds.x_train.dtype),
        "y_sample_shape": _sample_shape(ds.y_train),
        "y_dtype": str(ds.y_train.dtype),
    }
    counts = class_counts(ds.y_train)
    if counts is not None:
        facts["train_class_counts"] = counts
    return facts


def class_counts(y: np.ndarray) -> dict[str, int] | None:
    """``{label: count}`` for integer labels of shape (n,) or (n, 1); ``None`` otherwise."""
    if not np.issubdtype(y.dtype, np.integer) and y.dtype != bool:
        return None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        return None
    labels, counts = np.unique(y, return_counts=True)
    return {str(label): int(count) for label, count in zip(labels.tolist(), counts.tolist())}


def _sample_shape(a: np.ndarray) -> list[int] | str:
    # Object arrays hold one variable-length sequence per sample.
    return "ragged" if a.dtype == object else list(a.shape[1:])


@dataclass
class StreamedDataset:
    """Data that is streamed rather than held in memory (image folders, time-series windows).

    Each part is a factory returning a *batched* ``tf.data.Dataset`` of ``(x, y)``; ``train``
    reshuffles every epoch where the source shuffles. The parts are fixed by the source
    (folders, chronological ranges), so only the hold-out protocol applies.

    ``fitted`` holds statistics fitted on the training part (written to ``preprocessing.json``).
    ``extra_metrics(metrics)`` (optional) gets a job's final metrics (``val_mae``, ``test_mae``…)
    and returns more to report next to them: a baseline, a metric in the target's own units.
    """

    name: str
    train: Callable[[], Any]
    validation: Callable[[], Any] | None = None
    test: Callable[[], Any] | None = None
    info: dict = field(default_factory=dict)
    fitted: dict = field(default_factory=dict)
    extra_metrics: Callable[[dict], dict] | None = None

"""The in-memory dataset every source returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


class NamedArrays:
    """Arrays with one row per sample, by name: a graph model's inputs or targets (``data.x:
    {text: x_text, question: x_question}``). Indexing by rows (``a[idx]``, ``a[:8]``) and
    ``len`` work as for one array, so splits, ``limit`` and ``shuffle`` need no special case;
    ``a["text"]`` is one array. Keras gets :meth:`as_dict` (see :func:`plain`)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        lengths = {name: len(a) for name, a in arrays.items()}
        if not arrays or len(set(lengths.values())) != 1:
            raise ValueError(f"named arrays need the same number of rows: {lengths}")
        self.arrays = dict(arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.arrays[key]
        return NamedArrays({name: a[key] for name, a in self.arrays.items()})

    def keys(self):
        return self.arrays.keys()

    def items(self):
        return self.arrays.items()

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(self.arrays)

    def __repr__(self) -> str:
        return f"NamedArrays({sample_shapes(self)}, rows={len(self)})"


def plain(part):
    """What Keras takes: named arrays as a dict (tuples of parts too); arrays unchanged."""
    if isinstance(part, tuple):
        return tuple(plain(p) for p in part)
    return part.as_dict() if isinstance(part, NamedArrays) else part


def rows(a, idx):
    """Rows ``idx`` of an array, named arrays or a dict of arrays."""
    if isinstance(a, dict):
        return {name: v[idx] for name, v in a.items()}
    return a[idx]


def sample_shapes(a) -> Any:
    """One sample's shape, or each named array's."""
    if isinstance(a, (dict, NamedArrays)):
        return {name: tuple(np.shape(v)[1:]) for name, v in a.items()}
    return tuple(getattr(a, "shape", (len(a),))[1:])


def sample_signature(a) -> Any:
    """One sample's shape and dtype, or each named array's: what a model check depends on."""
    if isinstance(a, (dict, NamedArrays)):
        return tuple(sorted((name, sample_signature(v)) for name, v in a.items()))
    a = np.asarray(a)
    return a.shape[1:], a.dtype.str


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
    # Where each row came from, through shuffle, limit and a test part taken out of the
    # training rows: {"train": (source part, row numbers), "test": …} (see :func:`source_row`).
    source_rows: dict | None = None


def source_row(ds: Dataset, part: str, i: int) -> str:
    """Row ``i`` of ``ds``'s ``part`` ("train" or "test") in the source's own terms: a CSV
    line, an npz array's row, a row of the source's training or test data."""
    origin, rows = (ds.source_rows or {}).get(part) or (part, None)
    row = int(rows[i]) if rows is not None else int(i)
    info = ds.info
    if info.get("source") == "csv":
        return f"line {row + 2} of {info['path']}"  # +1 for the header, +1 from 0-based
    if info.get("source") == "npz":
        key = (info.get("keys") or {}).get("y" if origin == "train" else "y_test")
        if isinstance(key, str):
            return f"row {row} of array '{key}' in {info['path']}"
        return f"row {row} of the {origin} arrays of {info['path']}"
    return f"row {row} of the source's {'training' if origin == 'train' else 'test'} data"


def describe(ds: Dataset) -> dict:
    """Shapes, dtypes and class counts of ``ds`` as JSON-serializable facts."""
    if isinstance(ds.x_train, NamedArrays) or isinstance(ds.y_train, NamedArrays):
        return _describe_named(ds)
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


def _describe_named(ds: Dataset) -> dict:
    """Per input/output name: sample shape and dtype (and class counts of integer targets)."""
    def each(part):
        if not isinstance(part, NamedArrays):
            return {"sample_shape": _sample_shape(part), "dtype": str(part.dtype)}
        return {name: {"sample_shape": _sample_shape(a), "dtype": str(a.dtype)} for name, a in part.items()}

    facts = {"n_train": int(len(ds.x_train)), "n_test": None if ds.x_test is None else int(len(ds.x_test)),
             "x": each(ds.x_train), "y": each(ds.y_train)}
    targets = ds.y_train.items() if isinstance(ds.y_train, NamedArrays) else [("y", ds.y_train)]
    counts = {name: c for name, a in targets if (c := class_counts(a)) is not None}
    if counts:
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
    ``train_stream()`` (optional) is the training part as a seekable seeded stream.
    ``extra_metrics(metrics)`` (optional) gets a job's final metrics (``val_mae``, ``test_mae``…)
    and returns more to report next to them: a baseline, a metric in the target's own units.
    ``samplers`` (optional): see :mod:`dlrun.training.samples`.
    """

    name: str
    train: Callable[[], Any]
    validation: Callable[[], Any] | None = None
    test: Callable[[], Any] | None = None
    info: dict = field(default_factory=dict)
    fitted: dict = field(default_factory=dict)
    extra_metrics: Callable[[dict], dict] | None = None
    # The training part as a seekable stream (dlrun.data.streams.BatchStream), where the
    # source can give one: its order depends only on the seed, so a resume continues it exactly.
    train_stream: Callable[[], Any] | None = None
    # Callbacks the source adds to training when the recipe asks for samples (a character
    # model's text): ``samplers(samples_spec, folder, on_file, log) -> [callbacks]``.
    samplers: Callable[..., list] | None = None

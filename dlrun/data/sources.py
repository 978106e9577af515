"""Load the dataset a recipe's ``data`` section names: a registry keyed by ``source``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from dlrun.data.dataset import Dataset, StreamedDataset, describe
from dlrun.data.embedded import load_embedded
from dlrun.data.files import load_csv, load_npz
from dlrun.data.finite import check_finite
from dlrun.data.keras_datasets import load_keras
from dlrun.errors import DataError

def _text_directory(spec, base_dir: Path) -> Dataset:
    from dlrun.data.text import load_text_directory

    return load_text_directory(spec, base_dir)


def _image_directory(spec, base_dir: Path, *, seed: int, batch_size: int) -> StreamedDataset:
    from dlrun.data.images import load_image_directory

    return load_image_directory(spec, base_dir, seed=seed, batch_size=batch_size)


def _text_chars(spec, base_dir: Path, *, seed: int, batch_size: int) -> StreamedDataset:
    from dlrun.data.text_chars import load_text_chars

    return load_text_chars(spec, base_dir, seed=seed, batch_size=batch_size)


def _timeseries_csv(spec, base_dir: Path, *, seed: int, batch_size: int) -> StreamedDataset:
    from dlrun.data.timeseries import load_timeseries

    return load_timeseries(spec, base_dir, seed=seed, batch_size=batch_size)


# Each loader takes (spec, base_dir) and returns the full Dataset; `limit` is applied here.
SOURCES: dict[str, Callable[..., Dataset]] = {
    "embedded": load_embedded,
    "keras": load_keras,
    "npz": load_npz,
    "csv": load_csv,
    "text_directory": _text_directory,
}
# Streamed sources fix their own train/validation/test parts and batch them.
STREAMED: dict[str, Callable[..., StreamedDataset]] = {
    "image_directory": _image_directory,
    "timeseries_csv": _timeseries_csv,
    "text_chars": _text_chars,
}


def load_data(spec, base_dir: Path, seed: int = 0, batch_size: int = 32) -> Dataset | StreamedDataset:
    """An in-memory :class:`Dataset` or, for streamed sources, a :class:`StreamedDataset`."""
    try:
        if spec.source in STREAMED:
            ds = STREAMED[spec.source](spec, Path(base_dir), seed=seed, batch_size=batch_size)
            ds.info = {"source": spec.source, "name": ds.name, **ds.info}
            return ds
        return load_dataset(spec, base_dir, seed)
    except OSError as error:  # each source names its files; this catches what one did not foresee
        raise unreadable(error, spec) from error


def unreadable(error: OSError, spec) -> DataError:
    """One located line for a file a source could not read (permissions, a folder in its place…)."""
    name = error.filename or getattr(spec, "path", None) or spec.source
    return DataError(f"data ({spec.source}): cannot read {name}: {error.strerror or error}")


def keep_labels(ds: Dataset, labels: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Keep only the rows labelled one of ``labels``, in both parts (8.5's frogs of CIFAR-10);
    returns the source's row numbers of those kept."""
    def rows(y) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1) or y.dtype.kind not in "biu":
            raise DataError(f"data.keep_labels: the labels must be class numbers, one per row (these have shape "
                            f"{y.shape[1:]} and dtype {y.dtype})")
        return np.isin(y.reshape(len(y)), labels)

    kept = rows(ds.y_train)
    if not kept.any():
        present = sorted(set(np.asarray(ds.y_train).reshape(-1).tolist()))[:20]
        raise DataError(f"data.keep_labels: no training row has a label in {labels} (labels present: {present})")
    ds.x_train, ds.y_train = ds.x_train[kept], ds.y_train[kept]
    if ds.y_test is None:
        return np.flatnonzero(kept), None
    kept_test = rows(ds.y_test)
    ds.x_test, ds.y_test = ds.x_test[kept_test], ds.y_test[kept_test]
    return np.flatnonzero(kept), np.flatnonzero(kept_test)


def load_dataset(spec, base_dir: Path, seed: int = 0) -> Dataset:
    """Load ``spec`` (a ``DataSpec``); relative paths resolve against ``base_dir``, the
    recipe file's folder. ``spec.keep_labels`` keeps the rows of those classes first;
    ``spec.shuffle`` permutes the training rows once with ``seed``;
    then ``spec.limit`` keeps only the first N training samples (the source's own test
    split is untouched); a limit above the size keeps everything."""
    ds = SOURCES[spec.source](spec, Path(base_dir))
    check_finite(ds, spec.source)
    info = {"source": spec.source, "name": ds.name, **ds.info}
    train_rows, test_rows = np.arange(len(ds.x_train)), None if ds.x_test is None else np.arange(len(ds.x_test))
    if spec.keep_labels is not None:
        info.update(keep_labels=list(spec.keep_labels), n_train_before_keep_labels=len(ds.y_train))
        train_rows, test_rows = keep_labels(ds, spec.keep_labels)
    if spec.shuffle:
        order = np.random.default_rng(seed).permutation(len(ds.x_train))
        ds.x_train, ds.y_train = ds.x_train[order], ds.y_train[order]
        train_rows = train_rows[order]
        info["shuffled_with_seed"] = seed
    if spec.limit is not None:
        info["limit"] = spec.limit
        info["n_train_before_limit"] = int(len(ds.x_train))
        ds.x_train, ds.y_train = ds.x_train[: spec.limit], ds.y_train[: spec.limit]
        train_rows = train_rows[: spec.limit]
    ds.source_rows = {"train": ("train", train_rows), "test": None if ds.x_test is None else ("test", test_rows)}
    info.update(describe(ds))
    ds.info = info
    return ds

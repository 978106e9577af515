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


def load_dataset(spec, base_dir: Path, seed: int = 0) -> Dataset:
    """Load ``spec`` (a ``DataSpec``); relative paths resolve against ``base_dir``, the
    recipe file's folder. ``spec.shuffle`` permutes the training rows once with ``seed``;
    then ``spec.limit`` keeps only the first N training samples (the source's own test
    split is untouched); a limit above the size keeps everything."""
    ds = SOURCES[spec.source](spec, Path(base_dir))
    check_finite(ds, spec.source)
    info = {"source": spec.source, "name": ds.name, **ds.info}
    train_rows = np.arange(len(ds.x_train))
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
    ds.source_rows = {"train": ("train", train_rows),
                      "test": None if ds.x_test is None else ("test", np.arange(len(ds.x_test)))}
    info.update(describe(ds))
    ds.info = info
    return ds

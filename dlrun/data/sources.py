"""Load the dataset a recipe's ``data`` section names: a registry keyed by ``source``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from dlrun.data.dataset import Dataset, StreamedDataset, describe
from dlrun.data.embedded import load_embedded
from dlrun.data.files import load_csv, load_npz
from dlrun.data.keras_datasets import load_keras

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
    if spec.source in STREAMED:
        ds = STREAMED[spec.source](spec, Path(base_dir), seed=seed, batch_size=batch_size)
        ds.info = {"source": spec.source, "name": ds.name, **ds.info}
        return ds
    return load_dataset(spec, base_dir, seed)


def load_dataset(spec, base_dir: Path, seed: int = 0) -> Dataset:
    """Load ``spec`` (a ``DataSpec``); relative paths resolve against ``base_dir``, the
    recipe file's folder. ``spec.shuffle`` permutes the training rows once with ``seed``;
    then ``spec.limit`` keeps only the first N training samples (the source's own test
    split is untouched); a limit above the size keeps everything."""
    ds = SOURCES[spec.source](spec, Path(base_dir))
    info = {"source": spec.source, "name": ds.name, **ds.info}
    if spec.shuffle:
        order = np.random.default_rng(seed).permutation(len(ds.x_train))
        ds.x_train, ds.y_train = ds.x_train[order], ds.y_train[order]
        info["shuffled_with_seed"] = seed
    if spec.limit is not None:
        info["limit"] = spec.limit
        info["n_train_before_limit"] = int(len(ds.x_train))
        ds.x_train, ds.y_train = ds.x_train[: spec.limit], ds.y_train[: spec.limit]
    info.update(describe(ds))
    ds.info = info
    return ds

"""A time-series run's new input: a CSV of the series → one window per forecast.

For row ``i`` the window holds rows ``i − lookback … i − step`` (every ``step`` rows), as in
training (:mod:`dlrun.data.windows`); its forecast is the target at row ``i + delay``. Windows
end at every row from ``lookback`` up to the file's last row + 1, so the last forecast is for
``delay`` rows after the end of the file. The file is read in chunks; each chunk carries the
previous chunk's last ``lookback`` rows, so no window is lost at a boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun.errors import DataError
from dlrun.inference.inputs import Inputs, _count_lines, _csv_chunks, _expect_suffix


def series_inputs(trained, path: Path | None) -> Inputs:
    if path is None:
        raise DataError("INPUT: a time-series run reads a CSV file of the series, not stdin")
    _expect_suffix(path, (".csv", ".tsv", ".txt"), "a CSV of the series")
    spec, info = trained.recipe.data, trained.run.data_info()
    columns = list(info.get("columns") or [])
    if not columns:
        raise DataError(f"INPUT: run {trained.run.path} does not record its series' columns (data.json)")
    offsets = np.arange(-spec.lookback, 0, spec.step, dtype=np.int64)
    if spec.reverse:
        offsets = offsets[::-1]
    rows = _count_lines(path) - 1
    if rows < spec.lookback:
        raise DataError(f"INPUT: {path} has {rows} rows; a window needs lookback = {spec.lookback}")

    def batches(size):
        carry = np.zeros((0, len(columns)))
        for first, frame in _csv_chunks(path, spec.delimiter, max(size, spec.lookback)):
            values = _values(frame, columns, path, first)
            block = np.concatenate([carry, values])
            start = first - len(carry)  # the absolute row of block[0]
            ends = np.arange(max(spec.lookback, len(carry)), len(block) + (first + len(frame) == rows))
            for k in range(0, len(ends), size):
                chunk = ends[k:k + size]
                yield [int(start + e) for e in chunk], block[chunk[:, None] + offsets].astype(np.float32)
            carry = block[-spec.lookback:]

    return Inputs(str(path), "row", max(0, rows - spec.lookback + 1), batches)


def _values(frame, columns: list[str], path: Path, first: int) -> np.ndarray:
    import pandas as pd

    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"INPUT: {path} has no column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                        f"— the run's series has the columns {', '.join(columns)}")
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(f"INPUT: {path} line {first + row + 2}: column '{columns[col]}' is "
                        f"{frame[columns[col]].iloc[row]!r}, not a finite number (fill gaps before predicting)")
    return values


def normalized(trained, windows: np.ndarray) -> np.ndarray:
    """Windows in the units the model trained on: each column with the training rows' mean and std."""
    stats = trained.source_stats
    if not stats.get("normalize"):
        return windows
    columns = list(trained.run.data_info().get("columns") or [])
    mean = np.array([stats["mean"][c] for c in columns], dtype=np.float64)
    std = np.array([stats["std"][c] for c in columns], dtype=np.float64)
    return ((windows - mean) / std).astype(np.float32)


def original_units(trained, predictions: np.ndarray) -> np.ndarray:
    """A normalized forecast of the target back in the series' own units."""
    stats = trained.source_stats
    if not stats.get("normalize"):
        return predictions
    target = stats["target"]
    return predictions * stats["target_std"] + stats["mean"][target]

"""``source: timeseries_csv`` — a multivariate series in a CSV, windowed as the book does (6.3).

The Jena layout: a date-time column (``Date Time``, ``dd.mm.yyyy HH:MM:SS``) and numeric columns.
The rows are cut into chronological parts ``train``, ``validation``, ``test`` (``[start, end)``
row numbers after missing-value handling, or fractions of the row count), then each part is
windowed on its own (Listing 6.33, see :mod:`dlrun.data.windows`)::

    for row i:  samples = data[i - lookback : i : step]    (the last sample row is i - step)
                target  = data[i + delay][target]

Windows of a part use only rows of that part, targets included, so a chronological split never
overlaps. The book's generator lets a part's targets reach ``delay`` rows past its
``max_index`` (its last validation targets are test rows); dlrun's do not, so a part yields
``delay`` fewer windows than the book's.

``normalize`` subtracts the mean and divides by the standard deviation of the *training rows
only*, per column, the target included (Listing 6.32). ``reverse`` feeds each window latest row
first (6.3.8: ``x[:, ::-1, :]``). ``shuffle`` reshuffles the training windows on every pass
(seeded); validation and test stay in order.

``extra_metrics`` adds the common-sense baseline (6.3.3: predict the target's latest value in
the window; with ``reverse`` still the latest row, not the window's last position) on the
validation and test windows, in normalized units: ``val_baseline_mae``, ``test_baseline_mae``;
and every MAE (the job's ``val_mae``, ``test_mae``… and the baselines) converted back to the
target's own units — times the target's training standard deviation (factor 1 without
``normalize``) — as ``<name>_original_units``. The factor is recorded in ``preprocessing.json``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from dlrun.data.dataset import StreamedDataset
from dlrun.data.files import readable, resolve_path
from dlrun.data.finite import check_array
from dlrun.data.series_checks import NOTABLE_SHARE, in_time_order, interpolation_said, longest_gap
from dlrun.data.windows import Windows, batches, last_value_mae, window_dataset, window_stream
from dlrun.errors import DataError, did_you_mean

PARTS = ("train", "validation", "test")
JENA_URL = "https://s3.amazonaws.com/keras-datasets/jena_climate_2009_2016.csv.zip"
_MAE = re.compile(r"(^|_)mae($|_)")


def load_timeseries(spec, base_dir: Path, *, seed: int, batch_size: int) -> StreamedDataset:
    path = _series_file(spec.path, base_dir)
    table = _read_table(path, spec.delimiter)
    info: dict = {"path": str(path), "rows_in_file": len(table)}
    warnings: list[str] = []
    if spec.time_column is not None:
        table, info["time"] = in_time_order(table, _parse_times(table, spec.time_column, path), spec, path, warnings)
    columns, skipped = _columns(table, spec, path)
    values, missing = _handle_missing(table, columns, spec, path, warnings)
    if skipped:
        info["skipped_columns"] = skipped
    if missing:
        info["missing"] = missing
    if warnings:
        info["warnings"] = warnings  # said before training (dlrun.training.split_checks)

    windows = Windows(spec.lookback, spec.step, spec.delay)
    ranges = resolve_ranges(spec, len(values), windows)
    target = columns.index(spec.target)
    start, end = ranges["train"]
    fitted, series = _normalize(values, columns, spec, start, end)
    scale = fitted["target_std"]
    # The baseline in float64 (the windows are float32): its figure is exact to print.
    target_series = (values[:, target] - fitted.get("mean", {}).get(spec.target, 0.0)) / scale

    def factory(name: str, make=window_dataset):
        part_start, part_end = ranges[name]
        part = series[part_start:part_end]
        training = name == "train"
        return lambda: make(part, windows, target, batch_size=batch_size, seed=seed,
                            shuffle=training and spec.shuffle, reverse=spec.reverse)

    baselines: dict[str, float] = {}

    def extra_metrics(metrics: dict) -> dict:
        if not baselines:  # computed once, on first use
            for name, prefix in (("validation", "val"), ("test", "test")):
                if name in ranges:
                    part_start, part_end = ranges[name]
                    baselines[f"{prefix}_baseline_mae"] = last_value_mae(target_series[part_start:part_end], windows)
        extra = dict(baselines)
        for key, value in {**metrics, **baselines}.items():
            if _MAE.search(key) and not key.endswith("_original_units") and isinstance(value, (int, float)):
                extra[f"{key}_original_units"] = float(value) * scale
        return extra

    info.update({
        "rows": len(values), "columns": columns, "target": spec.target, "lookback": spec.lookback,
        "step": spec.step, "delay": spec.delay, "sample_shape": [windows.length, len(columns)],
        "reverse": spec.reverse, "shuffle": spec.shuffle, "batch_size": batch_size,
        "parts": {name: {"rows": list(r), "windows": windows.count(*r),
                         "batches": batches(windows.count(*r), batch_size), **windows.used_rows(*r)}
                  for name, r in ranges.items()},
    })
    return StreamedDataset(
        name=path.stem.removesuffix(".csv"),
        train=factory("train"),
        validation=factory("validation") if "validation" in ranges else None,
        test=factory("test") if "test" in ranges else None,
        info=info, fitted=fitted, extra_metrics=extra_metrics, train_stream=factory("train", window_stream),
    )


# --------------------------------------------------------------------------- reading


def _series_file(path_text: str, base_dir: Path) -> Path:
    path = resolve_path(path_text, base_dir)
    if path.is_file():
        readable(path, "data.path")
        return path
    what = "is a folder, not a file" if path.is_dir() else "does not exist"
    hint = ""
    if "jena_climate" in path.name:
        hint = f"; the book's Jena file comes from {JENA_URL} (unzip it there, or --set data.path=...)"
    raise DataError(f"data.path: {path} {what} (relative paths are read from the recipe's folder "
                    f"{Path(base_dir).resolve()}){hint}")


def _read_table(path: Path, delimiter: str):
    import pandas as pd

    try:
        table = pd.read_csv(path, sep=delimiter)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"data.path: cannot read {path} as CSV ({error})") from error
    table.columns = [str(c) for c in table.columns]
    if len(table) == 0:
        raise DataError(f"data.path: {path} has a header but no rows")
    return table


def _known(name: str, columns: list[str], where: str, path: Path) -> None:
    if name not in columns:
        hint = did_you_mean(name, columns)
        if len(columns) == 1:
            hint += "; only one column was read: is data.delimiter right?"
        raise DataError(f"{where}: {path} has no column '{name}' (its columns: {', '.join(columns)}){hint}")


def _parse_times(table, name: str, path: Path):
    """The time column as date-times (the Jena ``dd.mm.yyyy`` form first)."""
    import pandas as pd

    _known(name, list(table.columns), "data.time_column", path)
    column = table[name]
    times = None
    for fmt in ("%d.%m.%Y %H:%M:%S", "ISO8601"):
        try:
            times = pd.to_datetime(column, format=fmt)
            break
        except (ValueError, TypeError):
            continue
    if times is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "could not infer format": slow, but right
                times = pd.to_datetime(column)
        except (ValueError, TypeError) as error:
            raise DataError(f"data.time_column: column '{name}' of {path} is not a date-time column "
                            f"({error})") from error
    if times.isna().any():
        line = int(times.index[times.isna()][0]) + 2
        raise DataError(f"data.time_column: column '{name}' of {path} has an empty time on line {line}; every row "
                        f"of a series needs its time")
    return times


def _columns(table, spec, path: Path) -> tuple[list[str], list[str]]:
    """The feature columns (the target among them) and the non-numeric ones left out by default."""
    import pandas as pd

    names = list(table.columns)
    numeric = {c for c in names if pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c])}
    _known(spec.target, names, "data.target", path)
    skipped: list[str] = []
    if spec.columns is None:
        columns = [c for c in names if c in numeric and c != spec.time_column]
        skipped = [c for c in names if c not in numeric and c != spec.time_column]
        if spec.target not in columns:
            _not_numeric(table, spec.target, "data.target", path)
    else:
        columns = list(spec.columns)
        for i, name in enumerate(columns):
            _known(name, names, f"data.columns[{i}]", path)
            if name not in numeric:
                _not_numeric(table, name, f"data.columns[{i}]", path)
        if len(set(columns)) != len(columns):
            raise DataError(f"data.columns: a column is named twice ({columns})")
        if spec.target not in columns:
            raise DataError(f"data.target: '{spec.target}' is not among data.columns; add it there (the "
                            f"model sees the target's past values too, as in the book)")
    return columns, skipped


def _not_numeric(table, name: str, where: str, path: Path):
    import pandas as pd

    column = table[name]
    bad = column[pd.to_numeric(column, errors="coerce").isna() & column.notna()]
    example = f" (e.g. {bad.iloc[0]!r} on line {int(bad.index[0]) + 2})" if len(bad) else ""
    raise DataError(f"{where}: column '{name}' of {path} is not numeric{example}; a series column must "
                    f"hold numbers (name the numeric ones in data.columns)")


def _handle_missing(table, columns: list[str], spec, path: Path, warnings: list[str]) -> tuple[np.ndarray, dict]:
    """The columns as float64 rows, after ``missing``: error, interpolate (linear, ends held) or drop."""
    frame = table[columns].astype(np.float64)
    for name in columns:  # missing values have a policy; an infinite one is never a reading
        check_array(np.where(frame[name].isna(), 0.0, frame[name]), f"data.columns: column '{name}' of {path}",
                    "replace them (or empty those cells and choose data.missing)", row_text="on line {row}",
                    first_row=2)
    counts = {c: int(n) for c, n in frame.isna().sum().items() if n}
    if not counts:
        return frame.to_numpy(), {}
    if spec.missing == "error":
        name = next(iter(counts))
        line = int(frame.index[frame[name].isna()][0]) + 2  # +1 header, +1 from 0-based
        listed = ", ".join(f"'{c}' {n}" for c, n in counts.items())
        raise DataError(f"data.missing: {path} has empty values ({listed}; the first in '{name}' on line "
                        f"{line}); set data.missing: interpolate or drop, or leave the column out of "
                        f"data.columns")
    facts = {"policy": spec.missing, "values": counts}
    if spec.missing == "drop":
        frame = frame.dropna()
        facts["rows_dropped"] = dropped = len(table) - len(frame)
        if frame.empty:
            raise DataError(f"data.missing: drop leaves no rows of {path}: every row has an empty value")
        if dropped >= NOTABLE_SHARE * len(table):  # said: windows now span holes
            worst = max(counts, key=counts.get)
            warnings.append(f"data.missing: drop removes {dropped} of the {len(table)} rows of {path} "
                            f"({dropped / len(table):.0%}; column '{worst}' is empty in {counts[worst]}): a window "
                            f"spans the holes as if the rows around them were consecutive")
    else:
        facts["longest_gap"] = gaps = {c: longest_gap(frame[c].isna().to_numpy()) for c in counts}
        interpolation_said(counts, gaps, len(frame), spec, path, warnings)
        frame = frame.interpolate(method="linear", limit_direction="both")
        empty = [c for c in columns if frame[c].isna().any()]
        if empty:
            raise DataError(f"data.missing: column(s) {', '.join(empty)} of {path} hold no value to "
                            f"interpolate from; leave them out of data.columns")
    return frame.to_numpy(), facts


# --------------------------------------------------------------------------- parts and statistics


def resolve_ranges(spec, rows: int, windows: Windows) -> dict[str, tuple[int, int]]:
    """``{part: (start, end)}`` in rows, checked: inside the series, chronological, no overlap,
    each long enough for one window."""
    ranges: dict[str, tuple[int, int]] = {}
    for name in PARTS:
        spec_range = getattr(spec, name)
        if spec_range is None:
            continue
        start = _row(spec_range.start, rows, f"data.{name}.start")
        end = rows if spec_range.end is None else _row(spec_range.end, rows, f"data.{name}.end")
        if end <= start:
            raise DataError(f"data.{name}: end ({end}) must come after start ({start})")
        if windows.count(start, end) < 1:
            raise DataError(
                f"data.{name}: rows [{start}, {end}) are {end - start} rows, too few for one window: a "
                f"window needs lookback ({windows.lookback}) + delay ({windows.delay}) + 1 = {windows.span} "
                f"rows; widen the range or shorten data.lookback/data.delay")
        for before, (_, before_end) in ranges.items():
            if start < before_end:
                raise DataError(
                    f"data.{name}: rows [{start}, {end}) start before data.{before} ends ({before_end}); the "
                    f"parts must follow each other in time (train, then validation, then test) without "
                    f"overlapping")
        ranges[name] = (start, end)
    return ranges


def _row(value: int | float, rows: int, where: str) -> int:
    """A row number, or a fraction (a float 0 ≤ f ≤ 1) of the row count."""
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise DataError(f"{where}: {value} is a float, read as a fraction of the {rows} rows: it must be "
                            f"between 0 and 1 (write a row number as an integer)")
        return int(round(value * rows))
    if not 0 <= value <= rows:
        raise DataError(f"{where}: row {value} is outside the series' {rows} rows (0 … {rows})")
    return int(value)


def _normalize(values: np.ndarray, columns: list[str], spec, start: int, end: int) -> tuple[dict, np.ndarray]:
    """Per-column mean and std of the training rows only, applied to every row (Listing 6.32)."""
    target = spec.target
    if not spec.normalize:
        return {"normalize": False, "target": target, "target_std": 1.0}, values.astype(np.float32)
    train = values[start:end]
    mean, std = train.mean(axis=0), train.std(axis=0)
    constant = [c for c, s in zip(columns, std) if s == 0]
    std = np.where(std == 0, 1.0, std)  # a constant column stays constant (0), not NaN
    fitted = {
        "normalize": True, "fitted_on_rows": [start, end],
        "mean": dict(zip(columns, map(float, mean))), "std": dict(zip(columns, map(float, std))),
        "target": target, "target_std": float(std[columns.index(target)]),
        "original_units": "metrics named *_original_units are normalized MAEs times target_std",
    }
    if constant:
        fitted["constant_columns"] = constant
    return fitted, ((values - mean) / std).astype(np.float32)

"""NaN and infinite values are refused where data is loaded, naming the array and row.

A NaN feature trains to a NaN loss (or, through ``standardize``, turns every statistic into
NaN); an infinite one is saved as ``mean=Infinity`` in ``preprocessing.json`` and trains to
nothing useful. Each source checks its own values where it knows their names (CSV columns and
lines, npz arrays); :func:`check_finite` checks every in-memory dataset once more, whatever
its source (Keras datasets, embedded data).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.data.dataset import Dataset, NamedArrays
from dlrun.errors import DataError

FIX = "replace them with numbers or drop those rows"


def non_finite(a: Any) -> tuple[int, int, Any] | None:
    """``(count, first row, its value)`` of the NaN or infinite values of a float array, or
    None (other dtypes, object arrays of sequences or texts, are never non-finite here)."""
    a = np.asarray(a) if not isinstance(a, np.ndarray) else a
    if a.dtype.kind not in "fc" or a.size == 0:
        return None
    finite = np.isfinite(a)
    if finite.all():
        return None
    bad = ~finite
    where = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))  # the first, in row order
    return int(bad.sum()), where[0], a[where]


def check_array(a: Any, where: str, fix: str = FIX, row_text: str = "in row {row}", first_row: int = 0) -> None:
    """Raise :class:`DataError` ``<where> has N NaN or infinite values (the first, …, in row R);
    <fix>``; ``first_row`` is the number of the array's row 0 in ``row_text`` (a CSV line: 2)."""
    found = non_finite(a)
    if found is not None:
        count, row, value = found
        plural = "s" if count != 1 else ""
        raise DataError(f"{where} has {count} NaN or infinite value{plural} (the first, {value}, "
                        f"{row_text.format(row=row + first_row)}); {fix}")


def check_finite(ds: Dataset, source: str) -> None:
    """Every float array of an in-memory dataset (named arrays each) is finite; rows are
    numbered as the source numbers them (a CSV's lines)."""
    origin = ds.info.get("origin") or ds.info.get("path") or f"the {source} source"
    rows = {"row_text": "on line {row}", "first_row": 2} if source == "csv" else {}
    for part, value in (("x_train", ds.x_train), ("y_train", ds.y_train), ("x_test", ds.x_test),
                        ("y_test", ds.y_test)):
        if value is None:
            continue
        named = value.items() if isinstance(value, NamedArrays) else [(None, value)]
        for name, array in named:
            label = f"{part}['{name}']" if name else part
            check_array(array, f"data: {label} of {origin}", **rows)

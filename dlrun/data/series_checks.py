"""What makes a time series wrong to window, found as it loads (``source: timeseries_csv``).

- **Time order.** A series is windowed row after row, so its rows must be one series in time
  order. Time going back — several series one after another (the NYC weather file holds three
  stations' years back to back), or rows out of order — is refused, unless ``data.sort: true``
  sorts them (stable, by time). Many rows sharing a time stamp (at least ``INTERLEAVED_SHARE``:
  several series interleaved) are refused too; a few (repeated readings, a clock change) are said.
- **Made-up values.** ``missing: interpolate`` draws straight lines over empty values: a column
  interpolated over ``NOTABLE_SHARE`` of its rows or more is said, with the longest gap; a target
  interpolated over more than ``MOSTLY_INVENTED`` is refused (the model would be scored on the
  lines). ``missing: drop`` removing that share of the rows is said (windows span the holes).

Warnings go to ``info["warnings"]``, said before training and kept in ``data.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrun.errors import DataError

# A series with this share of its rows repeating the time before them is several series
# interleaved; fewer repeats are repeated readings or a clock change (said, not refused).
INTERLEAVED_SHARE = 0.1


def in_time_order(table, times, spec, path: Path, warnings: list[str]):
    """The table in time order, and facts about its time column. Time going back (several series
    one after another, or rows out of order) is refused unless ``data.sort: true``; many rows
    sharing a time stamp (several series interleaved) too; a few are a warning."""
    name = spec.time_column
    facts = {"column": name, "first": str(times.iloc[0]), "last": str(times.iloc[-1]),
             "in_order": bool(times.is_monotonic_increasing)}
    hint, example = _series_hint(table, spec)
    stamps = times.astype("int64").to_numpy()  # time zones too (UTC)
    back = np.flatnonzero(np.diff(stamps) < 0)
    if len(back) and not spec.sort:
        i = int(back[0]) + 1
        raise DataError(
            f"data.time_column: '{name}' of {path} goes back in time {len(back)} time{'s' if len(back) > 1 else ''}, "
            f"first on line {i + 2} ({times.iloc[i]} after {times.iloc[i - 1]}): the rows are not one series in time "
            f"order{hint} — give one series in time order{example}, or set data.sort: true if they are one series "
            f"in the wrong order")
    if len(back):
        order = np.argsort(stamps, kind="stable")
        table, times, stamps = table.iloc[order], times.iloc[order], stamps[order]  # the index keeps each line
        facts["sorted"] = True
    repeats = np.flatnonzero(np.diff(stamps) == 0) + 1
    if len(repeats):
        line, stamp = int(times.index[repeats[0]]) + 2, times.iloc[repeats[0]]
        facts["repeated_times"] = len(repeats)
        said = (f"{len(repeats)} of the {len(times)} rows of {path} repeat the time stamp of the row before "
                f"{'once sorted ' if len(back) else ''}(first on line {line}: {stamp})")
        if len(repeats) >= INTERLEAVED_SHARE * len(times):
            raise DataError(f"data.time_column: {said}: several series interleaved{hint} — give one series, one row "
                            f"per time{example}")
        warnings.append(f"data.time_column: {said}: repeated readings or a clock change; each row still counts as "
                        f"one step of the series")
    return table, facts


def _series_hint(table, spec) -> tuple[str, str]:
    """A text column that may name several series (a station), said with the fix."""
    import pandas as pd

    for column in table.columns:
        if column == spec.time_column or column in (spec.columns or ()):
            continue
        values = table[column]
        if not pd.api.types.is_numeric_dtype(values) and 2 <= values.nunique() <= 20:
            names = sorted(map(str, values.dropna().unique()))
            return (f" (the column '{column}' holds {len(names)} values, {', '.join(names[:5])}"
                    f"{', …' if len(names) > 5 else ''}: one series each?)", f", e.g. the rows of one '{column}'")
    return "", ""


# A column interpolated (or rows dropped) over this share of the series is said before training;
# a target interpolated over more than MOSTLY_INVENTED is refused (it would be scored on lines).
NOTABLE_SHARE, MOSTLY_INVENTED = 0.25, 0.5


def longest_gap(empty: np.ndarray) -> int:
    """The longest run of empty values (rows)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], empty.astype(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def interpolation_said(counts: dict, gaps: dict, rows: int, spec, path: Path, warnings: list[str]) -> None:
    """Columns mostly made up by interpolation: a feature is said, a target refused."""
    for name, count in counts.items():
        share, figures = count / rows, f"{count} of its {rows} rows ({count / rows:.0%}; the longest gap {gaps[name]} rows)"
        if name == spec.target and share > MOSTLY_INVENTED:
            raise DataError(f"data.missing: interpolate would make up the target '{name}' of {path} over {figures}: "
                            f"the model would learn, and be scored on, straight lines between readings — choose a "
                            f"target with readings, or data.missing: drop")
        if share >= NOTABLE_SHARE:
            leave = "" if name == spec.target else " — leave it out of data.columns if it should not count"
            warnings.append(f"data.missing: column '{name}' of {path} is interpolated over {figures}: the model sees "
                            f"straight lines there{leave}")

"""``source: npz`` and ``source: csv`` — arrays and tables from local files.

Relative paths resolve against the recipe's folder (``base_dir``), not the working directory,
so a recipe runs the same from anywhere.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from dlrun.data.dataset import Dataset, NamedArrays
from dlrun.data.finite import check_array
from dlrun.errors import DataError, did_you_mean


def resolve_path(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


def _existing_file(path: str, base_dir: Path) -> Path:
    resolved = resolve_path(path, base_dir)
    if not resolved.is_file():
        what = "is a folder, not a file" if resolved.is_dir() else "does not exist"
        if resolved.exists() and not resolved.is_dir():
            what = "is not a regular file"
        raise DataError(f"data.path: {resolved} {what} (relative paths are read from the "
                        f"recipe's folder {Path(base_dir).resolve()})")
    readable(resolved, "data.path")
    return resolved


def readable(path: Path, where: str) -> None:
    """Open ``path`` once for reading, so a file this user may not read is reported by name."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise DataError(f"{where}: cannot read {path}: {error.strerror or error}") from error


# --------------------------------------------------------------------------- npz


def load_npz(spec, base_dir: Path) -> Dataset:
    path = _existing_file(spec.path, base_dir)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise DataError(f"data.path: {path} is not a NumPy .npz file, or it is cut short or damaged "
                        f"({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"data.path: {path} holds a single array, not an .npz archive; save "
                        f"it with np.savez(path, x=..., y=...)")
    with archive:
        keys = list(archive.files)
        x = _arrays(archive, "x", spec.x, path, keys)
        y = _arrays(archive, "y", spec.y, path, keys)
        # The test keys default to "x_test"/"y_test" when the file has them.
        named = isinstance(spec.x, dict) or isinstance(spec.y, dict)  # named test arrays are given, not guessed
        test_x_key = spec.x_test or ("x_test" if "x_test" in keys and not named else None)
        test_y_key = spec.y_test or ("y_test" if "y_test" in keys and not named else None)
        if (test_x_key is None) != (test_y_key is None):
            given = "x_test" if test_x_key else "y_test"
            other = "y_test" if test_x_key else "x_test"
            raise DataError(f"data.{other}: {path} has a test array for {given} but none for "
                            f"{other} (its keys: {', '.join(keys)}); give both or neither")
        x_test = _arrays(archive, "x_test", test_x_key, path, keys) if test_x_key else None
        y_test = _arrays(archive, "y_test", test_y_key, path, keys) if test_y_key else None
    _same_length(x, y, f"'{spec.x}' and '{spec.y}'", path)
    if x_test is not None:
        _same_length(x_test, y_test, f"'{test_x_key}' and '{test_y_key}'", path)
    info = {"path": str(path), "keys": {"x": spec.x, "y": spec.y,
                                        "x_test": test_x_key, "y_test": test_y_key}}
    return Dataset(x, y, x_test, y_test, name=path.stem, info=info)


def _arrays(archive, field: str, key, path: Path, keys: list[str]):
    """One array, or a graph model's inputs/outputs by name (``x: {text: x_text, …}``)."""
    if not isinstance(key, dict):
        return _array(archive, field, key, path, keys)
    arrays = {name: _array(archive, f"{field}.{name}", k, path, keys) for name, k in key.items()}
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"data.{field}: the arrays of {path} have different numbers of samples "
                        f"({', '.join(f'{n}: {c}' for n, c in lengths.items())})")
    return NamedArrays(arrays)


def _array(archive, field: str, key: str, path: Path, keys: list[str]) -> np.ndarray:
    if key not in keys:
        raise DataError(f"data.{field}: {path} has no array '{key}' (its keys: "
                        f"{', '.join(keys) or 'none'}){did_you_mean(key, keys)}")
    try:
        array = archive[key]
    except ValueError as error:
        if "allow_pickle" not in str(error):  # a member cut short: "cannot reshape array of size …"
            raise DataError(f"data.{field}: array '{key}' of {path} is damaged ({error})") from error
        raise DataError(
            f"data.{field}: array '{key}' of {path} holds Python objects (e.g. ragged "
            f"sequences), which only load through pickle, and pickle can run arbitrary code, "
            f"so dlrun does not unpickle files. Save numeric arrays instead, e.g. pad the "
            f"sequences to one length (keras.utils.pad_sequences) before np.savez"
        ) from error
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:  # "Bad CRC-32", a truncated member
        raise DataError(f"data.{field}: array '{key}' of {path} is damaged ({error}); write the file "
                        f"again") from error
    check_array(array, f"data.{field}: array '{key}' of {path}")
    return array


def _same_length(x, y, what: str, path: Path) -> None:
    if len(x) != len(y):
        raise DataError(f"data: {what} of {path} have different numbers of samples "
                        f"({len(x)} and {len(y)})")


# --------------------------------------------------------------------------- csv


def load_csv(spec, base_dir: Path) -> Dataset:
    import pandas as pd

    path = _existing_file(spec.path, base_dir)
    try:
        table = pd.read_csv(path, sep=spec.delimiter)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"data.path: cannot read {path} as CSV ({error})") from error
    columns = [str(c) for c in table.columns]
    table.columns = columns
    if len(table) == 0:
        raise DataError(f"data.path: {path} has a header but no rows")
    if _first_line_is_data(path, spec.delimiter):
        raise DataError(f"data.path: the first line of {path} looks like data, not a header; "
                        f"add a header line naming the columns")
    groups = _column_groups(spec.target, "data.target")
    targets = [c for _, cols in groups for c in ([cols] if isinstance(cols, str) else cols)]
    for where, cols in groups:
        for name, place in _places(cols, where):
            _known_column(name, columns, place, path, spec.delimiter)
    if spec.features is None:
        feature_groups = [("data.features", [c for c in columns if c not in targets])]
    else:
        feature_groups = _column_groups(spec.features, "data.features")
        for where, cols in feature_groups:
            for name, place in _places(cols, where):
                _known_column(name, columns, place, path, spec.delimiter)
    feature_groups = [(where, [cols] if isinstance(cols, str) else list(cols)) for where, cols in feature_groups]
    features = [c for _, cols in feature_groups for c in cols]
    if not features:
        raise DataError(f"data.features: {path} has no column left for features after the "
                        f"target {targets}")
    info = {"path": str(path), "target": spec.target if isinstance(spec.target, dict) else targets,
            "features": spec.features if isinstance(spec.features, dict) else features}
    if isinstance(spec.features, dict):  # a graph model's inputs by name
        x = NamedArrays({where.rsplit(".", 1)[1]: _numeric_columns(table, cols, path, where).astype(np.float32)
                         for where, cols in feature_groups})
    else:
        x = _numeric_columns(table, features, path, "data.features").astype(np.float32)
    if isinstance(spec.target, dict):  # a graph model's outputs by name
        arrays, classes = {}, {}
        for where, cols in groups:
            name = where.rsplit(".", 1)[1]
            arrays[name], found = _target(table, [cols] if isinstance(cols, str) else list(cols), path, where)
            if found is not None:
                classes[name] = found
        y = NamedArrays(arrays)
    else:
        y, classes = _target(table, targets, path)
    if classes:
        info["classes"] = classes
    return Dataset(x, y, name=path.stem, info=info)


def _column_groups(value, where: str) -> list[tuple[str, str | list[str]]]:
    """``(recipe place, column or columns)``: one group, or one per name of a mapping."""
    if isinstance(value, dict):
        return [(f"{where}.{name}", cols) for name, cols in value.items()]
    return [(where, value)]


def _places(cols: str | list[str], where: str) -> list[tuple[str, str]]:
    """Each column with its recipe place: ``data.target`` for one, ``data.target[1]`` in a list."""
    return [(cols, where)] if isinstance(cols, str) else [(c, f"{where}[{i}]") for i, c in enumerate(cols)]


def _known_column(name: str, columns: list[str], where: str, path: Path, delimiter: str):
    if name not in columns:
        hint = did_you_mean(name, columns)
        if len(columns) == 1:
            hint += f"; only one column was read: is `delimiter: '{delimiter}'` right?"
        raise DataError(f"{where}: {path} has no column '{name}' (its columns: "
                        f"{', '.join(columns)}){hint}")


def _numeric_columns(table, names: list[str], path: Path, where: str) -> np.ndarray:
    import pandas as pd

    for name in names:
        column = table[name]
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            bad = column[pd.to_numeric(column, errors="coerce").isna() & column.notna()]
            sample = repr(bad.iloc[0]) if len(bad) else "?"
            raise DataError(f"{where}: column '{name}' of {path} is not numeric (e.g. {sample} "
                            f"on line {int(bad.index[0]) + 2 if len(bad) else '?'}); encode it "
                            f"as numbers or leave it out of the features")
        if column.isna().any():
            line = int(column[column.isna()].index[0]) + 2  # +1 header, +1 from 0-based
            raise DataError(f"{where}: column '{name}' of {path} has {int(column.isna().sum())} "
                            f"empty or NaN values (first on line {line}); fill or drop them")
        values = column.to_numpy()
        check_array(values, f"{where}: column '{name}' of {path}", "replace them or drop those lines",
                    row_text="on line {row}", first_row=2)
        if values.dtype.kind == "f" and (huge := np.abs(values) > np.finfo(np.float32).max).any():
            row = int(np.argmax(huge))
            raise DataError(f"{where}: column '{name}' of {path} has {values[row]} on line {row + 2}, beyond what "
                            f"float32 holds (±3.4e38): it would train as infinite; rescale the column")
    return table[names].to_numpy()


def _target(table, targets: list[str], path: Path, where: str = "data.target"):
    """y (1-D for one target column) and, for a text label column, its sorted classes."""
    import pandas as pd

    if len(targets) == 1 and not pd.api.types.is_numeric_dtype(table[targets[0]]):
        column = table[targets[0]]
        if column.isna().any():
            line = int(column[column.isna()].index[0]) + 2
            raise DataError(f"{where}: column '{targets[0]}' of {path} has empty values "
                            f"(first on line {line})")
        # Text labels become class indices in sorted order, recorded in info["classes"].
        classes, codes = np.unique(column.astype(str).to_numpy(), return_inverse=True)
        return codes.astype(np.int64), [str(c) for c in classes]
    y = _numeric_columns(table, targets, path, where)
    y = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float32)
    return (y[:, 0] if len(targets) == 1 else y), None


def _first_line_is_data(path: Path, delimiter: str) -> bool:
    import pandas as pd

    # Read raw: pandas renames duplicate header cells ("0.2" → "0.2.1"), which hides numbers.
    first = pd.read_csv(path, sep=delimiter, header=None, nrows=1, dtype=str).iloc[0]
    return all(_is_number(cell) for cell in first)


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True

"""New inputs for a trained run, read in the form of the run's own data, batch by batch.

What a run accepts follows its data source:

==================  ===================================================================
run's source        INPUT
==================  ===================================================================
csv                 a CSV with the run's feature columns (by name; others are ignored),
                    or JSON lines of ``{column: value}`` objects
npz, embedded,      an ``.npz`` (the run's ``x`` key, or its only array), an ``.npy``
keras               (memory-mapped), a CSV of numbers (one sample a row, flattened), or
                    JSON lines of samples (``[…]`` or ``{"x": […]}``; named inputs by name)
text_directory      a folder of text files (or one file), or JSON lines of texts
                    (``"…"`` or ``{"text": "…"}``)
image_directory     a folder of images (or one image), or JSON lines of ``{"path": …}``
timeseries_csv      a CSV of the series with the run's columns: one forecast per window
==================  ===================================================================

Every reader checks its input against what the run trained on (columns, sample shape, image
size) before the first prediction, and reads large inputs in chunks, never whole (an ``.npz``
member is the exception: NumPy cannot map one; use ``.npy`` for inputs larger than memory).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from dlrun.errors import DataError, did_you_mean

STDIN = "-"


@dataclass
class Inputs:
    """Batches of raw inputs: ``batches(size)`` yields ``(ids, x)``; ``total`` rows if known."""

    source: str  # what was read, for messages
    id_name: str  # row | file | line
    total: int | None
    batches: Callable[[int], Iterator[tuple[list, Any]]]


def read_inputs(trained, text: str) -> Inputs:
    """The reader for INPUT ``text`` (a path, or ``-`` for JSON lines on stdin)."""
    source = trained.recipe.data.source
    path = None if text == STDIN else Path(text).expanduser()
    if path is not None and not path.exists():
        raise DataError(f"INPUT: no such file or folder: {path}")
    kind = _FORMS.get(source)
    if kind is None:
        raise DataError(f"INPUT: predicting for runs on '{source}' data is not supported")
    return kind(trained, path)


# --------------------------------------------------------------------------- JSON lines


def _json_lines(path: Path | None) -> Iterator[tuple[int, Any]]:
    stream = sys.stdin if path is None else open(path, encoding="utf-8")
    where = "stdin" if path is None else str(path)
    try:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                raise DataError(f"INPUT: line {number} of {where} is not JSON ({exc})") from None
    finally:
        if path is not None:
            stream.close()


def _is_json_lines(path: Path | None) -> bool:
    return path is None or path.suffix.lower() in (".jsonl", ".ndjson", ".json")


def _chunked(items: Iterator[tuple[Any, Any]], size: int) -> Iterator[tuple[list, list]]:
    ids, values = [], []
    for key, value in items:
        ids.append(key)
        values.append(value)
        if len(ids) == size:
            yield ids, values
            ids, values = [], []
    if ids:
        yield ids, values


# --------------------------------------------------------------------------- tables (csv runs)


def _table(trained, path: Path | None) -> Inputs:
    info = trained.run.data_info()
    features = info.get("features")
    if isinstance(features, dict):  # a graph model's inputs by name
        groups = {name: list(cols) for name, cols in features.items()}
    else:
        groups = {None: list(features or [])}
    columns = [c for cols in groups.values() for c in cols]
    if not columns:
        raise DataError(f"INPUT: run {trained.run.path} does not record its feature columns (data.json)")

    def frame_to_x(frame, first_line: int):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"INPUT: {_where(path)} has no column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(repr, missing))}{did_you_mean(missing[0], list(map(str, frame.columns)))}"
                            f" — the run was trained on the columns {', '.join(columns)}")
        parts = {name: _numbers(frame[cols], cols, first_line, path) for name, cols in groups.items()}
        return parts[None] if None in parts else _named(parts)

    if _is_json_lines(path):
        import pandas as pd

        def json_batches(size):
            for ids, rows in _chunked(_json_lines(path), size):
                if not all(isinstance(r, dict) for r in rows):
                    raise DataError(f"INPUT: line {ids[0]} of {_where(path)}: give one object of column values a line")
                yield ids, frame_to_x(pd.DataFrame(rows), ids[0])

        return Inputs(_where(path), "line", None, json_batches)
    _expect_suffix(path, (".csv", ".tsv", ".txt"), "a CSV with the run's feature columns, or JSON lines")
    delimiter = getattr(trained.recipe.data, "delimiter", ",")

    def csv_batches(size):
        for first, frame in _csv_chunks(path, delimiter, size):
            yield list(range(first, first + len(frame))), frame_to_x(frame, first + 2)

    return Inputs(str(path), "row", _count_lines(path) - 1, csv_batches)


def _csv_chunks(path: Path, delimiter: str, size: int, header: bool = True):
    import pandas as pd

    try:
        reader = pd.read_csv(path, sep=delimiter, chunksize=size, header=0 if header else None)
        first = 0
        for frame in reader:
            frame.columns = [str(c) for c in frame.columns]
            yield first, frame
            first += len(frame)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"INPUT: cannot read {path} as CSV ({exc})") from None


def _numbers(frame, columns: list[str], first_line: int, path: Path | None) -> np.ndarray:
    import pandas as pd

    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(f"INPUT: {_where(path)} line {first_line + row}: column '{columns[col]}' is "
                        f"{frame.iloc[row, col]!r}, not a finite number")
    return values.astype(np.float32)


# --------------------------------------------------------------------------- arrays (npz, embedded, keras)


def _arrays(trained, path: Path | None) -> Inputs:
    info = trained.run.data_info()
    spec_x = getattr(trained.recipe.data, "x", "x")
    if isinstance(spec_x, dict) or "x" in info and isinstance(info.get("x"), dict):
        return _named_arrays(trained, path, info)
    shape = info.get("x_sample_shape")
    dtype = np.dtype(info.get("x_dtype") or "float32")
    ragged = shape == "ragged"

    def checked(x: np.ndarray, where: str) -> np.ndarray:
        if ragged:
            return x
        if list(x.shape[1:]) != list(shape):
            if int(np.prod(x.shape[1:])) == int(np.prod(shape)):
                x = x.reshape((len(x), *shape))  # flattened rows (a CSV of pixels)
            else:
                raise DataError(f"INPUT: {where} has samples of shape {list(x.shape[1:])}; the run was "
                                f"trained on samples of shape {list(shape)} ({int(np.prod(shape))} values)")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            row = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0][0])
            raise DataError(f"INPUT: {where} sample {row} holds NaN or infinite values")
        return x.astype(dtype, copy=False) if not np.issubdtype(dtype, np.integer) else x

    if _is_json_lines(path):
        def json_batches(size):
            for ids, rows in _chunked(_json_lines(path), size):
                rows = [r.get("x") if isinstance(r, dict) else r for r in rows]
                if ragged:
                    x = np.empty(len(rows), dtype=object)
                    x[:] = [np.asarray(r, dtype=np.int64) for r in rows]
                else:
                    try:
                        x = np.asarray(rows, dtype=np.float64)
                    except (TypeError, ValueError):
                        raise DataError(f"INPUT: lines {ids[0]}…{ids[-1]} of {_where(path)}: each sample must be "
                                        f"a list of numbers of shape {shape}") from None
                yield ids, checked(x, f"line {ids[0]} of {_where(path)}")

        return Inputs(_where(path), "line", None, json_batches)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        x = _load_array(path, spec_x if isinstance(spec_x, str) else "x")
        checked(x[:1], str(path))
        return Inputs(str(path), "row", len(x),
                      lambda size: ((list(range(i, min(i + size, len(x)))), checked(np.asarray(x[i:i + size]), str(path)))
                                    for i in range(0, len(x), size)))
    _expect_suffix(path, (".csv", ".tsv", ".txt"), "an .npz, an .npy, a CSV of numbers, or JSON lines")
    header = _has_header(path)

    def csv_batches(size):
        for first, frame in _csv_chunks(path, ",", size, header=header):
            values = _numbers(frame, [str(c) for c in frame.columns], first + 1 + header, path)
            yield list(range(first, first + len(frame))), checked(values, str(path))

    return Inputs(str(path), "row", _count_lines(path) - header, csv_batches)


def _named_arrays(trained, path: Path | None, info: dict) -> Inputs:
    names = list((info.get("x") or {}).keys())
    spec_x = getattr(trained.recipe.data, "x", None)
    keys = spec_x if isinstance(spec_x, dict) else {n: n for n in names}
    if path is not None and path.suffix.lower() == ".npz":
        arrays = {name: _load_array(path, key, alias=name) for name, key in keys.items()}
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise DataError(f"INPUT: the arrays of {path} have different numbers of rows")
        total = lengths.pop()
        return Inputs(str(path), "row", total, lambda size: (
            (list(range(i, min(i + size, total))), _named({n: a[i:i + size] for n, a in arrays.items()}))
            for i in range(0, total, size)))
    if not _is_json_lines(path):
        raise DataError(f"INPUT: a run with named inputs ({', '.join(names)}) takes an .npz with those keys or "
                        "JSON lines of objects with them")

    def json_batches(size):
        for ids, rows in _chunked(_json_lines(path), size):
            missing = [n for n in names if not all(isinstance(r, dict) and n in r for r in rows)]
            if missing:
                raise DataError(f"INPUT: lines {ids[0]}…{ids[-1]} of {_where(path)} lack the input "
                                f"'{missing[0]}' (the run's inputs: {', '.join(names)})")
            yield ids, _named({n: np.asarray([r[n] for r in rows]) for n in names})

    return Inputs(_where(path), "line", None, json_batches)


def _named(parts: dict) -> Any:
    from dlrun.data.dataset import NamedArrays

    return NamedArrays(parts)


def _load_array(path: Path, key: str, alias: str | None = None):
    import zipfile

    try:
        loaded = np.load(path, mmap_mode="r" if path.suffix.lower() == ".npy" else None, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"INPUT: {path} is not a NumPy file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        files = list(loaded.files)
        chosen = key if key in files else alias if alias in files else files[0] if len(files) == 1 else None
        if chosen is None:
            raise DataError(f"INPUT: {path} has no array '{key}' (its keys: {', '.join(files)})"
                            f"{did_you_mean(key, files)}")
        return loaded[chosen]


# --------------------------------------------------------------------------- texts and images


def _texts(trained, path: Path | None) -> Inputs:
    if path is not None and path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"INPUT: {path} holds no text files")
        encoding = getattr(trained.recipe.data, "encoding", "utf-8")

        def read(file: Path) -> str:
            try:
                return file.read_text(encoding=encoding, errors="replace")
            except OSError as exc:
                raise DataError(f"INPUT: cannot read {file}: {exc.strerror or exc}") from None

        return Inputs(str(path), "file", len(files), lambda size: (
            ([str(f) for f in files[i:i + size]], np.array([read(f) for f in files[i:i + size]], dtype=object))
            for i in range(0, len(files), size)))
    if path is not None and not _is_json_lines(path):
        return Inputs(str(path), "file", 1, lambda size: iter([([str(path)], np.array(
            [path.read_text(encoding="utf-8", errors="replace")], dtype=object))]))

    def json_batches(size):
        for ids, rows in _chunked(_json_lines(path), size):
            texts = [r.get("text") if isinstance(r, dict) else r for r in rows]
            if not all(isinstance(t, str) for t in texts):
                raise DataError(f"INPUT: lines {ids[0]}…{ids[-1]} of {_where(path)}: give one text a line "
                                '("…" or {"text": "…"})')
            yield ids, np.array(texts, dtype=object)

    return Inputs(_where(path), "line", None, json_batches)


def _images(trained, path: Path | None) -> Inputs:
    from dlrun.data.images import IMAGE_SUFFIXES

    if path is None or _is_json_lines(path):
        files = [Path(r.get("path") if isinstance(r, dict) else r) for _, r in _json_lines(path)]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = [path]
    if not files:
        raise DataError(f"INPUT: {_where(path)} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    spec = trained.recipe.data

    def load(file: Path) -> np.ndarray:
        import keras

        try:
            image = keras.utils.load_img(file, color_mode=spec.color_mode, target_size=tuple(spec.image_size),
                                         interpolation="bilinear")
        except Exception as exc:  # noqa: BLE001 - PIL's many errors: the file is named either way
            raise DataError(f"INPUT: cannot read the image {file}: {exc}") from None
        return keras.utils.img_to_array(image, dtype="float32")

    def batches(size):
        for i in range(0, len(files), size):
            chunk = files[i:i + size]
            yield [str(f) for f in chunk], np.stack([load(f) for f in chunk])

    return Inputs(_where(path), "file", len(files), batches)


# --------------------------------------------------------------------------- helpers


def _where(path: Path | None) -> str:
    return "stdin" if path is None else str(path)


def _expect_suffix(path: Path, suffixes: tuple[str, ...], what: str) -> None:
    if path.is_dir() or path.suffix.lower() not in suffixes:
        raise DataError(f"INPUT: {path} is not {what} (this run's data is "
                        f"{'a folder' if path.is_dir() else path.suffix or 'a file without suffix'})")


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _has_header(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().strip().split(",")
    try:
        [float(cell) for cell in first]
    except ValueError:
        return True
    return False


def _series(trained, path: Path | None):
    from dlrun.inference.series import series_inputs

    return series_inputs(trained, path)


_FORMS: dict[str, Callable[[Any, Path | None], Inputs]] = {
    "csv": _table,
    "npz": _arrays,
    "embedded": _arrays,
    "keras": _arrays,
    "text_directory": _texts,
    "image_directory": _images,
    "timeseries_csv": _series,
}

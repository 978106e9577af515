"""What ``dlrun predict`` writes: per input row its id, and per model output either the predicted
values or, for a classifier, the top classes by name with their probabilities.

OUT's suffix picks the form: ``.csv``, ``.jsonl`` (or ``-``: JSON lines on stdout), ``.npz``
(the raw predictions as arrays, with ``ids``, ``<output>_class`` and ``<output>_probability``).
CSV and JSON lines are written batch by batch into a temporary file that replaces OUT only when
every batch is done, so a failed prediction leaves nothing half-written.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import UsageError

SUFFIXES = (".csv", ".jsonl", ".ndjson", ".npz")


def check_output(text: str, force: bool) -> Path | None:
    """OUT as a path (None: stdout), refused before anything runs when it cannot be written."""
    if text == "-":
        return None
    path = Path(text).expanduser()
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"-o {text}: write predictions to a .csv, .jsonl or .npz file (or - for stdout)")
    if path.exists() and not force:
        raise UsageError(f"-o {text}: the file exists; choose another name or pass --force to replace it")
    if not path.parent.is_dir():
        raise UsageError(f"-o {text}: no such folder {path.parent}")
    return path


def class_scores(raw: np.ndarray, kind) -> np.ndarray:
    """Probabilities per class, (n, classes), from a classifier output (logits turned into them)."""
    raw = np.asarray(raw, dtype=np.float64)
    if kind.kind == "binary":
        p = raw.reshape(len(raw), -1)[:, :1]
        if kind.from_logits:
            p = 1.0 / (1.0 + np.exp(-p))
        return np.concatenate([1.0 - p, p], axis=1)
    scores = raw.reshape(len(raw), -1)
    if kind.from_logits:
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    return scores


class Rows:
    """One batch of predictions turned into named columns."""

    def __init__(self, trained, top_k: int):
        self.trained, self.top_k = trained, top_k
        self.names = trained.class_names

    def columns(self, output: str, raw: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
        kind = self.trained.output_kind(output if prefix else None)
        if not kind.is_classifier:
            values = np.asarray(self.trained.readable(raw), dtype=np.float64).reshape(len(raw), -1)
            if values.shape[1] == 1:
                return {prefix or "prediction": values[:, 0]}
            return {f"{prefix or 'prediction'}_{j}": values[:, j] for j in range(values.shape[1])}
        scores = class_scores(raw, kind)
        order = np.argsort(-scores, axis=1, kind="stable")[:, : min(self.top_k, scores.shape[1])]
        names = self.names if self.names and len(self.names) == scores.shape[1] else None
        out: dict[str, np.ndarray] = {}
        for rank in range(order.shape[1]):
            suffix = "" if rank == 0 else f"_{rank + 1}"
            index = order[:, rank]
            label = np.array(names, dtype=object)[index] if names else index
            out[f"{prefix + '_' if prefix else ''}class{suffix}"] = label
            out[f"{prefix + '_' if prefix else ''}probability{suffix}"] = scores[np.arange(len(index)), index]
        return out

    def __call__(self, predictions) -> dict[str, np.ndarray]:
        if isinstance(predictions, dict):
            cols: dict[str, np.ndarray] = {}
            for name, raw in predictions.items():
                cols.update(self.columns(name, raw, name))
            return cols
        return self.columns("prediction", predictions, "")


class Writer:
    """Writes batches of ``(ids, columns)`` to OUT, in place only when :meth:`close` succeeds."""

    def __init__(self, path: Path | None, id_name: str):
        self.path, self.id_name = path, id_name
        self.kind = "jsonl" if path is None else path.suffix.lower().lstrip(".").replace("ndjson", "jsonl")
        self.tmp = None if path is None else path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._fh = sys.stdout if path is None else (open(self.tmp, "w", encoding="utf-8", newline="")
                                                     if self.kind != "npz" else None)
        self._csv = None
        self._arrays: dict[str, list] = {}
        self.rows = 0

    def write(self, ids: list, columns: dict[str, np.ndarray], raw: Any) -> None:
        self.rows += len(ids)
        if self.kind == "npz":
            self._arrays.setdefault("ids", []).append(np.asarray(ids))
            raws = raw if isinstance(raw, dict) else {"predictions": raw}
            for key, value in {**raws, **columns}.items():
                self._arrays.setdefault(key, []).append(np.asarray(value))
            return
        keys = [self.id_name, *columns]
        records = ({self.id_name: ident, **{k: _plain(v[i]) for k, v in columns.items()}} for i, ident in enumerate(ids))
        if self.kind == "csv":
            if self._csv is None:
                self._csv = csv.DictWriter(self._fh, fieldnames=keys, lineterminator="\n")
                self._csv.writeheader()
            self._csv.writerows(records)
        else:
            self._fh.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
        self._fh.flush()

    def close(self) -> None:
        if self.kind == "npz" and self.path is not None:
            arrays = {k: np.concatenate(v) for k, v in self._arrays.items()}
            if "ids" in arrays and arrays["ids"].dtype == object:
                arrays["ids"] = arrays["ids"].astype(str)
            arrays = {k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()}
            with open(self.tmp, "wb") as fh:
                np.savez(fh, **arrays)
        elif self.path is not None:
            self._fh.close()
        if self.path is not None:
            os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if self.path is None:
            return
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        if self.tmp is not None and self.tmp.exists():
            self.tmp.unlink()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value

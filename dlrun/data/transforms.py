"""Preprocessing transforms, each fitted on the training part only (no leakage).

``fit_pipeline`` fits the recipe's ``preprocessing`` list in order, each transform on the
training data as the earlier ones output it; the caller passes only the training rows of the
current split (again for every fold). ``FittedPipeline.apply`` then transforms any part with
the fitted statistics, and ``state()`` records them for the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun.errors import DataError


class Transform:
    """Base: ``fit`` learns from the training part, ``apply`` uses what it learned."""

    def __init__(self, spec):
        self.spec = spec

    def fit(self, a: np.ndarray) -> None:
        """Learn statistics from the training part (nothing to learn by default)."""

    def apply(self, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fitted(self) -> dict[str, Any]:
        """JSON-serializable statistics learned by ``fit``."""
        return {}


class MultiHot(Transform):
    """The book's ``vectorize_sequences``: each sequence of indices → a 0/1 float32 row."""

    def apply(self, a):
        rows, cols = _flatten_sequences(a)
        dim = self.spec.dimension
        bad = (cols >= dim) | (cols < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"sample {int(rows[i])} contains index {int(cols[i])}, outside 0..{dim - 1} for "
                f"dimension {dim}; load only the top words (e.g. keras option `num_words: {dim}`)"
                f" or raise `dimension`"
            )
        out = np.zeros((len(a), dim), dtype=np.float32)
        out[rows, cols] = 1.0
        return out


def _flatten_sequences(a) -> tuple[np.ndarray, np.ndarray]:
    """(sample row, index) pairs of sequences given as an object array, 2-D or 1-D ints."""
    if a.dtype == object:
        seqs = [np.asarray(s, dtype=np.int64).ravel() for s in a]
        lengths = [len(s) for s in seqs]
        cols = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    else:
        ints = np.asarray(a).reshape(len(a), -1)
        if not (np.issubdtype(ints.dtype, np.integer) or np.all(ints == np.round(ints))):
            raise DataError("multi_hot needs integer indices; these values are not integers")
        lengths = [ints.shape[1]] * len(a)
        cols = ints.ravel().astype(np.int64)
    return np.repeat(np.arange(len(a)), lengths), cols


class OneHot(Transform):
    """Integer labels → one-hot float32 rows (``to_categorical``, in NumPy: no TF import).

    The class count is ``num_classes`` or, if not given, max(training labels) + 1.
    """

    def fit(self, a):
        labels = _labels(a)
        top = int(labels.max()) + 1 if len(labels) else 0
        if self.spec.num_classes is not None and top > self.spec.num_classes:
            raise DataError(f"the training labels go up to {top - 1}, outside the "
                            f"{self.spec.num_classes} classes of `num_classes`; raise it")
        self.num_classes = self.spec.num_classes or top

    def apply(self, a):
        labels = _labels(a)
        bad = labels >= self.num_classes
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"label {int(labels[i])} of sample {i} is outside the "
                            f"{self.num_classes} classes counted on the training part "
                            f"(0..{self.num_classes - 1}); set `num_classes` to cover it")
        return np.eye(self.num_classes, dtype=np.float32)[labels]

    def fitted(self):
        return {"num_classes": self.num_classes}


def _labels(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2 and a.shape[1] == 1:  # as to_categorical: (n, 1) labels → (n, classes)
        a = a[:, 0]
    ok = a.ndim == 1 and a.dtype != object and (
        np.issubdtype(a.dtype, np.integer) or np.all(a == np.round(a)))
    if not ok or (len(a) and a.min() < 0):
        raise DataError(f"one_hot needs one non-negative integer label per sample; got shape "
                        f"{list(a.shape)} and dtype {a.dtype}")
    return a.astype(np.int64)


class Standardize(Transform):
    """(x − mean) / std per feature (axis 0) with the training part's statistics."""

    def fit(self, a):
        values = _numeric(a, "standardize").astype(np.float64)
        self.mean = values.mean(axis=0)
        std = values.std(axis=0)
        self.std = np.where(std == 0, 1.0, std)  # constant features: shift only

    def apply(self, a):
        values = _numeric(a, "standardize")
        if values.shape[1:] != self.mean.shape:
            raise DataError(f"standardize was fitted on samples of shape {list(self.mean.shape)}"
                            f", not {list(values.shape[1:])}")
        return ((values - self.mean) / self.std).astype(np.float32)

    def fitted(self):
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


class Rescale(Transform):
    def apply(self, a):
        values = _numeric(a, "rescale").astype(np.float32)
        return values * np.float32(self.spec.scale) + np.float32(self.spec.offset)


class Reshape(Transform):
    def apply(self, a):
        try:
            return a.reshape((len(a), *self.spec.shape))
        except ValueError:
            raise DataError(f"reshape cannot make samples of shape {list(a.shape[1:])} "
                            f"({int(np.prod(a.shape[1:]))} values) into shape "
                            f"{self.spec.shape}") from None


class PadSequences(Transform):
    def apply(self, a):
        from keras.utils import pad_sequences

        value = self.spec.value
        return pad_sequences(list(a), maxlen=self.spec.maxlen, padding=self.spec.padding,
                             truncating=self.spec.truncating, value=value,
                             dtype="int32" if float(value).is_integer() else "float32")


def _numeric(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{name} needs numeric arrays, not {a.dtype} (variable-length "
                        f"sequences need multi_hot or pad_sequences first)")
    return a


# Keyed by the recipe's `transform` name.
TRANSFORMS: dict[str, type[Transform]] = {
    "multi_hot": MultiHot,
    "one_hot": OneHot,
    "standardize": Standardize,
    "rescale": Rescale,
    "reshape": Reshape,
    "pad_sequences": PadSequences,
}


@dataclass
class FittedPipeline:
    """Transforms fitted on a training part, in recipe order."""

    steps: list[Transform] = field(default_factory=list)

    def apply(self, x: np.ndarray, y: np.ndarray | None = None):
        """Transform ``x`` and ``y`` (``y`` may be None, e.g. for prediction)."""
        for i, step in enumerate(self.steps):
            if step.spec.apply_to == "x":
                x = _located(i, step, step.apply, x)
            elif y is not None:
                y = _located(i, step, step.apply, y)
        return x, y

    def state(self) -> list[dict]:
        """Each transform's settings and fitted statistics, JSON-serializable."""
        return [{**step.spec.model_dump(mode="json"), **step.fitted()} for step in self.steps]


def fit_pipeline(specs: list, x_train: np.ndarray, y_train: np.ndarray | None) -> FittedPipeline:
    """Fit ``specs`` in order on the training part ``(x_train, y_train)`` only."""
    pipeline = FittedPipeline()
    parts = {"x": x_train, "y": y_train}
    for i, spec in enumerate(specs):
        step = TRANSFORMS[spec.transform](spec)
        part = parts[spec.apply_to]
        if part is None:
            raise DataError(f"preprocessing[{i}] ({spec.transform}): applies to y, but there "
                            f"are no targets to fit it on")
        _located(i, step, step.fit, part)
        # Transform the training part only if a later step is fitted on it (saves memory).
        if any(later.apply_to == spec.apply_to for later in specs[i + 1:]):
            parts[spec.apply_to] = _located(i, step, step.apply, part)
        pipeline.steps.append(step)
    return pipeline


def _located(i: int, step: Transform, method, a):
    """Run ``method(a)``, prefixing any DataError with the recipe place of the transform."""
    try:
        return method(a)
    except DataError as error:
        raise DataError(f"preprocessing[{i}] ({step.spec.transform}, apply_to: "
                        f"{step.spec.apply_to}): {error}") from None

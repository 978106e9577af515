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

    def restore(self, record: dict[str, Any]) -> None:
        """Take back what :meth:`fitted` recorded (a finished run's transform, never refitted)."""


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
        seqs = [_indices(s.ravel(), "multi_hot", i) for i, s in enumerate(_sequences(a, "multi_hot"))]
        lengths = [len(s) for s in seqs]
        cols = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    else:
        _refuse_text(a, "multi_hot")
        ints = _numeric(a, "multi_hot").reshape(len(a), -1)  # 1-D: one index per sample
        lengths = [ints.shape[1]] * len(a)
        cols = _indices(ints, "multi_hot").ravel()
    return np.repeat(np.arange(len(a)), lengths), cols


# What a step that takes word or token indices says when it gets raw text.
_TEXT_FIX = "put a text_vectorization step (output_mode: int) before it"


def _refuse_text(a: np.ndarray, name: str, fix: str = _TEXT_FIX) -> None:
    """Raw text reaching a step that takes numbers: the recipe misses a text_vectorization step."""
    if a.dtype.kind in "US" and a.size:
        first, sample = a.reshape(-1)[0], 0
    elif a.dtype == object:
        sample = next((i for i, s in enumerate(a) if isinstance(s, (str, bytes))), None)
        if sample is None:
            return
        first = a[sample]
    else:
        return
    text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
    preview = repr(text[:40] + ("…" if len(text) > 40 else ""))
    raise DataError(f"sample {sample} is text ({preview}), but {name} takes numbers — {fix}")


def _sequences(a: np.ndarray, name: str) -> list[np.ndarray]:
    """Each sample as a NumPy array of numbers: rows of a numeric array (2-D or more), or the
    sequences of an object array; raw text and non-numeric samples are refused."""
    _refuse_text(a, name)
    if a.dtype != object:
        values = _numeric(a, name)
        if values.ndim < 2:
            raise DataError(f"{name} takes one sequence per sample; each sample here is one number (shape "
                            f"{list(values.shape)})")
        return list(values)
    seqs = []
    for i, sample in enumerate(a):
        values = np.asarray(sample)
        if values.ndim == 0 or not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            raise DataError(f"sample {i} is {type(sample).__name__} {str(sample)[:40]!r}, not a sequence of numbers: "
                            f"{name} takes one sequence of numbers per sample")
        seqs.append(values)
    return seqs


def _indices(values: np.ndarray, name: str, sample: int | None = None) -> np.ndarray:
    """Whole-number values as int64 indices; a fraction (or NaN) would be cut to an index silently.
    ``values``: one sample's (``sample``: its number), or one row per sample."""
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            where = np.argwhere(bad)[0]
            row = sample if sample is not None else int(where[0])
            raise DataError(f"sample {row} holds {values[tuple(where)]:g}, not an index: {name} takes whole numbers "
                            f"(word or class indices)")
    return values.astype(np.int64)


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

    def restore(self, record):
        self.num_classes = int(_recorded(record, "num_classes", self))


def _labels(a) -> np.ndarray:
    a = np.asarray(a)
    _refuse_text(a, "one_hot", "number the classes 0 … k−1 (a CSV's text labels are numbered by dlrun)")
    if a.ndim == 2 and a.shape[1] == 1:  # as to_categorical: (n, 1) labels → (n, classes)
        a = a[:, 0]
    ok = a.ndim == 1 and a.dtype.kind in "biuf" and (
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

    def restore(self, record):
        self.mean = np.asarray(_recorded(record, "mean", self), dtype=np.float64)
        self.std = np.asarray(_recorded(record, "std", self), dtype=np.float64)


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
    """Keras' ``pad_sequences``: int32 rows of word indices, float32 where the sequences (or the
    padding ``value``) hold fractions — they would be cut to integers otherwise."""

    def apply(self, a):
        from keras.utils import pad_sequences

        value = self.spec.value
        seqs = _sequences(a, "pad_sequences")
        whole = float(value).is_integer() and all(
            not np.issubdtype(s.dtype, np.floating) or np.all(s == np.round(s)) for s in seqs)
        return pad_sequences(seqs, maxlen=self.spec.maxlen, padding=self.spec.padding,
                             truncating=self.spec.truncating, value=value, dtype="int32" if whole else "float32")


class TextVectorization(Transform):
    """Keras ``TextVectorization`` adapted on the training part's strings only (vocabulary,
    and idf weights for tf_idf), applied batch by batch into NumPy.

    ``int`` mode gives int32 indices (0 padding, 1 ``[UNK]``) padded or cut to
    ``output_sequence_length``; without a length it gives one variable-length sequence per
    text (like the book's ``Tokenizer.texts_to_sequences``), for ``pad_sequences`` to follow.
    The other modes give float32 rows of the vocabulary's size.
    """

    BATCH = 1024

    def fit(self, a):
        import tensorflow as tf

        self.layer = self._layer()
        texts = _strings(a)
        if not len(texts):
            raise DataError("text_vectorization has no training texts to learn a vocabulary from")
        self.layer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(self.BATCH))

    def _layer(self, **fitted):
        import keras

        s = self.spec
        return keras.layers.TextVectorization(
            max_tokens=s.max_tokens, output_mode=s.output_mode, output_sequence_length=s.output_sequence_length,
            standardize=s.standardize, split=s.split, ngrams=s.ngrams, **fitted)

    def restore(self, record):
        fitted = {"vocabulary": list(_recorded(record, "vocabulary", self))}
        if self.spec.output_mode == "tf_idf":
            fitted["idf_weights"] = np.asarray(_recorded(record, "idf_weights", self), dtype=np.float32)
        self.layer = self._layer(**fitted)

    def apply(self, a):
        texts = _strings(a)
        chunks = [self.layer(texts[i:i + self.BATCH]).numpy() for i in range(0, len(texts), self.BATCH)]
        if self.spec.output_mode != "int":
            size = self.layer.vocabulary_size()
            return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, size), np.float32)
        if self.spec.output_sequence_length is not None:
            width = self.spec.output_sequence_length
            return np.concatenate(chunks).astype(np.int32) if chunks else np.zeros((0, width), np.int32)
        # No fixed length: each batch comes padded with zeros at its end; drop them per text.
        out = np.empty(len(texts), dtype=object)
        rows = (row for chunk in chunks for row in chunk.astype(np.int32))
        for i, row in enumerate(rows):
            out[i] = row[: int(np.flatnonzero(row)[-1]) + 1] if row.any() else row[:0]
        return out

    def vocabulary(self) -> list[str]:
        return [str(token) for token in self.layer.get_vocabulary()]  # plain str, not np.str_

    def fitted(self):
        vocabulary = self.vocabulary()
        record = {"vocabulary_size": len(vocabulary), "first_tokens": vocabulary[:20], "vocabulary": vocabulary}
        if self.spec.output_mode == "tf_idf":
            record["idf_weights"] = self._idf_weights()
        return record

    def _idf_weights(self) -> list[float]:
        """The adapted idf weights, in vocabulary order (what ``restore`` gives the layer back)."""
        lookup = self.layer._lookup_layer
        weights = np.asarray(lookup.idf_weights_const if hasattr(lookup, "idf_weights_const")
                             else lookup.idf_weights, dtype=np.float64)
        return weights.tolist()


def _strings(a) -> np.ndarray:
    """Texts as a 1-D array of ``str``: a 1-D array, or an (n, 1) column read from a CSV."""
    a = np.asarray(a)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.dtype.kind not in "OUS":
        raise DataError(f"text_vectorization needs one text per sample (strings of shape (n,) or (n, 1)); got "
                        f"shape {list(a.shape)} and dtype {a.dtype}")
    if a.dtype.kind == "O":
        bad = [i for i, t in enumerate(a) if not isinstance(t, (str, bytes))]
        if bad:
            raise DataError(f"sample {bad[0]} is {type(a[bad[0]]).__name__}, not text ({len(bad)} such "
                            f"sample(s)); give text_vectorization string columns without missing values")
        a = np.array([t if isinstance(t, str) else t.decode("utf-8", "replace") for t in a], dtype=object)
    return a.astype(str) if a.dtype.kind == "S" else a


def _numeric(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    _refuse_text(a, name)
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
    "text_vectorization": TextVectorization,
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
        return x, (None if y is None else self.apply_y(y))

    def apply_y(self, y):
        """Only the label transforms (``apply_to: y``), for checks over every label."""
        for i, step in enumerate(self.steps):
            if step.spec.apply_to == "y":
                y = _located(i, step, step.apply, y)
        return y

    def vocabulary(self) -> list[str] | None:
        """The vocabulary of the last ``text_vectorization`` of ``x`` in ``int`` mode, in index
        order (0 padding, 1 ``[UNK]``), for pretrained embeddings; ``None`` without one."""
        for step in reversed(self.steps):
            if isinstance(step, TextVectorization) and step.spec.apply_to == "x":
                return step.vocabulary() if step.spec.output_mode == "int" else None
        return None

    def state(self) -> list[dict]:
        """Each transform's settings and fitted statistics, JSON-serializable."""
        return [{**step.spec.model_dump(mode="json"), **step.fitted()} for step in self.steps]


def restore_pipeline(specs: list, records: list[dict]) -> FittedPipeline:
    """The pipeline a run fitted, rebuilt from the recipe's ``specs`` and what its
    ``preprocessing.json`` recorded (``FittedPipeline.state()``): nothing is refitted."""
    if not isinstance(records, list) or len(records) != len(specs):
        raise DataError(f"preprocessing.json records {len(records) if isinstance(records, list) else 'no'} "
                        f"transform(s) but the run's recipe has {len(specs)}")
    pipeline = FittedPipeline()
    for i, (spec, record) in enumerate(zip(specs, records)):
        if not isinstance(record, dict) or record.get("transform") != spec.transform:
            raise DataError(f"preprocessing[{i}]: preprocessing.json does not record a {spec.transform} step here")
        step = TRANSFORMS[spec.transform](spec)
        _located(i, step, step.restore, record)
        pipeline.steps.append(step)
    return pipeline


def _recorded(record: dict, key: str, step: Transform):
    if key not in record:
        raise DataError(f"its fitted '{key}' is not recorded (a run made by an older dlrun keeps too little "
                        f"to be used again: train it again)")
    return record[key]


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

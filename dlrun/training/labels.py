"""Labels the model's loss cannot take, found over every row before a run is created.

The preflight feeds a couple of rows through the compiled model; a label out of range further
down (class 12 for a 10-unit softmax under ``sparse_categorical_crossentropy``) would end
training with TensorFlow's stack on the first batch that holds it — or, on a GPU, train on
silently. So every label of every part is checked here with NumPy, per output:

- class-index losses (``sparse_categorical_crossentropy``): whole numbers in ``0 … units − 1``
  (``ignore_class`` excepted);
- binary losses (``binary_crossentropy``, the focal one): values in ``0 … 1``.

A class-index loss needs the model's output units: the preflight reads them off the model it tried
(:func:`output_units`).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from dlrun.data.dataset import Dataset, NamedArrays, StreamedDataset, rows as take_rows, source_row
from dlrun.errors import DataError

CLASS_INDEX_LOSSES = {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"}
BINARY_LOSSES = {"binary_crossentropy", "BinaryCrossentropy", "binary_focal_crossentropy",
                 "BinaryFocalCrossentropy"}


def check_labels_fit(recipe, dataset, splits, pipeline, units: dict[str | None, int]) -> None:
    """Raise :class:`DataError` naming the part, the row and the fix for the first label the
    loss of its output cannot take. ``units``: each output's last axis (:func:`output_units`)."""
    if recipe.compile.loss is None:  # a kind with its own losses (vae, gan) learns from the inputs alone
        return
    losses = output_losses(recipe, dataset)
    if not any(spec.name in CLASS_INDEX_LOSSES | BINARY_LOSSES for spec in losses.values()):
        return
    if isinstance(dataset, StreamedDataset):
        _check_streamed(recipe, dataset, losses, units)
        return
    for output, spec in losses.items():
        for part, rows, labels in _parts(dataset, splits, pipeline, output):
            problem = _first_problem(spec, labels, units.get(output))
            if problem is not None:
                index, text = problem
                where = source_row(dataset, "test" if part == "test split" else "train", int(rows[index]))
                target = f" of output '{output}'" if output else ""
                raise DataError(f"data: the {part}'s label{target} on {where} {text}")


def output_losses(recipe, dataset) -> dict[str | None, Any]:
    """Each output's loss spec (``None``: the model's one output); one loss for named targets
    is each target's."""
    loss = recipe.compile.loss
    if isinstance(loss, dict):
        return dict(loss)
    targets = getattr(dataset, "y_train", None)
    return {name: loss for name in targets.keys()} if isinstance(targets, NamedArrays) else {None: loss}


def _parts(ds: Dataset, splits, pipeline, output: str | None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(part, row numbers, labels as the loss sees them)``: the label transforms applied."""
    def labels(y):
        y = pipeline.apply_y(y) if pipeline is not None else y
        return np.asarray(y[output] if output is not None and isinstance(y, (dict, NamedArrays)) else y)

    rows = np.arange(len(ds.y_train))
    validation = splits[0].validation if len(splits) == 1 else None
    if validation is not None:
        yield "validation part", validation, labels(ds.y_train[validation])
        rows = splits[0].train
    yield "training part" if validation is not None or len(splits) == 1 else "training data", rows, \
        labels(ds.y_train[rows])
    if ds.y_test is not None:
        yield "test split", np.arange(len(ds.y_test)), labels(ds.y_test)


def _first_problem(spec, labels: np.ndarray, units: int | None) -> tuple[int, str] | None:
    """``(index of the first bad label, what is wrong and the fix)`` or None."""
    if labels.dtype.kind not in "biuf" or labels.size == 0:
        return None
    given = labels.reshape(len(labels), -1)
    flat = given.astype(np.float64)
    if spec.name in BINARY_LOSSES:
        bad = ((flat < 0) | (flat > 1)).any(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            return i, (f"is {_value(given[i])}, outside 0 … 1 for {spec.name} ({_rows(bad)} outside) — give "
                       f"0/1 labels, or use a loss for the labels you have (sparse_categorical_crossentropy for "
                       f"class numbers, mse for values)")
        return None
    if units is None:
        return None
    ignored = spec.args.get("ignore_class")
    valid = (flat == np.round(flat)) & (flat >= 0) & (flat < units)
    if ignored is not None:
        valid |= flat == ignored
    bad = ~valid.all(axis=1)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    top = int(np.nanmax(flat[np.isfinite(flat)])) if np.isfinite(flat).any() else None
    fix = f"give the last layer {top + 1} units" if top is not None and top >= units else "fix the labels"
    return i, (f"is {_value(given[i])}, but the model's output has {units} units, so {spec.name} takes the "
               f"classes 0 … {units - 1} ({_rows(bad)} outside) — {fix}, or "
               f"number the classes from 0")


def _rows(bad: np.ndarray) -> str:
    count = int(bad.sum())
    return f"{count} row{' is' if count == 1 else 's are'}"


def _value(row: np.ndarray) -> str:
    values = [v.item() for v in row]
    return str(values[0]) if len(values) == 1 else str(values)


def _check_streamed(recipe, ds: StreamedDataset, losses: dict, units: dict) -> None:
    """Class folders give the labels 0 … classes − 1 (an image folder's ``label_mode: int``)."""
    classes = ds.info.get("class_names")
    spec = losses.get(None)
    if not classes or spec is None or spec.name not in CLASS_INDEX_LOSSES or units.get(None) is None:
        return
    if getattr(recipe.data, "label_mode", None) == "int" and len(classes) > units[None]:
        raise DataError(f"data: {len(classes)} class folders ({', '.join(classes)}) give the labels 0 … "
                        f"{len(classes) - 1}, but the model's output has {units[None]} units for {spec.name} — "
                        f"give the last layer {len(classes)} units")


def _output_shapes(model, x_few) -> list[tuple]:
    """The shapes of the model's outputs; a subclassed model (a plugin's) shows them on a call."""
    if getattr(model, "outputs", None):
        return [tuple(t.shape) for t in model.outputs]
    try:
        out = model(take_rows(x_few, slice(0, 2)), training=False)
    except Exception:  # noqa: BLE001 - a model without an inference path: nothing to check against
        return []
    return [tuple(np.shape(o)) for o in (out if isinstance(out, (list, tuple)) else [out])]


def needs_output_units(recipe, dataset) -> bool:
    """Whether the labels check needs the model's output units (a class-index loss)."""
    return recipe.compile.loss is not None and any(
        spec.name in CLASS_INDEX_LOSSES for spec in output_losses(recipe, dataset).values())


def output_units(model, x_few) -> dict[str | None, int]:
    """The last axis of each model output (by name for a graph model's named outputs)."""
    outputs = getattr(model, "_outputs_struct", None)
    if isinstance(outputs, dict):
        return {name: int(t.shape[-1]) for name, t in outputs.items() if t.shape[-1] is not None}
    shapes = _output_shapes(model, x_few)
    return {None: int(shapes[0][-1])} if len(shapes) == 1 and shapes[0][-1] is not None else {}

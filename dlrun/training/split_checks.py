"""Parts of the data that would let a run finish "ok" with a wrong result: refused or said before training.

Checked on the splits the protocol planned (every fold of a K-fold run) before a run exists:

- **Classes**, under a classification loss (any cross-entropy or hinge; integer or one-hot labels;
  an image folder's per-class file counts). A training part with one class is refused: nothing
  can be learned from it. A validation part — or a test part taken out of the training rows — that
  lacks a class of the training part, or holds one it never shows, is refused when chance cannot
  explain it: a random part of its size would hold at least ``CHANCE`` rows of that class, so its
  rows were taken in class order (the fix: ``data.shuffle: true``). Otherwise — a rare class
  missing from a small part, a source's own test split — it is a warning.
- **Nothing held out**: a hold-out run with no validation part and no test split measures every
  metric on the rows it trained on: a warning (training a final model on all data is legitimate).
- **Steps** (streamed data): ``fit.validation_steps`` beyond the validation part is refused (Keras
  would run out of data); ``fit.steps_per_epoch`` beyond one pass over the training part is a
  warning (each epoch repeats batches: what the book does with random augmentation).

Warnings a source found while loading (``info["warnings"]``: a time series' repeated time stamps or
mostly interpolated columns) join these; all are recorded in ``data.json`` and said by the runner
even under ``--quiet``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from dlrun.data.dataset import NamedArrays, StreamedDataset
from dlrun.data.splits import Split, class_labels, is_classification_loss
from dlrun.errors import DataError, RecipeError
from dlrun.training.labels import output_losses

# Rows of a class that a random part of its size would hold: a part missing that many was taken
# in class order (a random part misses a class it should hold 10 rows of with probability < 1e-4).
CHANCE = 10


def check_parts(recipe, dataset, splits: list[Split]) -> list[str]:
    """Raise :class:`DataError` (or a located :class:`RecipeError`) for a split that cannot give a
    right result; return the warnings to say (also written to ``dataset.info["warnings"]``)."""
    warnings = list(dataset.info.get("warnings", []))
    streamed = isinstance(dataset, StreamedDataset)
    if recipe.model is not None and recipe.evaluation.protocol != "baseline":
        if recipe.compile is not None and recipe.compile.loss is not None:  # a loss that may classify (a VAE or GAN has its own, unlabelled)
            warnings += _folder_class_warnings(recipe, dataset) if streamed else \
                _class_warnings(recipe, dataset, splits)
        if streamed:
            warnings += _steps_warnings(recipe, dataset)
    warnings += _held_out_warnings(recipe, dataset, splits)
    if warnings:
        dataset.info["warnings"] = warnings
    return warnings


# --------------------------------------------------------------------------- classes


def _counts(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def _namer(names) -> Callable[[int], str]:
    """``class 1 ('pos')`` where the source names its classes, else ``class 1``."""
    names = names if isinstance(names, list) else None
    return lambda c: f"class {c} ('{names[c]}')" if names and 0 <= c < len(names) else f"class {c}"


def _rows(n: int) -> str:
    return f"{n} row{'' if n == 1 else 's'}"


def _class_warnings(recipe, ds, splits: list[Split]) -> list[str]:
    """In-memory data: every split's training part, its validation part, and the test part."""
    info = ds.info
    name_of = _namer(info.get("classes") or info.get("target_names"))
    warnings = []
    for output, spec in output_losses(recipe, ds).items():
        y = ds.y_train if output is None else (ds.y_train[output] if isinstance(ds.y_train, NamedArrays)
                                              and output in ds.y_train.keys() else None)
        labels = None if y is None else class_labels(y, spec.name)
        if labels is None:
            continue
        of = f" of output '{output}'" if output else ""
        whole = _counts(labels)
        if len(whole) == 1:
            (c, n), = whole.items()
            raise DataError(f"data: the training data{of} holds one class only ({name_of(c)}: {_rows(n)}), and a "
                            f"classifier ({spec.name}) learns nothing from one class — {_one_class_fix(recipe, ds)}")
        for split in splits:
            where = f" of {split.name}" if len(splits) > 1 else ""
            train = _counts(labels[split.train])
            if len(train) == 1:
                (c, n), = train.items()
                raise DataError(f"data: the training part{where}{of} holds one class only ({name_of(c)}: "
                                f"{_rows(n)} of its {len(split.train)}), and a classifier ({spec.name}) learns "
                                f"nothing from one class — {_order_fix(recipe, ds)}")
            if split.validation is not None:
                warnings += _compare(f"validation part{where}{of}", train, _counts(labels[split.validation]),
                                     name_of, strict=True, fix=_order_fix(recipe, ds))
        y_test = ds.y_test if output is None else (ds.y_test[output] if isinstance(ds.y_test, NamedArrays)
                                                   and output in ds.y_test.keys() else None)
        test = None if y_test is None else class_labels(y_test, spec.name)
        if test is not None and len(test):
            taken = isinstance(info.get("test_split"), dict)  # a part of the training rows, not the source's
            warnings += _compare(f"test {'part' if taken else 'split'}{of}", whole, _counts(test), name_of,
                                 strict=taken, fix=_order_fix(recipe, ds))
    return warnings


def _compare(part: str, train: dict[int, int], held: dict[int, int], name_of, *, strict: bool, fix: str) -> list[str]:
    """A part's classes against its training part's: refused (strict) when a random part would
    have held ``CHANCE`` rows of a class it lacks, else one warning."""
    n_train, n_held = sum(train.values()), sum(held.values())
    n_all = n_train + n_held
    # A class's rows, dealt at random between the two parts, give the part that has none about
    # count × its share of all rows: from the pooled count, not from one part's rate (a class
    # with 2 of a 10-row part is no sign that 50 training rows should hold 10 of it).
    problems = []  # (rows a random part would hold, what is wrong)
    for c, count in train.items():
        if c not in held:
            expected = count * n_held / n_all
            problems.append((expected, f"no row of {name_of(c)} (the training part has {count} of its {n_train} "
                                       f"rows, so about {expected:.0f} were expected)"))
    for c, count in held.items():
        if c not in train:
            problems.append((count * n_train / n_all,
                             f"{_rows(count)} of {name_of(c)}, a class the training part never shows"))
    if not problems:
        return []
    problems.sort(key=lambda p: -p[0])  # the most telling first
    listed = "; ".join(text for _, text in problems[:3])
    if len(problems) > 3:
        listed += f"; and {len(problems) - 3} more classes"
    if strict and problems[0][0] >= CHANCE:
        raise DataError(f"data: the {part} holds {listed} — not chance: its rows were taken in class order; {fix}")
    return [f"the {part} holds {listed}; a rare class can miss a small part by chance, but its metrics "
            f"say nothing of that class"]


def _one_class_fix(recipe, ds) -> str:
    limit, before = ds.info.get("limit"), ds.info.get("n_train_before_limit")
    if limit and before and before > limit and not getattr(recipe.data, "shuffle", True):
        return _order_fix(recipe, ds)
    return "check data.path and the labels"


def _order_fix(recipe, ds) -> str:
    """How to take parts that are not in class order."""
    kfold = recipe.evaluation.protocol == "kfold"
    if not getattr(recipe.data, "shuffle", True):
        limit, before = ds.info.get("limit"), ds.info.get("n_train_before_limit")
        kept = f"data.limit: {limit} kept the first {limit} of {before} rows; " if limit and before and before > limit \
            else ""
        return (f"{kept}set data.shuffle: true (it shuffles the rows once, seeded, before data.limit and the splits)"
                + (" or evaluation.shuffle: true" if kfold and not kept else ""))
    if kfold:
        return "set evaluation.shuffle: true, or evaluation.stratify: true"
    return "take a shuffled part: data.split.validation: {fraction: 0.2}"


def _folder_class_warnings(recipe, ds: StreamedDataset) -> list[str]:
    """Image folders: each part's per-class file counts (data.json ``parts``)."""
    parts = ds.info.get("parts") or {}
    per_class = {name: part.get("per_class") for name, part in parts.items() if isinstance(part, dict)}
    losses = [name for name in recipe.compile.loss_names if is_classification_loss(name)]
    if not per_class.get("train") or not losses:
        return []
    names = list(per_class["train"])
    name_of = _namer(names)

    def present(counts: dict) -> dict[int, int]:
        return {names.index(name): n for name, n in counts.items() if n}

    root, train = ds.info.get("path", "data.path"), present(per_class["train"])
    if len(train) == 1:
        (c, n), = train.items()
        empty = ", ".join(f"{name}/" for name in names if not per_class["train"][name])
        raise DataError(f"data.train: only the class folder '{names[c]}' of {root}/{parts['train']['folder']} holds "
                        f"images ({n}; {empty} empty), and a classifier ({losses[0]}) learns nothing from one class "
                        f"— put each class's images in its folder")
    warnings = []
    for part in ("validation", "test"):
        if per_class.get(part):
            folder = f"{root}/{parts[part]['folder']}"
            warnings += _compare(f"{part} folder {folder}", train, present(per_class[part]), name_of, strict=True,
                                 fix=f"put that class's images in its sub-folder of {folder}")
    return warnings


# --------------------------------------------------------------------------- nothing held out, steps


def _held_out_warnings(recipe, ds, splits: list[Split]) -> list[str]:
    if recipe.evaluation.protocol != "holdout" or (recipe.compile is not None and recipe.compile.loss is None):
        return []  # a VAE or GAN learns from the inputs alone: there is no held-out score to miss
    if isinstance(ds, StreamedDataset):
        if ds.validation is not None or ds.test is not None:
            return []
        how = ("data.validation: {start: 0.7, end: 0.85}" if recipe.data.source == "timeseries_csv"
               else "data.validation: validation (a folder of class sub-folders)")
    else:
        if splits[0].validation is not None or ds.x_test is not None:
            return []
        how = "data.split.validation: {fraction: 0.2} (or data.split.test)"
    return [f"nothing is held out: the data has no validation part and no test split, so every metric of this run "
            f"is measured on the rows it trained on — hold a part out with {how}"]


def _batches(part: dict | None, batch_size: int) -> int | None:
    """Batches in one pass over a streamed part (a series' windows, a folder's images)."""
    if not isinstance(part, dict):
        return None
    if part.get("batches") is not None:
        return int(part["batches"])
    return math.ceil(part["files"] / batch_size) if part.get("files") is not None else None


def _size(part: dict) -> str:
    return f"{part['windows']} windows" if "windows" in part else f"{part.get('files')} images"


def _steps_warnings(recipe, ds: StreamedDataset) -> list[str]:
    fit, parts, batch = recipe.fit, ds.info.get("parts") or {}, recipe.fit.batch_size
    if fit.validation_steps and ds.validation is not None:
        have = _batches(parts.get("validation"), batch)
        if have is not None and fit.validation_steps > have:
            raise RecipeError([recipe.issue(("fit", "validation_steps"), (
                f"{fit.validation_steps} batches, but the validation part is {have} batch{'es' if have > 1 else ''} "
                f"({_size(parts['validation'])} "
                f"in batches of {batch}): Keras would run out of validation data — set fit.validation_steps: {have} "
                f"or less, or leave it out (the whole part)"))])
    have = _batches(parts.get("train"), batch)
    if fit.steps_per_epoch and have and fit.steps_per_epoch > have:
        return [f"fit.steps_per_epoch: {fit.steps_per_epoch} batches an epoch are {fit.steps_per_epoch / have:.1f} "
                f"passes over the training part ({_size(parts['train'])} in {have} batches of {batch}), so every "
                f"epoch repeats batches (as the book does with random augmentation); {have} or less keeps an epoch "
                f"one pass at most"]
    return []

"""The rows an export is checked on, and what ``dlrun predict`` gives for them.

The run's own test part (else its validation part, else its first training rows), loaded the way
the run loaded it (the saved recipe, its data, its seed and test split). The reference is the
run's model on the run's restored preprocessing of those rows — ``TrainedModel.inputs`` then the
model — and the export gets the same rows raw, with only the steps it leaves to the caller applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrun.inference.export_plan import ServingPlan, plan_images, plan_in_memory, plan_timeseries

CHECK_ROWS = 256  # enough to see a difference; few enough for an interpreter run row by row
CHECK_IMAGES = 8  # images go one by one (each keeps its own size): fewer of them


@dataclass
class CheckSet:
    plan: ServingPlan
    batches: list  # what the export takes, batch by batch
    reference: list[np.ndarray]  # the run's model's outputs for them (flattened, all rows)
    rows: int
    part: str  # test | validation | training
    part_rows: int | None  # how many rows that part has (None: streamed, not counted)


def check_set(trained, fmt: str, rows: int = CHECK_ROWS) -> CheckSet:
    """The plan of the serving model for ``fmt`` and the rows to check an export of it on."""
    from dlrun.data.dataset import StreamedDataset
    from dlrun.data.sources import load_data
    from dlrun.data.splits import apply_test_split

    recipe = trained.recipe
    ds = load_data(recipe.data, trained.run.base_dir, recipe.seed, recipe.fit.batch_size)
    if isinstance(ds, StreamedDataset):
        if recipe.data.source == "image_directory":
            return _images(trained, ds)
        return _timeseries(trained, ds, rows)
    ds = apply_test_split(ds, recipe.data.split, recipe.seed)
    part, x = ("test", ds.x_test) if ds.x_test is not None else ("training", ds.x_train)
    total, x = len(x), x[:rows]
    plan = plan_in_memory(trained.model, trained.pipeline, x, fmt)
    reference = reference_outputs(trained, [trained.inputs(x)])
    return CheckSet(plan, [plan.prepare(x)], reference, len(x), part, total)


def reference_outputs(trained, batches: list) -> list[np.ndarray]:
    """``TrainedModel.predict`` on each batch, its outputs flattened the way Keras exports them."""
    import keras

    outputs = [keras.tree.flatten(trained.model.predict(b, batch_size=trained.recipe.fit.batch_size, verbose=0))
               for b in batches]
    return [np.concatenate([np.asarray(o[i]) for o in outputs]) for i in range(len(outputs[0]))]


def _part(ds) -> tuple[str, object]:
    for name in ("test", "validation", "train"):
        factory = getattr(ds, name)
        if factory is not None:
            return ("training" if name == "train" else name), factory
    raise AssertionError("a streamed source always has a training part")


def _images(trained, ds) -> CheckSet:
    """The first images of the part in file order: decoded at their own size for the export
    (it resizes them itself), and the part's own batches for the model."""
    spec = trained.recipe.data
    plan = plan_images(trained.model, spec)
    part, factory = _part(ds)
    batches, model_inputs = [], []
    for x, _ in factory().unbatch().batch(CHECK_IMAGES).take(1):
        model_inputs.append(x.numpy())
    if plan.inside:  # the export starts at the decoded image: read the same files
        files = _image_files(spec, ds.info, "train" if part == "training" else part)[:len(model_inputs[0])]
        batches = [_decoded(path, spec.color_mode) for path in files]
    else:
        batches = model_inputs
    reference = reference_outputs(trained, model_inputs)
    return CheckSet(plan, batches, reference, len(model_inputs[0]), part, None)


def _image_files(spec, info: dict, part: str) -> list[str]:
    """The part's files in the order its (unshuffled) stream reads them."""
    import keras

    folder = Path(info["path"]) / getattr(spec, part)
    listing = keras.utils.image_dataset_from_directory(
        str(folder), labels="inferred", label_mode=spec.label_mode, class_names=info["class_names"],
        color_mode=spec.color_mode, image_size=tuple(spec.image_size), shuffle=False, verbose=False)
    return list(listing.file_paths)


def _decoded(path: str, color_mode: str) -> np.ndarray:
    """One image file as float32 pixels of its own size, as image_dataset_from_directory decodes it."""
    import tensorflow as tf

    channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[color_mode]
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    return tf.cast(image, tf.float32).numpy()[None]


def _timeseries(trained, ds, rows: int) -> CheckSet:
    """Windows of the part. The part streams them normalized; the export normalizes them itself,
    so it gets them back in the series' own units (times std, plus mean, per column)."""
    plan = plan_timeseries(trained.model, trained.recipe.data, trained.source_stats)
    part, factory = _part(ds)
    windows = np.concatenate([x.numpy() for x, _ in factory().unbatch().batch(rows).take(1)])
    reference = reference_outputs(trained, [windows])
    inside = {s.name: s for s in plan.inside}
    raw = windows
    if "normalize" in inside:
        record = inside["normalize"].record
        raw = (windows.astype(np.float64) * record["std"] + record["mean"]).astype(np.float32)
    return CheckSet(plan, [raw], reference, len(windows), part, None)

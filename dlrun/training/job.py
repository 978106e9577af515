"""One training job: fit transforms on the training part → build → compile → fit → evaluate.

A job is one split of one run (the hold-out split, or one K-fold fold). It writes its
history epoch by epoch, so an interrupted job keeps what it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun.data.dataset import Dataset
from dlrun.data.splits import Split
from dlrun.data.transforms import FittedPipeline, fit_pipeline
from dlrun.recipe.schema import Recipe


@dataclass
class JobResult:
    name: str
    history: dict[str, list[float]]
    metrics: dict[str, float]  # final evaluations: val_<m>, test_<m>
    epochs_run: int
    model: Any = field(repr=False, default=None)


@dataclass
class JobContext:
    """What a job needs besides its split: where to write and whom to tell."""

    recipe: Recipe
    dataset: Dataset
    run_dir: Any  # dlrun.track.rundir.RunDir
    tracked: Any  # dlrun.track.mlflow_store.TrackedRun | None
    reporter: Any  # dlrun.report.Reporter


def _evaluate(model, x, y, batch_size: int, prefix: str, callbacks: list) -> dict[str, float]:
    values = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True, callbacks=callbacks)
    return {f"{prefix}{k}": float(v) for k, v in values.items()}


def preflight(recipe: Recipe, ds: Dataset, split: Split) -> tuple[FittedPipeline, list[str]]:
    """Everything that can go wrong with the data and model, tried on a few rows before a
    run is created: transforms fitted on the training part, the model built and compiled,
    one tiny batch evaluated. Returns the fitted pipeline (reused by the first job) and
    the names of the metrics the model logs (``loss``, ``accuracy``…)."""
    import keras

    from dlrun.model.builder import check_data_fits

    x_train, y_train = ds.x_train[split.train], ds.y_train[split.train]
    pipeline = fit_pipeline(recipe.preprocessing, x_train, y_train)
    x_few, y_few = pipeline.apply(x_train[:8], y_train[:8])
    # Feature transforms are tried on a few rows (they can be large: multi_hot), label
    # transforms on every validation and test label (a class the training part never saw).
    if split.validation is not None:
        pipeline.apply(ds.x_train[split.validation[:8]], ds.y_train[split.validation])
    if ds.x_test is not None:
        pipeline.apply(ds.x_test[:8], ds.y_test)
    model = _compiled_model(recipe, x_few)
    names = check_data_fits(model, x_few, y_few)
    del model
    keras.backend.clear_session(free_memory=False)  # fresh layer names; skip the slow full GC
    keras.utils.set_random_seed(recipe.seed)  # …and from the seeded initial weights
    return pipeline, names


def _compiled_model(recipe: Recipe, x):
    """The recipe's model for inputs shaped like ``x`` (integer inputs stay integers)."""
    from dlrun.model.builder import build_model, compile_model

    dtype = "int32" if np.issubdtype(np.asarray(x).dtype, np.integer) else "float32"
    model = build_model(recipe.model, x.shape[1:], name=recipe.name, input_dtype=dtype)
    compile_model(model, recipe.compile)
    return model


def run_job(
    ctx: JobContext, split: Split, *, epochs: int | None = None, evaluate_test: bool = True,
    pipeline: FittedPipeline | None = None,
) -> JobResult:
    from dlrun.model.builder import check_data_fits
    from dlrun.track.plots import plot_history
    from dlrun.training.callbacks import build_callbacks, epoch_recorder
    from dlrun.training.interrupts import pending, safe_points, safe_stop_callback

    recipe, ds, run_dir = ctx.recipe, ctx.dataset, ctx.run_dir
    x_train, y_train = ds.x_train[split.train], ds.y_train[split.train]
    preflighted = pipeline is not None  # this split's data and model were already tried
    if pipeline is None:
        pipeline = fit_pipeline(recipe.preprocessing, x_train, y_train)  # training part only
    x_train, y_train = pipeline.apply(x_train, y_train)
    validation = None
    if split.validation is not None:
        validation = pipeline.apply(ds.x_train[split.validation], ds.y_train[split.validation])
    test = None
    if evaluate_test and ds.x_test is not None:
        test = pipeline.apply(ds.x_test, ds.y_test)
    run_dir.write_json("preprocessing.json", pipeline.state())

    model = _compiled_model(recipe, x_train)
    if not preflighted:
        check_data_fits(model, x_train, y_train)

    epochs = epochs or recipe.fit.epochs

    def on_epoch(job, epoch, total, logs, seconds):
        run_dir.append_history(epoch, logs)
        if ctx.tracked is not None:
            ctx.tracked.log_epoch(logs, step=epoch)
        ctx.reporter.epoch(job, epoch, total, logs, seconds)

    ctx.reporter.job_started(split.name, epochs)
    stop = safe_stop_callback()
    callbacks = build_callbacks(recipe.fit.callbacks, run_dir.path, has_validation=validation is not None,
                                note=ctx.reporter.note)
    # Last, so it sees what other callbacks add to the logs (ReduceLROnPlateau's learning_rate).
    callbacks += [stop, epoch_recorder(split.name, epochs, on_epoch)]
    metrics: dict[str, float] = {}
    with safe_points():  # Ctrl-C/SIGTERM stop at the next batch, then raise
        history = model.fit(
            x_train,
            y_train,
            batch_size=recipe.fit.batch_size,
            epochs=epochs,
            shuffle=recipe.fit.shuffle,
            validation_data=validation,
            callbacks=callbacks,
            verbose=0,
        ).history
        if not pending():  # a noted signal is raised as Interrupted when this block ends
            if validation is not None:
                metrics.update(_evaluate(model, *validation, recipe.fit.batch_size, "val_", [stop]))
            if test is not None:
                metrics.update(_evaluate(model, *test, recipe.fit.batch_size, "test_", [stop]))
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    run_dir.write_json("metrics.json", metrics)
    if recipe.tracking.log_model:
        model.save(run_dir.file("model.keras"))
    plot_history(history, run_dir.file("learning_curves.png"), title=f"{recipe.name} — {split.name}")
    ctx.reporter.job_finished(split.name, metrics)
    return JobResult(split.name, history, metrics, len(next(iter(history.values()), [])), model)

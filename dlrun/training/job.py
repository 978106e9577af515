"""One training job: fit transforms on the training part → build → compile → fit → evaluate.

A job is one split of one run (the hold-out split, or one K-fold fold). It writes its
history epoch by epoch, so an interrupted job keeps what it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun.data.dataset import Dataset, StreamedDataset, plain, rows
from dlrun.data.splits import Split
from dlrun.data.transforms import FittedPipeline, fit_pipeline
from dlrun.recipe.schema import Recipe
from dlrun.training.fitting import joined, reads_repeating, record_model_facts, start_fine_tuning


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
    dataset: Dataset | StreamedDataset
    run_dir: Any  # dlrun.track.rundir.RunDir
    tracked: Any  # dlrun.track.mlflow_store.TrackedRun | None
    reporter: Any  # dlrun.report.Reporter
    base_dir: Any = None  # the recipe's folder (relative files of recipe layers)
    resume: bool = False  # continue from the job directory's checkpoint, if it has one


@dataclass
class JobData:
    """One job's data ready for Keras: ``(x, y)`` arrays, or batched tf.data pipelines."""

    train: Any
    validation: Any = None
    test: Any = None
    streamed: bool = False
    fitted: Any = None  # what preprocessing.json records
    stream: Any = None  # the training part as a seekable BatchStream (streamed sources that have one)

    def few(self) -> tuple[np.ndarray, np.ndarray]:
        """A few training samples (inputs, targets) as arrays: shapes and one test batch."""
        if self.streamed:
            x, y = next(iter(self.train.take(1)))
            return np.asarray(x)[:8], np.asarray(y)[:8]
        x, y = self.train
        return rows(x, slice(0, 8)), rows(y, slice(0, 8))  # dicts of arrays for a graph model's names


def _evaluate(model, part, batch_size: int, prefix: str, callbacks: list) -> dict[str, float]:
    data = {"x": part} if not isinstance(part, tuple) else {"x": part[0], "y": part[1], "batch_size": batch_size}
    values = model.evaluate(**data, verbose=0, return_dict=True, callbacks=callbacks)
    return {f"{prefix}{k}": float(v) for k, v in values.items()}


def last_validation(recipe, data, trained: dict[str, list]) -> dict[str, float] | None:
    """The last epoch's validation metrics, where evaluating the validation part again would give
    the same numbers: that epoch was trained in this process (``trained``: the epochs trained now),
    on in-memory arrays, which ``fit`` validates in ``fit.batch_size`` batches like the final
    evaluation, and no recipe callback changed the weights after it. Otherwise None."""
    from dlrun.training.callbacks import keep_last_weights

    if data.streamed or not isinstance(data.validation, tuple) or not keep_last_weights(recipe.fit.callbacks):
        return None
    last = {key: float(values[-1]) for key, values in trained.items() if key.startswith("val_") and values}
    return last or None


@dataclass
class Preflight:
    """What the preflight tried, for the run to reuse: the first split's fitted pipeline, the
    names the model logs, the sample shapes and dtypes it put through the model (a job whose
    data looks the same need not try again), and each output's units (the labels check)."""

    pipeline: FittedPipeline | None
    logged: list[str]
    checked: Any
    output_units: dict[str | None, int]


def preflight(recipe: Recipe, ds: Dataset | StreamedDataset, split: Split, base_dir=None) -> Preflight:
    """Everything that can go wrong with the data and model, tried on a few rows before a
    run is created: transforms fitted on the training part, the model built and compiled,
    one tiny batch evaluated, the callbacks' metric names and arguments (each built once), the
    fine-tune stage's layers found."""
    import keras

    from dlrun.training.callbacks import check_callbacks
    from dlrun.training.labels import needs_output_units, output_units
    from dlrun.training.samples import check_samples

    pipeline, data = _preflight_data(recipe, ds, split)
    x_few, y_few = data.few()
    model, _ = _compiled_model(recipe, x_few, _build_context(pipeline, base_dir))
    names = _check_fits(recipe, model, x_few, y_few)
    units = output_units(model, x_few) if needs_output_units(recipe, ds) else {}
    check_samples(recipe, model)
    has_validation = data.validation is not None if data.streamed else split.validation is not None
    check_callbacks(recipe, model, names, has_validation)
    if recipe.fit.fine_tune is not None:
        start_fine_tuning(model, recipe)  # the named layers exist, the optimizer builds
    del model
    keras.backend.clear_session(free_memory=False)  # fresh layer names; skip the slow full GC
    keras.utils.set_random_seed(recipe.seed)  # …and from the seeded initial weights
    return Preflight(pipeline, names, _signature(x_few, y_few), units)


def _signature(x, y) -> tuple:
    from dlrun.data.dataset import sample_signature

    return sample_signature(x), sample_signature(y)


def _check_fits(recipe: Recipe, model, x, y) -> list[str]:
    """A few rows through the compiled model, as its kind checks them; the names it logs."""
    from dlrun.model.kinds import KINDS

    return KINDS[recipe.model.type].check(model, x, y)


def preflight_model(recipe: Recipe, ds: Dataset | StreamedDataset, split: Split | None, base_dir=None):
    """The compiled model a run would build (``dlrun show``)."""
    pipeline, data = _preflight_data(recipe, ds, split)
    return _compiled_model(recipe, data.few()[0], _build_context(pipeline, base_dir))[0]


def _preflight_data(recipe: Recipe, ds: Dataset | StreamedDataset, split: Split | None
                    ) -> tuple[FittedPipeline | None, JobData]:
    """The pipeline fitted on the training part, and a few transformed samples of every part."""
    if isinstance(ds, StreamedDataset):
        pipeline, data = None, _streamed_parts(ds, recipe, evaluate_test=True)
        _check_parts_agree(data)
    else:
        x_train, y_train = ds.x_train[split.train], ds.y_train[split.train]
        pipeline = fit_pipeline(recipe.preprocessing, x_train, y_train)
        data = JobData(plain(pipeline.apply(x_train[:8], y_train[:8])))
        # Feature transforms are tried on a few rows (they can be large: multi_hot), label
        # transforms on every validation and test label (a class the training part never saw).
        if split.validation is not None:
            pipeline.apply(ds.x_train[split.validation[:8]], ds.y_train[split.validation])
        if ds.x_test is not None:
            pipeline.apply(ds.x_test[:8], ds.y_test)
    return pipeline, data


def _check_parts_agree(data: JobData) -> None:
    """Validation and test batches must look like training batches (same sample shapes)."""
    from dlrun.errors import DataError

    x, y = data.few()
    for name in ("validation", "test"):
        part = getattr(data, name)
        if part is None:
            continue
        px, py = next(iter(part.take(1)))
        if tuple(px.shape[1:]) != x.shape[1:] or tuple(py.shape[1:]) != y.shape[1:]:
            raise DataError(f"data: the {name} part's samples have shape {tuple(px.shape[1:])} → "
                            f"{tuple(py.shape[1:])}, the training part's {x.shape[1:]} → {y.shape[1:]}")


def _build_context(pipeline: FittedPipeline | None, base_dir):
    from pathlib import Path

    from dlrun.model.builder import BuildContext

    vocabulary = pipeline.vocabulary() if pipeline is not None and hasattr(pipeline, "vocabulary") else None
    return BuildContext(vocabulary=vocabulary, base_dir=Path(base_dir) if base_dir else Path.cwd())


def _compiled_model(recipe: Recipe, x, context):
    """The recipe's model for inputs shaped like ``x`` (integer inputs stay integers), and
    the facts its recipe layers reported (GloVe coverage, a pretrained base…)."""
    from dlrun.model.builder import build_model, compile_model
    from dlrun.training.compute import model_scope

    if isinstance(x, dict):  # a graph model's inputs by name
        shapes, dtypes = {k: np.shape(v)[1:] for k, v in x.items()}, {k: _input_dtype(v) for k, v in x.items()}
    else:
        shapes, dtypes = np.shape(x)[1:], _input_dtype(x)
    with model_scope(recipe):  # fit.precision; several GPUs: MirroredStrategy
        model = build_model(recipe.model, shapes, name=recipe.name, input_dtype=dtypes, context=context)
        compile_model(model, recipe.compile, recipe.model.type)
    return model, context.facts


def _input_dtype(x) -> str:
    """The Keras input dtype for data like ``x``: integer inputs stay integers."""
    x = np.asarray(x)
    if x.dtype == object and len(x) and not isinstance(x.flat[0], str):
        from dlrun.errors import DataError

        raise DataError("the model's inputs are variable-length sequences: make them one length first "
                        "(a pad_sequences step, or text_vectorization's output_sequence_length)")
    if np.issubdtype(x.dtype, np.integer):
        return "int32"
    if x.dtype == object or x.dtype.kind in "SU":
        return "string"
    return "float32"


def _streamed_parts(ds: StreamedDataset, recipe: Recipe, evaluate_test: bool) -> JobData:
    stream = ds.train_stream() if ds.train_stream is not None else None
    if stream is not None:  # fit reads the stream; its start gives the few samples (no second pipeline)
        train = stream.dataset()
    else:
        train = ds.train()
        if recipe.fit.steps_per_epoch:
            train = train.repeat()  # the book's generators cycle; steps_per_epoch ends an epoch
    return JobData(
        train,
        ds.validation() if ds.validation is not None else None,
        ds.test() if evaluate_test and ds.test is not None else None,
        streamed=True,
        fitted=ds.fitted,
        stream=stream,
    )


def _array_parts(ds: Dataset, split: Split, pipeline: FittedPipeline, evaluate_test: bool) -> JobData:
    # Named arrays (a graph model's inputs/outputs) reach Keras as dicts.
    train = plain(pipeline.apply(ds.x_train[split.train], ds.y_train[split.train]))
    validation = None
    if split.validation is not None:
        validation = plain(pipeline.apply(ds.x_train[split.validation], ds.y_train[split.validation]))
    test = None
    if evaluate_test and ds.x_test is not None:
        test = plain(pipeline.apply(ds.x_test, ds.y_test))
    return JobData(train, validation, test, fitted=pipeline.state())


_MAE_LOSSES = {"mae", "mean_absolute_error", "MeanAbsoluteError"}


def _baselines(recipe: Recipe, metrics: dict[str, float]) -> dict[str, float]:
    """The common-sense baselines a time series reports (``val_baseline_mae``) by plot panel
    (``mae``), and the loss panel's too when the loss is that MAE."""
    found = {k.removeprefix("val_baseline_"): v for k, v in metrics.items() if k.startswith("val_baseline_")}
    if "mae" in found and set(recipe.compile.loss_names) & _MAE_LOSSES:
        found["loss"] = found["mae"]
    return found


def run_job(
    ctx: JobContext, split: Split, *, epochs: int | None = None, evaluate_test: bool = True,
    pipeline: FittedPipeline | None = None, checked: Any = None,
) -> JobResult:
    """``pipeline``: the split's pipeline when already fitted; ``checked``: the sample signature
    the preflight put through the model (data that looks the same is not tried again)."""
    from dlrun.model.builder import set_steps_per_execution
    from dlrun.model.plot import save_model_picture
    from dlrun.track.plots import plot_history
    from dlrun.training.compute import batches_per_epoch, compute_facts, record_compute, steps_per_execution
    from dlrun.training.fitting import train_stages
    from dlrun.training.interrupts import pending, safe_points, safe_stop_callback

    recipe, ds, run_dir = ctx.recipe, ctx.dataset, ctx.run_dir
    if isinstance(ds, StreamedDataset):
        data = _streamed_parts(ds, recipe, evaluate_test)
    else:
        if pipeline is None:  # fitted on the training part only
            pipeline = fit_pipeline(recipe.preprocessing, ds.x_train[split.train], ds.y_train[split.train])
        data = _array_parts(ds, split, pipeline, evaluate_test)
    run_dir.write_json("preprocessing.json", data.fitted)

    x_few, y_few = data.few()
    model, facts = _compiled_model(recipe, x_few, _build_context(pipeline, ctx.base_dir))
    if not model.built or _signature(x_few, y_few) != checked:  # a plugin's model builds on its first batch
        _check_fits(recipe, model, x_few, y_few)
    record_model_facts(ctx, facts)
    steps = steps_per_execution(recipe, model, batches_per_epoch(recipe, data), reads_repeating(recipe, data),
                                ctx.reporter.note)
    set_steps_per_execution(model, steps)
    record_compute(run_dir, ctx.tracked, compute_facts(recipe, model))
    save_model_picture(model, run_dir.file("model.png"), ctx.reporter.note)  # skipped, noted, without graphviz

    epochs = epochs or recipe.fit.epochs
    fine_tune = recipe.fit.fine_tune
    earlier, checkpoint = {}, None
    if ctx.resume:  # the epochs before the checkpoint stay; MLflow gets any it missed
        from dlrun.training.checkpoints import load_checkpoint
        from dlrun.training.resume import relog_missing_epochs

        checkpoint = load_checkpoint(run_dir.path)
        earlier = run_dir.truncate_history(checkpoint.epoch if checkpoint is not None else 0)
        relog_missing_epochs(ctx.tracked, earlier)
    ctx.reporter.job_started(split.name, epochs + (fine_tune.epochs if fine_tune else 0),
                             done=checkpoint.epoch if checkpoint is not None else 0)
    stop = safe_stop_callback(finish_validation=recipe.fit.checkpoint)  # a whole epoch to save
    metrics: dict[str, float] = {}
    with safe_points():  # Ctrl-C/SIGTERM stop at the next batch, then raise
        trained = train_stages(ctx, model, data, split.name, epochs, stop, checkpoint)
        history = joined(earlier, trained)
        if not pending():  # a noted signal is raised as Interrupted when this block ends
            if data.validation is not None:
                metrics.update(last_validation(recipe, data, trained)
                               or _evaluate(model, data.validation, recipe.fit.batch_size, "val_", [stop]))
            if data.test is not None:
                metrics.update(_evaluate(model, data.test, recipe.fit.batch_size, "test_", [stop]))
    if isinstance(ds, StreamedDataset) and ds.extra_metrics is not None and not pending():
        metrics.update(ds.extra_metrics(metrics))  # baselines, metrics in the target's own units
    if not pending():
        from dlrun.training.samples import finish_samples

        finish_samples(ctx, model, data)  # a VAE's latent grid and scatter
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    run_dir.write_json("metrics.json", metrics)
    if recipe.tracking.log_model:
        model.save(run_dir.file("model.keras"))
    plot_history(history, run_dir.file("learning_curves.png"), title=f"{recipe.name} — {split.name}",
                 baselines=_baselines(recipe, metrics))
    ctx.reporter.job_finished(split.name, metrics)
    return JobResult(split.name, history, metrics, len(next(iter(history.values()), [])), model)

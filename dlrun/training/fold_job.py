"""One fold (or a K-fold run's refit) as a job: seeded at its start, its status in its own
``run.json``, its results in its own directory and MLflow child run.

:func:`run_fold_job` is the one body, run in the parent (the serial executor reuses the
loaded data and the preflight's fitted pipeline) or in a worker process, which rebuilds
what it needs from the spec alone (:func:`run_fold_spec`). A job seeds itself after a fresh
Keras session, so its result does not depend on which jobs ran before it in its process.
"""

from __future__ import annotations

import os
import socket

from dlrun.data.splits import Split
from dlrun.track.rundir import log_run_files
from dlrun.training.interrupts import begin_ending
from dlrun.training.job import JobContext, JobResult, run_job
from dlrun.training.jobspec import JobSpec


def final_metrics(result: JobResult) -> dict[str, float]:
    """End-of-run evaluations, renamed where they would collide with a per-epoch curve
    (``val_loss`` at the end → ``final_val_loss``; MLflow keeps one history per name)."""
    return {f"final_{k}" if k in result.history else k: v for k, v in result.metrics.items()}


def log_model(tracked, run_dir, model) -> None:
    """Log a job's model to MLflow when the job saved one (``tracking.log_model``): its serving
    model, the run's preprocessing inside, so it takes raw inputs (see dlrun.inference.serving_mlflow)."""
    if tracked is not None and model is not None and run_dir.file("model.keras").exists():
        from dlrun.inference.serving_mlflow import log_serving_model

        log_serving_model(tracked, run_dir.path, model)


def end_job(tracked, run_dir, status: str, error: str | None) -> None:
    run_dir.write_status(status, error=error)
    if tracked is not None:
        tracked.end(status, error)


def fresh_seeded_session(seed: int) -> None:
    """A fresh Keras session (flat memory, the same layer names) seeded with the run's seed."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)


def run_fold_job(ctx: JobContext, split: Split, spec: JobSpec, pipeline=None, checked=None, parent=None) -> JobResult:
    """Train and evaluate ``split`` into ``ctx.run_dir`` (a fold's folder, or ``final/``),
    recording RUNNING → FINISHED/FAILED/KILLED there and in its MLflow run ``ctx.tracked``.
    A refit's model is also the ``parent`` run's model."""
    fresh_seeded_session(spec.seed)
    job_dir, child = ctx.run_dir, ctx.tracked
    job_dir.write_status("RUNNING", mlflow_run_id=spec.run_id, job=spec.kind, host=socket.gethostname(),
                         pid=os.getpid(), devices=spec.devices or None, error=None)
    try:
        result = run_job(ctx, split, epochs=spec.epochs, evaluate_test=spec.evaluate_test, pipeline=pipeline,
                         checked=checked)
        job_dir.write_status("FINISHED", error=None)
        if child is not None:
            child.log_metrics(final_metrics(result))
            log_model(child, job_dir, result.model)
            log_run_files(child, job_dir.path)
        if parent is not None:  # final/'s files go up with the run's (dlrun.track.rundir.log_run_files)
            log_model(parent, job_dir, result.model)
    except KeyboardInterrupt as exc:
        begin_ending()  # the run ends: a further signal must not leave the fold's run RUNNING
        end_job(child, job_dir, "KILLED", f"interrupted ({', then '.join(getattr(exc, 'signals', ['SIGINT']))})")
        raise
    except BaseException as exc:
        begin_ending()
        end_job(child, job_dir, getattr(exc, "run_status", "FAILED"), f"{type(exc).__name__}: {exc}")
        raise
    if child is not None:
        child.end("FINISHED")
    result.model = None  # k × repeats models need not stay in memory
    return result


def run_fold_spec(spec: JobSpec, reporter) -> JobResult:
    """Run a fold or refit spec in this process from its files alone: the recipe from the
    spec, the data loaded again (seeded as the parent loaded it), the rows from the run's
    ``splits.json``, the MLflow runs the parent created."""
    import numpy as np

    from dlrun.data.dataset import StreamedDataset
    from dlrun.data.sources import load_data
    from dlrun.data.splits import apply_test_split
    from dlrun.recipe.schema import Recipe
    from dlrun.tf_runtime import configure_runtime
    from dlrun.track.mlflow_store import Tracker, TrackedRun, offline_notice
    from dlrun.track.rundir import RunDir
    from dlrun.track.runs import RunReader

    recipe = Recipe.model_validate(spec.recipe)
    configure_runtime(spec.seed, recipe.deterministic)
    dataset = load_data(recipe.data, spec.base_dir, spec.seed, recipe.fit.batch_size)
    if not isinstance(dataset, StreamedDataset):
        dataset = apply_test_split(dataset, recipe.data.split, spec.seed)
    train, validation = RunReader(spec.job_dir).training_rows()
    split = Split(spec.name, np.arange(len(dataset.y_train)) if train is None else np.asarray(train),
                  None if validation is None else np.asarray(validation))
    job_dir = RunDir(spec.job_dir)
    tracker = Tracker.from_output_root(spec.output_root, spec.experiment, spec.tracking_uri,
                                       on_outage=offline_notice(job_dir, reporter.warn))
    child = tracker.reopen_run(spec.run_id) if spec.kind == "fold" else None
    parent = TrackedRun(tracker, spec.parent_run_id) if spec.kind == "refit" and spec.parent_run_id else None
    ctx = JobContext(recipe, dataset, job_dir, child, reporter, spec.base_dir, spec.resume)
    return run_fold_job(ctx, split, spec, parent=parent)

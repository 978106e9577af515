"""K-fold's jobs seen from the parent: one spec per fold not yet finished, handed to the run's
executor, and the results read back from the fold directories that say FINISHED — never from
live objects, and never from a half-written fold.

Every fold's MLflow child run is created here, before any job starts (many processes
creating runs on one SQLite store lock each other), and marked SCHEDULED until its job
starts it. The default executor (:data:`SERIAL`) runs the specs in this process one after
another, reusing the loaded data and the preflight's fitted pipeline; an error stops it at
once, as it always did. Other executors (``dlrun.execution``) let every job finish and
report which failed, and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from dlrun.data.splits import Split
from dlrun.errors import DlrunError
from dlrun.track.rundir import RunDir
from dlrun.track.runs import RunReader
from dlrun.training.fold_job import run_fold_job
from dlrun.training.job import JobResult
from dlrun.training.jobspec import JobOutcome, JobSpec


class FoldsFailed(DlrunError):
    """Some folds failed (their worker crashed, or training failed) while the others finished."""


class InProcess:
    """The serial executor: each spec in this process, one after another (errors propagate)."""

    name = "serial"
    workers = 1

    def describe(self) -> dict:
        return {"executor": self.name, "workers": self.workers}

    def start(self) -> "InProcess":
        return self

    def close(self) -> None:
        pass

    def run(self, specs: list[JobSpec], in_process: Callable[[JobSpec], object], reporter=None) -> list[JobOutcome]:
        outcomes = []
        for spec in specs:
            in_process(spec)
            outcomes.append(JobOutcome(spec.name, spec.job_dir, "FINISHED"))
        return outcomes


SERIAL = InProcess()


def leave_gpus_to_jobs() -> None:
    """A parent whose jobs run in other processes only tries the model on a few rows: it does
    so on the CPU, so that its TensorFlow takes no GPU memory from the workers."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # TensorFlow already set up its devices: leave them
        pass


def executor_of(ctx):
    return getattr(ctx, "executor", None) or SERIAL


def record_executor(ctx) -> None:
    """Where the work runs goes in the run (tags, ``run.json``), never in the recipe's identity."""
    where = executor_of(ctx).describe()
    ctx.run_dir.write_status("RUNNING", executor=where)
    if ctx.tracked is not None:
        ctx.tracked.set_tags({"dlrun.executor": where["executor"], "dlrun.workers": str(where["workers"])})


def run_folds(ctx) -> list[JobResult]:
    """Every fold's result, in split order: folds a resumed run finished are kept, the others run."""
    specs, common = [], _common(ctx)
    for split in ctx.splits:
        reader = RunReader(ctx.run_dir.path / "folds" / split.name)
        if ctx.resume and finished_result(reader) is not None:
            ctx.reporter.note(f"{split.name}: finished before the interruption, kept")
            continue
        specs.append(_fold_spec(ctx, split.name, reader, common))
    outcomes = run_specs(ctx, specs)
    return collect(ctx, [RunReader(ctx.run_dir.path / "folds" / s.name) for s in ctx.splits], outcomes)


def run_refit(ctx, epochs: int) -> JobResult:
    """The refit on all training data for ``epochs``, as a job of its own (``final/``)."""
    reader = RunReader(ctx.run_dir.path / "final")
    kept = finished_result(reader) if ctx.resume else None
    if kept is not None:
        return kept
    ctx.reporter.note(f"refit on all {len(ctx.dataset.y_train)} training samples for {epochs} epochs")
    spec = JobSpec(kind="refit", name="final", job_dir=str(reader.path), epochs=epochs, evaluate_test=True,
                   resume=ctx.resume, **_common(ctx))
    spec.write()
    return collect(ctx, [reader], run_specs(ctx, [spec]))[0]


def run_specs(ctx, specs: list[JobSpec]) -> list[JobOutcome]:
    """The specs through the run's executor; jobs that never started are ended in MLflow."""
    if not specs:
        return []
    try:
        return executor_of(ctx).run(specs, lambda spec: _run_here(ctx, spec), reporter=ctx.reporter)
    except BaseException as exc:
        why = "interrupted before it started" if isinstance(exc, KeyboardInterrupt) else "not run: another job failed"
        _end_unstarted(ctx, specs, why)
        raise


def finished_result(reader: RunReader) -> JobResult | None:
    """A job's results, if its ``run.json`` says FINISHED and its files read back."""
    try:
        if reader.state != "FINISHED":
            return None
        history = reader.history()
        return JobResult(reader.path.name, history, reader.metrics(), len(next(iter(history.values()), [])))
    except (OSError, ValueError):
        return None


def collect(ctx, readers: list[RunReader], outcomes: list[JobOutcome]) -> list[JobResult]:
    """The finished jobs' results; a job that did not finish is marked FAILED with its cause
    (where it could not say so itself), and the run fails naming every such job."""
    seen = {o.name: o for o in outcomes}
    results, failed = [], []
    for reader in readers:
        result = finished_result(reader)
        if result is None:
            failed.append(f"{reader.path.name} ({_record_failure(ctx, reader, seen.get(reader.path.name))})")
        else:
            results.append(result)
    if failed:
        raise FoldsFailed(f"{len(failed)} of {len(readers)} jobs did not finish: {'; '.join(failed)}. The "
                          f"finished ones are kept in {ctx.run_dir.path}: dlrun train --resume {ctx.run_dir.path} "
                          f"runs only the others")
    return results


def _record_failure(ctx, reader: RunReader, outcome: JobOutcome | None) -> str:
    status = reader.status
    if status.get("status") in ("FAILED", "KILLED"):  # the job said how it ended
        return status.get("error") or status["status"]
    cause = (outcome.error if outcome is not None else None) or "the job ended without recording a result"
    job_dir = RunDir(reader.path)
    job_dir.write_status("FAILED", error=cause)
    run_id = status.get("mlflow_run_id") or _spec_run_id(reader.path)
    if ctx.tracker is not None and run_id:
        from dlrun.track.mlflow_store import TrackedRun

        TrackedRun(ctx.tracker, run_id).end("FAILED", cause)
    return cause


def _run_here(ctx, spec: JobSpec) -> JobResult:
    """A spec in the parent's process, with the data it loaded and the preflight's pipeline."""
    if spec.kind == "fold":
        split = next(s for s in ctx.splits if s.name == spec.name)
        child = ctx.tracker.reopen_run(spec.run_id) if ctx.tracker is not None else None
        parent = None
    else:
        split = Split("final", np.arange(len(ctx.dataset.y_train)), None)
        child, parent = None, ctx.tracked
    job_ctx = ctx.job_context(RunDir(spec.job_dir), child)
    return run_fold_job(job_ctx, split, spec, pipeline=ctx.pipeline_for(split), checked=ctx.checked, parent=parent)


def _common(ctx) -> dict:
    """What every job of the run shares: recipe, paths, store, parent run."""
    status = ctx.run_dir.read_status()
    tracker = ctx.tracker
    output_root = Path(tracker.artifact_root).parent if tracker is not None else ctx.run_dir.path.parents[2]
    return {
        "recipe": RunReader(ctx.run_dir.path).resolved,
        "base_dir": None if ctx.base_dir is None else str(Path(ctx.base_dir).absolute()),
        "recipe_file": status.get("recipe_file"),
        "overrides": list(status.get("overrides") or []),
        "output_root": str(output_root),
        "tracking_uri": None if tracker is None else tracker.uri,
        "experiment": tracker.experiment if tracker is not None else ctx.run_dir.path.parent.name,
        "seed": ctx.recipe.seed,
        "parent_run_id": getattr(ctx.tracked, "run_id", None),
    }


def _fold_spec(ctx, name: str, reader: RunReader, common: dict) -> JobSpec:
    """The fold's spec, written to its folder, with its MLflow child run (kept from an
    earlier attempt of a resumed run, else created) marked SCHEDULED."""
    earlier = (reader.run_id or _spec_run_id(reader.path)) if ctx.resume else None
    run_id = None
    if ctx.tracker is not None:
        child = ctx.tracker.reopen_run(earlier) if earlier else ctx.tracker.start_run(
            run_name=f"{ctx.recipe.name}-{name}", tags={"dlrun.fold": name}, parent=ctx.tracked)
        run_id = child.run_id
        if run_id is not None:
            child._call("update_run", run_id, status="SCHEDULED")
    spec = JobSpec(kind="fold", name=name, job_dir=str(reader.path), run_id=run_id, resume=ctx.resume, **common)
    spec.write()
    return spec


def _spec_run_id(job_dir: Path) -> str | None:
    """The MLflow run a job's spec names (a job that never started has no ``run.json`` yet)."""
    try:
        return JobSpec.read(job_dir).run_id
    except DlrunError:
        return None


def _end_unstarted(ctx, specs: list[JobSpec], why: str) -> None:
    from dlrun.track.mlflow_store import TrackedRun

    for spec in specs:
        if ctx.tracker is not None and spec.run_id and not (Path(spec.job_dir) / "run.json").exists():
            TrackedRun(ctx.tracker, spec.run_id).end("KILLED", why)

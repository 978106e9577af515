"""Run a loaded recipe under its protocol: data → run directory + MLflow run → protocol → summary.

Bad input (data, splits, transforms, model shape) is found before any run directory or
MLflow run is created; a later failure or interruption marks the run FAILED or KILLED in
MLflow and in ``run.json``, and the run directory keeps what was done.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlrun.recipe.loading import LoadedRecipe
from dlrun.tf_runtime import configure_runtime


@dataclass
class RunSummary:
    run_id: str | None
    run_dir: str
    experiment: str
    recipe: str
    protocol: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    tracking_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM during a run; the run is marked KILLED."""

    def __init__(self, summary: RunSummary, signal_name: str = "SIGINT"):
        super().__init__(f"interrupted ({signal_name}); run {summary.run_id} marked KILLED in {summary.run_dir}")
        self.summary = summary
        self.signal_name = signal_name


def run_recipe(
    loaded: LoadedRecipe,
    *,
    output_root: Path,
    tracking_uri: str | None = None,
    reporter=None,
    command: list[str] | None = None,
    resume=None,
    tags: dict[str, str] | None = None,
    executor=None,
) -> RunSummary:
    """Run ``loaded``; with ``resume`` (a :class:`dlrun.training.resume.ResumeTarget`) continue
    that run in its own directory and MLflow run, from its jobs' checkpoints. ``tags`` go on a new
    MLflow run (``mlflow.parentRunId`` nests it: ``dlrun tune``'s trials). ``executor`` runs
    K-fold's jobs (``dlrun.execution``; default: in this process, one after another)."""
    from dlrun.data.dataset import StreamedDataset
    from dlrun.data.sources import load_data
    from dlrun.data.splits import apply_test_split
    from dlrun.report import Reporter
    from dlrun.track.rundir import RunDir
    from dlrun.training.job import preflight
    from dlrun.training.protocols import PROTOCOLS, ProtocolContext, check_kfold_monitor
    from dlrun.training.resume import locked_run

    recipe = loaded.recipe
    reporter = reporter or Reporter()
    jobs_elsewhere = executor is not None and recipe.evaluation.protocol == "kfold"
    if jobs_elsewhere:
        executor.start()  # its workers start (import TensorFlow) while this process prepares the run
    configure_runtime(recipe.seed, recipe.deterministic)  # TensorFlow imported quietly, everything seeded
    if jobs_elsewhere:
        from dlrun.training.kfold_jobs import leave_gpus_to_jobs

        leave_gpus_to_jobs()
    output_root = Path(output_root).resolve()
    experiment = recipe.tracking.experiment or recipe.name

    # Input errors (data, splits, transforms, model shape) surface here, before anything is created.
    dataset = load_data(recipe.data, loaded.base_dir, recipe.seed, recipe.fit.batch_size)
    if not isinstance(dataset, StreamedDataset):
        dataset = apply_test_split(dataset, recipe.data.split, recipe.seed)
    protocol = PROTOCOLS[recipe.evaluation.protocol]
    splits = protocol.plan(recipe, dataset)
    first_pipeline = None
    if recipe.model is not None and recipe.evaluation.protocol != "baseline":
        first_pipeline, logged = preflight(recipe, dataset, splits[0], loaded.base_dir)
        if recipe.evaluation.protocol == "kfold":
            check_kfold_monitor(recipe, logged)

    check_free_space(output_root)
    if resume is None:
        run_dir = RunDir.create(output_root, experiment, recipe.tracking.run_name)
    else:
        run_dir = RunDir(resume.run_dir)
    summary = RunSummary(None, str(run_dir.path), experiment, recipe.name, recipe.evaluation.protocol, "RUNNING")
    with locked_run(run_dir.path):  # while it runs, a --resume of it from elsewhere is refused
        tracker = tracked = None
        try:
            if resume is None:
                _describe_run(run_dir, loaded, dataset, command)
                tracker, tracked = _start_tracking(loaded, output_root, experiment, tracking_uri, run_dir, reporter.warn,
                                                   tags)
            else:
                _describe_resume(run_dir, loaded, resume, command)
                tracker, tracked = _resume_tracking(resume, output_root, experiment, tracking_uri, run_dir, reporter.warn)
            summary.run_id, summary.tracking_uri = tracked.run_id, tracker.uri
            run_dir.write_status("RUNNING", mlflow_run_id=summary.run_id, tracking_uri=summary.tracking_uri,
                                 seed=recipe.seed, recipe_file=str(loaded.path), overrides=loaded.overrides)
            reporter.run_started({"protocol": summary.protocol, "recipe": recipe.name, "run_dir": summary.run_dir})
            ctx = ProtocolContext(recipe, dataset, splits, run_dir, tracker, tracked, reporter, first_pipeline,
                                  loaded.base_dir, resume is not None, executor)
            summary.metrics = protocol.run(ctx)
            run_dir.write_json("summary.json", summary.metrics)
            _finish(summary, run_dir, tracked, "FINISHED", None)
        except KeyboardInterrupt as exc:
            _finish(summary, run_dir, tracked, "KILLED", f"interrupted ({_signal_name(exc)})")
            reporter.close()
            raise RunInterrupted(summary, _signal_name(exc)) from None
        except BaseException as exc:
            # An exception may say how its run ends (a pruned tuning trial: KILLED, not a crash).
            _finish(summary, run_dir, tracked, getattr(exc, "run_status", "FAILED"), f"{type(exc).__name__}: {exc}")
            reporter.close()
            exc.run_summary = summary  # lets the CLI's --json say which run failed
            raise
    reporter.run_finished(summary.to_dict())
    return summary


def _describe_run(run_dir, loaded: LoadedRecipe, dataset, command: list[str] | None) -> None:
    """What makes the run directory self-describing before any training."""
    from dlrun.track.rundir import environment_info

    run_dir.write_yaml("recipe.yaml", loaded.resolved)
    run_dir.write_text("command.txt", " ".join(command or sys.argv) + "\n")
    run_dir.write_json("environment.json", {**environment_info(), "devices": _devices()})
    run_dir.write_json("data.json", dataset.info)


MIN_FREE_MB = 200  # a run needs room for its checkpoints, model and logs


def check_free_space(output_root: Path) -> None:
    """A nearly full disk is reported before training starts, not as a failure hours later."""
    import shutil

    from dlrun.errors import UsageError

    folder = Path(output_root)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the output root may not exist yet
    need = int(os.environ.get("DLRUN_MIN_FREE_MB", MIN_FREE_MB))
    free = shutil.disk_usage(folder).free // 2**20
    if free < need:
        raise UsageError(f"only {free} MB free on the disk of the output folder '{output_root}' (dlrun wants at "
                         f"least {need} MB: DLRUN_MIN_FREE_MB); free some space or choose another --output-root")


def _describe_resume(run_dir, loaded: LoadedRecipe, resume, command: list[str] | None) -> None:
    """Append the resuming command; a recipe changed under --force replaces the saved one (kept aside)."""
    with open(run_dir.file("command.txt"), "a", encoding="utf-8") as fh:
        fh.write(" ".join(command or sys.argv) + "\n")
    if resume.changed:
        run_dir.file("recipe.yaml").replace(run_dir.file(f"recipe.before-resume-{len(_resumes(run_dir)) + 1}.yaml"))
        run_dir.write_yaml("recipe.yaml", loaded.resolved)
    run_dir.write_status("RUNNING", resumed=[*_resumes(run_dir), resume.status.get("status")])


def _resumes(run_dir) -> list:
    return run_dir.read_status().get("resumed", [])


def _resume_tracking(resume, output_root: Path, experiment: str, tracking_uri, run_dir, warn=None):
    """The run's own MLflow run, RUNNING again; its store unless another is given."""
    from dlrun.track.mlflow_store import Tracker, offline_notice

    uri = tracking_uri or resume.status.get("tracking_uri")
    tracker = Tracker.from_output_root(output_root, experiment, uri, on_outage=offline_notice(run_dir, warn))
    return tracker, tracker.reopen_run(resume.status.get("mlflow_run_id"))


def _start_tracking(loaded: LoadedRecipe, output_root: Path, experiment: str, tracking_uri, run_dir, warn=None,
                    extra_tags=None):
    from dlrun.track.mlflow_store import Tracker, flatten_params, offline_notice

    recipe = loaded.recipe
    # An unreachable store never stops training: the tracker goes offline, says so once through
    # ``warn`` (heard even under --quiet) and writes tracking.json; ``dlrun sync <run dir>``
    # uploads the run later.
    tracker = Tracker.from_output_root(output_root, experiment, tracking_uri, on_outage=offline_notice(run_dir, warn))
    tags = {
        "dlrun.recipe": recipe.name,
        "dlrun.recipe_file": str(loaded.path),
        "dlrun.protocol": recipe.evaluation.protocol,
        "dlrun.run_dir": str(run_dir.path),
        **recipe.tracking.tags,
        **(extra_tags or {}),
    }
    # MLflow would pick a random name from Python's random module, which the run seed fixes.
    run_name = recipe.tracking.run_name or f"{recipe.name}-{run_dir.path.name.rsplit('-', 1)[-1]}"
    tracked = tracker.start_run(run_name, tags)
    try:
        tracked.log_params(flatten_params(loaded.resolved))
    except BaseException as exc:
        tracked.end("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    return tracker, tracked


def _devices() -> list[str]:
    import tensorflow as tf

    return [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]


def _signal_name(exc: BaseException) -> str:
    return getattr(exc, "signal_name", "SIGINT")


def _finish(summary: RunSummary, run_dir, tracked, status: str, error: str | None) -> None:
    summary.status = status
    run_dir.write_status(status, error=error, metrics=summary.metrics)
    if tracked is None:
        return
    from dlrun.track.rundir import log_run_files

    try:
        log_run_files(tracked, run_dir.path, skip={"folds"})  # each fold's files are its child run's
    finally:
        tracked.end(status, error)


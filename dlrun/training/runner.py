"""Run a loaded recipe under its protocol: data → run directory + MLflow run → protocol → summary.

Bad input (data, splits, transforms, model shape, labels, a tracking store that cannot work)
is found before any run directory or MLflow run is created; a later failure or interruption
marks the run FAILED or KILLED in MLflow and in ``run.json`` — one state in both, however
signals arrive while it is recorded — and the run directory keeps what was done.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlrun.recipe.loading import LoadedRecipe
from dlrun.tf_runtime import configure_runtime, freeze_loaded_objects


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
    """Ctrl-C or SIGTERM stopped a run, or came while it was being recorded. ``summary.status``
    is its one final state (KILLED; FINISHED when only its recording was interrupted), the
    same in ``run.json`` and MLflow. ``stopping``: the signals that stopped training (none when
    it had finished); ``late``: those that came while the run was being recorded;
    ``signal_name``: the first of all (it sets the exit code)."""

    def __init__(self, summary: RunSummary, stopping: list[str], late: list[str] = (), uploaded: bool = True,
                 resume_with: str | None = None):
        self.summary = summary
        self.signals = [*stopping, *late] or ["SIGINT"]
        self.signal_name = self.signals[0]
        text = _interruption_text(summary, list(stopping), list(late), uploaded)
        if resume_with and summary.status == "KILLED":
            text += f"; {resume_with}"
        super().__init__(text)


def _run_words(summary: RunSummary) -> str:
    return f"run {summary.run_id}" if summary.run_id else "the run (kept offline)"


def resume_hint(command: list[str] | None, run_dir: str) -> str:
    """How the user continues a run that was stopped: the command that resumes it."""
    if command and len(command) > 2 and command[1] == "tune":  # a trial: the search resumes, not the trial
        return f"run dlrun tune {command[2]} again to resume the search"
    return f"resume it with: dlrun train --resume {run_dir}"


def _interruption_text(summary: RunSummary, stopping: list[str], late: list[str], uploaded: bool) -> str:
    run = _run_words(summary)
    recording = f"{', then '.join(late)} while the run was being recorded" if late else ""
    if stopping:
        text = f"interrupted ({', then '.join(stopping)}){f', then {recording}' if late else ''}; {run} marked " \
               f"{summary.status} in {summary.run_dir}"
    else:
        text = f"{recording} (it had finished training); {run} is {summary.status} in {summary.run_dir}"
    if not uploaded:
        text += f"; the upload of its files to MLflow was cut short: dlrun sync {summary.run_dir} uploads the rest"
    return text


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
    from dlrun.report import Reporter
    from dlrun.track.mlflow_store import offline_notice
    from dlrun.track.rundir import RunDir
    from dlrun.training.resume import locked_run, recheck_resume

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

    # Input errors (data, splits, transforms, model shape, labels, a task's network and images,
    # the tracking store) surface here, before anything is created.
    if recipe.task is not None:  # a task that is not fit: the task is the protocol, its inputs the data
        from dlrun.training.tasks import prepare_task

        protocol = prepare_task(loaded, output_root, tracking_uri)
        dataset, splits, tried = _TaskInputs(protocol.info), [], None
    else:
        protocol, dataset, splits, tried = _prepare_training(loaded, reporter)
    check_free_space(output_root)
    tracker = _open_store(output_root, experiment, tracking_uri, resume)
    freeze_loaded_objects(after="mlflow")  # its modules, imported by now, too

    if resume is None:
        run_dir = RunDir.create(output_root, experiment, recipe.tracking.run_name)
    else:
        run_dir = RunDir(resume.run_dir)
    summary = RunSummary(None, str(run_dir.path), experiment, recipe.name, procedure(recipe), "RUNNING")
    try:
        with locked_run(run_dir.path):  # while it runs, a --resume of it from elsewhere is refused
            if resume is not None:
                recheck_resume(resume)  # another process may have run it meanwhile
            tracker.notify_outage(offline_notice(run_dir, reporter.warn))
            run = _Run(loaded, summary, run_dir, tracker, reporter, command, resume, tags, executor)
            run.execute(protocol, dataset, splits, tried)
    except KeyboardInterrupt:  # in the instant before the run began: leave no empty run directory
        if resume is None and not run_dir.file("run.json").exists():
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise
    reporter.run_finished(summary.to_dict())
    return summary


@dataclass
class _TaskInputs:
    info: dict  # what data.json records of a task: its network and images


def procedure(recipe) -> str:
    """What a run does: its task (deep_dream, explain…) or its evaluation protocol."""
    return recipe.task.kind if recipe.task is not None else recipe.evaluation.protocol


def _prepare_training(loaded: LoadedRecipe, reporter):
    """The data, its splits, and the first job tried on a few rows: ``(protocol, dataset, splits,
    what the preflight tried)`` (:class:`dlrun.training.job.Preflight`; None for a baseline)."""
    from dlrun.data.dataset import StreamedDataset
    from dlrun.data.sources import load_data
    from dlrun.data.splits import apply_test_split
    from dlrun.training.job import preflight
    from dlrun.training.labels import check_labels_fit
    from dlrun.training.protocols import PROTOCOLS, check_kfold_monitor
    from dlrun.training.split_checks import check_parts

    recipe = loaded.recipe
    dataset = load_data(recipe.data, loaded.base_dir, recipe.seed, recipe.fit.batch_size)
    if not isinstance(dataset, StreamedDataset):
        dataset = apply_test_split(dataset, recipe.data.split, recipe.seed)
    protocol = PROTOCOLS[recipe.evaluation.protocol]
    splits = protocol.plan(recipe, dataset)
    for warning in check_parts(recipe, dataset, splits):  # one-class parts refused, nothing held out said
        reporter.warn(warning)
    tried = None
    if recipe.model is not None and recipe.evaluation.protocol != "baseline":
        tried = preflight(recipe, dataset, splits[0], loaded.base_dir)
        if recipe.evaluation.protocol == "kfold":
            check_kfold_monitor(recipe, tried.logged)
        check_labels_fit(recipe, dataset, splits, tried.pipeline, tried.output_units)
    return protocol, dataset, splits, tried


def _open_store(output_root: Path, experiment: str, tracking_uri: str | None, resume):
    """The run's tracking store with its experiment, opened before anything is created: a store
    that can never work is a usage error; an unreachable one gives an offline tracker."""
    from dlrun.track._store_config import recorded_origin
    from dlrun.track.mlflow_store import Tracker

    def later(info: dict) -> None:
        """Said once the run directory exists (Tracker.notify_outage), where tracking.json goes."""

    recorded = resume.status.get("tracking_uri") if resume is not None else None
    if recorded and not tracking_uri:
        return Tracker.from_output_root(output_root, experiment, recorded, on_outage=later,
                                        origin=recorded_origin(resume.run_dir))
    return Tracker.from_output_root(output_root, experiment, tracking_uri, on_outage=later)


class _Run:
    """One run from its directory to its one final state, however signals arrive."""

    def __init__(self, loaded: LoadedRecipe, summary: RunSummary, run_dir, tracker, reporter, command, resume,
                 tags, executor=None):
        self.loaded, self.summary, self.run_dir, self.tracker = loaded, summary, run_dir, tracker
        self.reporter, self.command, self.resume, self.tags = reporter, command, resume, tags
        self.executor = executor
        self.tracked = None

    def execute(self, protocol, dataset, splits, tried) -> None:
        """Run the protocol, then record the outcome; raises what ended the run (with the
        summary), or :class:`RunInterrupted` when a signal came while it was being recorded."""
        from dlrun.training import interrupts

        summary = self.summary
        with interrupts.live_run(lambda: f"{_run_words(summary)} {summary.status} in {summary.run_dir}"):
            try:
                try:
                    self._train(protocol, dataset, splits, tried)
                    outcome = ("FINISHED", None, None)
                except KeyboardInterrupt as exc:
                    outcome = ("KILLED", _interrupted(exc), exc)
                except BaseException as exc:
                    # An exception may say how its run ends (a pruned tuning trial: KILLED, not a crash).
                    outcome = (getattr(exc, "run_status", "FAILED"), f"{type(exc).__name__}: {exc}", exc)
                interrupts.begin_ending()
            except KeyboardInterrupt as exc:  # a signal in the instant between the outcome and its recording
                outcome = ("KILLED", _interrupted(exc), exc)
            status, error, exc = outcome
            keep = self.loaded.recipe.fit.keep_checkpoint
            uploaded = _finish(summary, self.run_dir, self.tracked, status, error, keep)
            late = interrupts.ending_signals()
        if exc is not None or late:
            self.reporter.close()
        if isinstance(exc, KeyboardInterrupt):
            raise RunInterrupted(summary, _signals(exc), late, uploaded,
                                 resume_hint(self.command, summary.run_dir)) from None
        if exc is not None:
            exc.run_summary = summary  # lets the CLI's --json say which run failed
            exc.late_signals, exc.uploaded = late, uploaded  # the CLI says what a late signal cut short
            raise exc
        if late:
            raise RunInterrupted(summary, [], late, uploaded)

    def _train(self, protocol, dataset, splits, tried) -> None:
        from dlrun.training.protocols import ProtocolContext

        loaded, summary, run_dir, recipe = self.loaded, self.summary, self.run_dir, self.loaded.recipe
        if self.resume is None:
            _describe_run(run_dir, loaded, dataset, self.command)
            self.tracked = _start_tracking(loaded, self.tracker, run_dir, self.tags)
        else:
            _describe_resume(run_dir, loaded, self.resume, self.command)
            self.tracked = self.tracker.reopen_run(self.resume.status.get("mlflow_run_id"))
        summary.run_id, summary.tracking_uri = self.tracked.run_id, self.tracker.uri
        run_dir.write_status("RUNNING", mlflow_run_id=summary.run_id, tracking_uri=summary.tracking_uri,
                             seed=recipe.seed, recipe_file=str(loaded.path), overrides=loaded.overrides)
        self.reporter.run_started({"protocol": summary.protocol, "recipe": recipe.name, "run_dir": summary.run_dir})
        ctx = ProtocolContext(recipe, dataset, splits, run_dir, self.tracker, self.tracked, self.reporter,
                              tried, loaded.base_dir, self.resume is not None, self.executor)
        summary.metrics = protocol.run(ctx)
        run_dir.write_json("summary.json", summary.metrics)


def _describe_run(run_dir, loaded: LoadedRecipe, dataset, command: list[str] | None) -> None:
    """What makes the run directory self-describing before any training."""
    from dlrun.track.rundir import environment_info

    run_dir.write_yaml("recipe.yaml", loaded.resolved)
    run_dir.write_text("command.txt", " ".join(command or sys.argv) + "\n")
    # A job adds what its model resolved ("compute": precision, XLA, batches per call, GPUs).
    run_dir.write_json("environment.json", {**environment_info(), "devices": _devices(),
                                            "precision": loaded.recipe.fit.precision})
    run_dir.write_json("data.json", dataset.info)
    run_dir.write_json("inputs.json", loaded.inputs())  # every file the recipe reads (dlrun.recipe.reads)


MIN_FREE_MB = 200  # a run needs room for its checkpoints, model and logs


def check_free_space(output_root: Path) -> None:
    """A nearly full disk is reported before training starts, not as a failure hours later."""
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


def _start_tracking(loaded: LoadedRecipe, tracker, run_dir, extra_tags=None):
    """A new MLflow run for ``run_dir`` with the recipe as params. An unreachable store never
    stops training: the tracker goes offline, says so once (heard even under --quiet) and
    writes tracking.json; ``dlrun sync <run dir>`` uploads the run later."""
    from dlrun.track.mlflow_store import flatten_params

    recipe = loaded.recipe
    tags = {
        "dlrun.recipe": recipe.name,
        "dlrun.recipe_file": str(loaded.path),
        "dlrun.protocol": procedure(recipe),
        "dlrun.run_dir": str(run_dir.path),
        "dlrun.precision": recipe.fit.precision,
        "dlrun.devices": ",".join(_devices()),
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
    return tracked


def _devices() -> list[str]:
    import tensorflow as tf

    return [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]


def _signals(exc: BaseException) -> list[str]:
    """The signals that stopped training (Python's own Ctrl-C handler: SIGINT)."""
    return list(getattr(exc, "signals", ["SIGINT"]))


def _interrupted(exc: BaseException) -> str:
    return f"interrupted ({', then '.join(_signals(exc))})"


def _finish(summary: RunSummary, run_dir, tracked, status: str, error: str | None,
            keep_checkpoint: bool = False) -> bool:
    """Record the run's final state in run.json and MLflow; the upload of its files in between
    is the one step a signal may cut short. True when the files were all uploaded. A FINISHED
    run cannot be resumed, so its jobs' checkpoints go (unless ``fit.keep_checkpoint``); a run that
    failed or was interrupted keeps them, its finished folds' too, for ``--resume``."""
    from dlrun.track.rundir import log_run_files, remove_checkpoints
    from dlrun.training.interrupts import cut_short, ending_signals

    summary.status = status
    uploaded = True
    try:
        run_dir.write_status(status, error=error, metrics=summary.metrics)
        if status == "FINISHED" and not keep_checkpoint:
            remove_checkpoints(run_dir.path)
        if tracked is None:
            return True
        uploaded = cut_short(lambda: log_run_files(tracked, run_dir.path, skip={"folds"}))  # folds: their runs'
        if not uploaded:
            note = f"cut short by {', then '.join(ending_signals())}: dlrun sync {run_dir.path} uploads the rest"
            run_dir.write_status(status, upload=note)
            tracked.set_tags({"dlrun.upload": note})
    finally:
        if tracked is not None:
            tracked.end(status, error)
    return uploaded

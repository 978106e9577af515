"""Trials on a shared study, from one process or from N workers (``dlrun tune --workers N``).

Optuna stays the sampler and the pruner: each worker runs ``study.optimize`` on the study in
its storage (SQLite under ``<output-root>/tuning/`` on one host, an RDB URL across hosts).
The budget is exact: checking "may another trial start?" and creating that trial happen under
one file lock shared by the workers (:class:`BudgetGate`), so N workers stop at the total and
no trial is started twice. Every trial is a run nested under the parent MLflow run, which the
parent creates before any worker starts.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from dlrun.tuning.study import counted, fail_running


def budget_used(study) -> int:
    """Trials that count against the budget, and those running now (another worker's)."""
    running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    return len(counted(study)) + len(running)


class BudgetGate:
    """Between a trial's end and the next one's start a worker holds the lock: the budget
    check (in Optuna's trial callback) and the next ``study.ask()`` (inside ``optimize``) are
    one step for all workers. The objective releases it as soon as its trial exists."""

    def __init__(self, lock_path: Path, total: int, deadline: float | None):
        Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        self.total, self.deadline, self.held = total, deadline, False

    def _full(self, study) -> bool:
        return (self.deadline is not None and time.time() >= self.deadline) or budget_used(study) >= self.total

    def _acquire(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held = False

    def may_start(self, study) -> bool:
        """Before ``optimize``: whether a first trial may start (the lock then stays held)."""
        self._acquire()
        if self._full(study):
            self.release()
            return False
        return True

    def wrap(self, objective):
        def gated(trial):
            self.release()  # the trial exists: other workers may check and start theirs
            return objective(trial)

        return gated

    def after_trial(self, study, trial) -> None:
        self._acquire()
        if self._full(study):
            study.stop()
            self.release()

    def close(self) -> None:
        self.release()
        os.close(self.fd)


def run_trials(study, objective, *, total: int, deadline: float | None, catch: tuple, lock_path: Path) -> None:
    """Run trials of ``objective`` on ``study`` until it holds ``total`` that count, or ``deadline``."""
    gate = BudgetGate(lock_path, total, deadline)
    try:
        if gate.may_start(study):
            study.optimize(gate.wrap(objective), n_trials=None, catch=catch, callbacks=[gate.after_trial])
    finally:
        gate.close()


def lock_path(output_root: Path, study_name: str) -> Path:
    return Path(output_root) / "tuning" / f".{study_name}.lock"


def run_tune_worker(spec, reporter) -> None:
    """A ``tune-worker`` job: trials of the spec's study until its budget or deadline."""
    from dlrun.recipe.loading import load_recipe
    from dlrun.recipe.permissions import granted
    from dlrun.tf_runtime import configure_runtime
    from dlrun.track.mlflow_store import Tracker
    from dlrun.track.rundir import RunDir
    from dlrun.tuning.study import load_shared_study, make_sampler
    from dlrun.tuning.trial import Objective, trial_failures

    job_dir, options = RunDir(spec.job_dir), spec.options
    job_dir.write_status("RUNNING", job=spec.kind, devices=spec.devices or None, pid=os.getpid())
    try:
        with granted(network=options.get("allow_network", False), read=options.get("allow_read", ())):
            loaded = load_recipe(spec.recipe_file, spec.overrides)  # what the user allowed the parent, here too
        search = loaded.recipe.search
        configure_runtime(spec.seed, loaded.recipe.deterministic)
        study = load_shared_study(options["study"], options["storage"], search)
        study.sampler = make_sampler(search, spec.seed, len(study.trials) + 7919 * options["worker"])
        tracker = Tracker.from_output_root(spec.output_root, spec.experiment, spec.tracking_uri)
        objective = Objective(loaded, search, output_root=Path(spec.output_root), tracking_uri=spec.tracking_uri,
                              reporter=reporter, parent_run_id=spec.parent_run_id, parent_tracker=tracker)
        run_trials(study, objective, total=options["total"], deadline=options.get("deadline"),
                   catch=trial_failures(), lock_path=lock_path(Path(spec.output_root), options["study"]))
    except KeyboardInterrupt:
        job_dir.write_status("KILLED", error="interrupted")
        raise
    except BaseException as exc:
        job_dir.write_status("FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    job_dir.write_status("FINISHED", error=None)


def _grants() -> dict:
    """What the user allowed this command (--allow-read, --allow-network), for workers to allow too."""
    from dlrun.recipe.permissions import current

    grants = current()
    return {"allow_read": [str(p) for p in grants.read], "allow_network": grants.network}


def run_parallel(executor, loaded, opened, *, output_root: Path, tracking_uri, parent, total: int,
                 deadline: float | None, reporter) -> None:
    """The study's trials on ``executor``: one tune-worker job per worker, then the trials a
    dead worker left RUNNING failed with its cause, and failed workers reported."""
    from dlrun.training.jobspec import JobSpec

    # Ray and Slurm schedule as many as their resources allow: one worker per trial at most.
    workers = executor.workers if isinstance(executor.workers, int) else max(1, total - len(counted(opened.study)))
    recipe = loaded.recipe
    common = {"recipe": loaded.resolved, "base_dir": str(loaded.base_dir), "recipe_file": str(loaded.path),
              "overrides": list(loaded.overrides), "output_root": str(output_root), "tracking_uri": tracking_uri,
              "experiment": recipe.tracking.experiment or recipe.name, "seed": recipe.seed,
              "parent_run_id": parent.run_id}
    folder = Path(output_root) / "tuning" / opened.name
    specs = [JobSpec(kind="tune-worker", name=f"worker_{i + 1}", job_dir=str(folder / f"worker_{i + 1}"),
                     options={"study": opened.name, "storage": opened.storage, "total": total, "deadline": deadline,
                              "worker": i + 1, **_grants()}, **common) for i in range(workers)]
    for spec in specs:
        spec.write()
    reporter.note(f"{workers} workers on study {opened.name} ({executor.describe()['executor']})")
    try:
        outcomes = executor.run(specs, None, reporter=reporter)
    finally:  # every worker has ended: a trial still RUNNING lost its worker (crash, kill)
        fail_running(opened.study, "its worker ended before the trial did")
    for outcome in outcomes:
        if outcome.status != "FINISHED":
            reporter.warn(f"tuning {outcome.name} ended {outcome.status}: {outcome.error or 'see its log'}")

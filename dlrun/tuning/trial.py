"""One trial: the recipe with the trial's values as ``--set`` overrides, trained by the normal
runner as a run nested under the search's parent run, its per-epoch values reported to Optuna.

Pruning goes through the reporter the runner already calls each epoch: a reporter that
forwards to the real one and reports to the trial. A pruned trial raises :class:`PrunedRun`,
which the runner ends as KILLED (its ``run_status``), not as a crash.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import optuna

from dlrun.errors import UsageError, did_you_mean
from dlrun.recipe.search_schema import set_text
from dlrun.report import Reporter


class PrunedRun(optuna.TrialPruned):
    """The trial's values were worse than the median at this epoch (fold): stop its run."""

    run_status = "KILLED"


class TrialReporter(Reporter):
    """Forwards a trial's progress to ``inner`` (job names prefixed ``trial-N/``) and reports the
    objective to Optuna: each epoch's value (hold-out), or the running mean after each fold
    (K-fold: raised when the next fold starts, so no finished fold is marked killed)."""

    def __init__(self, inner: Reporter, trial, metric: str, kfold: bool):
        self.inner, self.trial, self.metric, self.kfold = inner, trial, metric, kfold
        self.prefix = f"trial-{trial.number}"
        self.fold_values: list[float] = []
        self.pruned_after: str | None = None

    def _check(self, value: float, step: int, what: str) -> None:
        if not math.isfinite(value):
            return
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned_after = what
            if not self.kfold:
                raise PrunedRun(f"pruned after {what}: {self.metric}={value:.4g} is worse than the median trial")

    @property
    def wants_batches(self) -> bool:
        return self.inner.wants_batches

    def batch(self, job, epoch, batch, batches, logs):
        self.inner.batch(f"{self.prefix}/{job}", epoch, batch, batches, logs)

    def job_started(self, job, epochs, done=0):
        if self.pruned_after:  # K-fold: the previous fold said stop
            raise PrunedRun(f"pruned after {self.pruned_after}: the mean {self.metric} so far is worse than the "
                            f"median trial")
        self.inner.job_started(f"{self.prefix}/{job}", epochs, done)

    def epoch(self, job, epoch, epochs, logs, seconds):
        self.inner.epoch(f"{self.prefix}/{job}", epoch, epochs, logs, seconds)
        if not self.kfold and self.metric in logs:
            self._check(float(logs[self.metric]), epoch, f"epoch {epoch}")

    def job_finished(self, job, metrics):
        self.inner.job_finished(f"{self.prefix}/{job}", metrics)
        if self.kfold and self.metric in metrics:
            self.fold_values.append(float(metrics[self.metric]))
            mean = sum(self.fold_values) / len(self.fold_values)
            self._check(mean, len(self.fold_values), f"{job} ({len(self.fold_values)} folds)")

    def note(self, text):
        self.inner.note(f"{self.prefix}: {text}")

    def warn(self, text):
        self.inner.warn(f"{self.prefix}: {text}")


def objective_value(metrics: dict, metric: str, kfold: bool) -> float:
    """The trial's score from its run summary: the K-fold mean, else the end-of-run value."""
    for key in ([f"cv_{metric}_mean"] if kfold else []) + [f"final_{metric}", metric]:
        if key in metrics:
            return float(metrics[key])
    raise UsageError(f"search.objective.metric: '{metric}' is not in the trial's results"
                     f"{did_you_mean(metric, list(metrics))} (it has: {', '.join(sorted(metrics))})")


def trial_overrides(loaded, values: dict, kfold_k: int | None) -> list[str]:
    """The ``--set`` list of a trial: the user's, the search section dropped, the values, K-fold."""
    from dlrun.api import kfold_overrides

    sets = [*loaded.overrides, "search=null", *(set_text(k, v) for k, v in values.items())]
    return kfold_overrides(sets, k=kfold_k) if kfold_k else sets


def trial_failures() -> tuple:
    """Errors that fail a trial's values, not the search (other values may train fine)."""
    from dlrun.errors import DataError, ModelBuildError, TrainingDiverged

    return TrainingDiverged, ModelBuildError, DataError


class Objective:
    """Optuna's objective: runs one trial, returns its score."""

    def __init__(self, loaded, spec, *, output_root: Path, tracking_uri, reporter: Reporter, parent_run_id,
                 parent_tracker):
        self.loaded, self.spec = loaded, spec
        self.output_root, self.tracking_uri = output_root, tracking_uri
        self.reporter, self.parent_run_id, self.parent_tracker = reporter, parent_run_id, parent_tracker

    def __call__(self, trial) -> float:
        import keras

        from dlrun.recipe.loading import load_recipe
        from dlrun.training.runner import RunInterrupted, run_recipe
        from dlrun.tuning.study import suggest

        values = suggest(trial, self.spec)
        kfold_k = self.spec.kfold.k if self.spec.kfold else None
        overrides = trial_overrides(self.loaded, values, kfold_k)
        loaded = load_recipe(self.loaded.path, overrides)
        tags = {"dlrun.tune.trial": str(trial.number), "dlrun.tune.study": trial.study.study_name}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        reporter = TrialReporter(self.reporter, trial, self.spec.objective.metric, kfold_k is not None)
        started = time.perf_counter()
        trial.set_user_attr("overrides", overrides)
        try:
            summary = run_recipe(loaded, output_root=self.output_root, tracking_uri=self.tracking_uri,
                                 reporter=reporter, command=["dlrun", "tune", str(self.loaded.path), *overrides],
                                 tags=tags)
        except PrunedRun as exc:
            self._finished(trial, getattr(exc, "run_summary", None), started, "pruned", str(exc))
            raise
        except RunInterrupted as exc:
            trial.set_user_attr("interrupted", True)
            self._finished(trial, exc.summary, started, "interrupted", str(exc))
            raise
        except trial_failures() as exc:  # these values fail; others may not
            trial.set_user_attr("error", str(exc)[:500])
            self._finished(trial, getattr(exc, "run_summary", None), started, "failed", str(exc))
            raise
        finally:
            keras.backend.clear_session()  # a fresh graph per trial keeps memory flat
        value = objective_value(summary.metrics, self.spec.objective.metric, kfold_k is not None)
        self._finished(trial, summary, started, "complete", f"{self.spec.objective.metric}={value:.6g}")
        return value

    def _finished(self, trial, summary, started: float, state: str, text: str) -> None:
        seconds = time.perf_counter() - started
        trial.set_user_attr("seconds", round(seconds, 3))
        if summary is not None:
            trial.set_user_attr("run_id", summary.run_id)
            trial.set_user_attr("run_dir", summary.run_dir)
            if state == "pruned" and summary.run_id and self.parent_tracker is not None:
                from dlrun.track.mlflow_store import TrackedRun

                TrackedRun(self.parent_tracker, summary.run_id).set_tags({"dlrun.tune.pruned": "true"})
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in trial.params.items())
        self.reporter.note(f"trial {trial.number} {state} in {seconds:.1f}s: {text} · {params}")

"""``dlrun tune``: run a recipe's ``search:`` as an Optuna study under one parent MLflow run,
then write the best trial's recipe as a YAML file that ``dlrun train`` runs as is."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlrun.errors import DlrunError, UsageError
from dlrun.recipe.loading import LoadedRecipe


@dataclass
class TuneResult:
    study: str
    storage: str
    resumed: bool
    message: str
    direction: str
    metric: str
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    best_recipe: str | None
    parent_run_id: str | None
    tracking_uri: str | None
    trials_run: int  # by this call
    seconds_per_trial: float | None  # this call's trials, mean wall time
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _search_params(spec) -> dict[str, str]:
    """The search as MLflow params (keys may not hold brackets: ``layers[0]`` → ``layers.0``)."""
    import json

    params = {"search.sampler": spec.sampler, "search.metric": spec.objective.metric,
              "search.direction": spec.objective.resolved_direction, "search.pruning": str(spec.pruning.enabled),
              "search.kfold": str(spec.kfold.k if spec.kfold else None)}
    for key, param in spec.space.items():
        params["search.space." + key.replace("[", ".").replace("]", "")] = json.dumps(param.model_dump())
    return params


def _trial_row(t) -> dict[str, Any]:
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
            "seconds": t.user_attrs.get("seconds"), "run_id": t.user_attrs.get("run_id"),
            "error": t.user_attrs.get("error")}


def _budget(spec, trials: int | None) -> int:
    total = trials or spec.budget.trials
    grid = spec.grid_size() if spec.sampler == "grid" else None
    if total is None:
        total = grid or 10
    return min(total, grid) if grid else total


def tune(
    loaded: LoadedRecipe, *, output_root: Path, tracking_uri: str | None = None, reporter=None,
    trials: int | None = None, minutes: float | None = None, output: Path | None = None, executor=None,
    storage: str | None = None,
) -> TuneResult:
    """Run (or resume) the search of ``loaded``; ``trials`` (the study's total) and ``minutes``
    (this call's limit) override the recipe's budget. ``executor`` (``dlrun.execution``) runs
    the trials in N workers on the shared study (default: here, one after another);
    ``storage`` is the study's (default: SQLite under ``<output_root>/tuning/``)."""
    from dlrun.report import Reporter
    from dlrun.tf_runtime import configure_runtime
    from dlrun.track.mlflow_store import Tracker
    from dlrun.tuning.study import counted, make_sampler, open_study
    from dlrun.tuning.trial import Objective, trial_failures
    from dlrun.tuning.workers import lock_path, run_parallel, run_trials
    from dlrun.training.runner import RunInterrupted

    recipe, spec = loaded.recipe, loaded.recipe.search
    if spec is None:
        raise UsageError(f"{loaded.path}: the recipe has no 'search:' section to tune (see dlrun/recipe/"
                         f"search_schema.py for its form)")
    reporter = reporter or Reporter()
    output_root = Path(output_root).resolve()
    configure_runtime(recipe.seed, recipe.deterministic)
    opened = open_study(loaded, output_root, storage)
    study = opened.study
    reporter.note(opened.message)

    tracker = Tracker.from_output_root(output_root, recipe.tracking.experiment or recipe.name, tracking_uri)
    parent = None
    earlier_parent = study.user_attrs.get("parent_run_id")
    if earlier_parent:
        parent = tracker.reopen_run(earlier_parent)
    if parent is None or parent.run_id is None:
        parent = tracker.start_run(f"{recipe.name}-tune-{opened.name.rsplit('-', 1)[-1]}", {
            "dlrun.recipe": recipe.name, "dlrun.recipe_file": str(loaded.path), "dlrun.tune.study": opened.name,
            "dlrun.tune.storage": opened.storage, "dlrun.protocol": "tune"})
        parent.log_params(_search_params(spec))
        if parent.run_id:
            study.set_user_attr("parent_run_id", parent.run_id)
    where = executor.describe() if executor is not None else {"executor": "serial", "workers": 1}
    parent.set_tags({"dlrun.executor": where["executor"], "dlrun.workers": str(where["workers"])})

    total = _budget(spec, trials)
    done = len(counted(study))
    remaining = max(0, total - done)
    limit = minutes if minutes is not None else spec.budget.minutes
    study.sampler = make_sampler(spec, recipe.seed, len(study.trials))
    before = len(study.trials)
    started = time.perf_counter()
    status = "FINISHED"
    try:
        if remaining == 0:
            reporter.note(f"budget of {total} trials reached: nothing to run (raise --trials to search more)")
        else:
            reporter.note(f"running up to {remaining} trials ({total} in all)"
                          + (f" or {limit:g} minutes" if limit else ""))
            deadline = None if limit is None else time.time() + limit * 60
            if executor is None:
                objective = Objective(loaded, spec, output_root=output_root, tracking_uri=tracking_uri,
                                      reporter=reporter, parent_run_id=parent.run_id, parent_tracker=tracker)
                run_trials(study, objective, total=total, deadline=deadline, catch=trial_failures(),
                           lock_path=lock_path(output_root, opened.name))
            else:
                run_parallel(executor, loaded, opened, output_root=output_root, tracking_uri=tracker.uri,
                             parent=parent, total=total, deadline=deadline, reporter=reporter)
    except BaseException as exc:  # Ctrl-C/SIGTERM (between trials or inside one) ends the parent KILLED
        status = "KILLED" if isinstance(exc, (KeyboardInterrupt, RunInterrupted)) else "FAILED"
        raise
    finally:
        elapsed = time.perf_counter() - started
        ran = len(study.trials) - before
        if status != "FINISHED":
            parent.end(status, "the search stopped; run dlrun tune again to resume it")
    try:
        result = _result(loaded, opened, study, parent, tracker, ran, elapsed / ran if ran else None, output)
    except BaseException as exc:
        parent.end("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    if result.best_recipe:
        parent.log_artifact(result.best_recipe)
    parent.log_metrics({k: v for k, v in {"best_value": result.best_value, "trials": len(study.trials),
                                          "seconds_per_trial": result.seconds_per_trial}.items() if v is not None})
    _write_trials(output_root, recipe.name, result, parent)
    parent.end("FINISHED")
    return result


def _result(loaded, opened, study, parent, tracker, ran: int, per_trial, output) -> TuneResult:
    spec = loaded.recipe.search
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    best_path = None
    if best is not None:
        from dlrun.tuning.best import write_best_recipe

        best_path = str(write_best_recipe(loaded, best, opened.name, spec, output, Path(tracker.artifact_root).parent))
    elif ran:
        raise DlrunError(f"no trial of study {opened.name} completed (see the table of trials with --debug, "
                         f"or the trial runs in MLflow): nothing to write")
    return TuneResult(
        study=opened.name, storage=opened.storage, resumed=opened.resumed, message=opened.message,
        direction=spec.objective.resolved_direction, metric=spec.objective.metric,
        best_value=None if best is None else best.value, best_params={} if best is None else dict(best.params),
        best_trial=None if best is None else best.number, best_recipe=best_path, parent_run_id=parent.run_id,
        tracking_uri=tracker.uri, trials_run=ran, seconds_per_trial=None if per_trial is None else round(per_trial, 3),
        trials=[_trial_row(t) for t in study.trials],
    )


def _write_trials(output_root: Path, name: str, result: TuneResult, parent) -> None:
    import json

    path = output_root / "tuning" / f"{name}-trials.json"
    path.write_text(json.dumps(result.trials, indent=1, default=str), encoding="utf-8")
    parent.log_artifact(path)

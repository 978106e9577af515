"""The Optuna study of a search: where it is stored, what it is called, and whether a re-run
resumes it.

A study's name is the recipe's name plus a hash of the search (space, objective, sampler,
pruning, K-fold) and of the base recipe (the search section left out, ``--set`` applied).
The same search resumes its study; any change starts a new one, and says which study it
leaves behind — old results are never silently reused (KerasTuner's worst complaint).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from dlrun.recipe.loading import LoadedRecipe

FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")


def study_identity(loaded: LoadedRecipe) -> tuple[str, str]:
    """``(study name, full hash)`` of a loaded recipe with a ``search`` section."""
    recipe = loaded.recipe
    base = {k: v for k, v in loaded.resolved.items() if k != "search"}
    text = json.dumps({"search": recipe.search.identity(), "recipe": base}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{recipe.name}-{digest[:10]}", digest


def storage_url(output_root: Path, recipe_name: str) -> str:
    folder = Path(output_root).resolve() / "tuning"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / (recipe_name + '.db')}"


@dataclass
class OpenedStudy:
    study: object  # optuna.Study
    name: str
    storage: str
    resumed: bool
    message: str


def counted(study) -> list:
    """Trials that used up budget: finished ones, not those cut short by Ctrl-C."""
    return [t for t in study.trials
            if t.state.name in FINISHED_STATES and not t.user_attrs.get("interrupted")]


def open_study(loaded: LoadedRecipe, output_root: Path, storage: str | None = None) -> OpenedStudy:
    """The search's study in ``storage`` (default: SQLite under ``<output_root>/tuning/``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # dlrun says what happened
    recipe, spec = loaded.recipe, loaded.recipe.search
    name, digest = study_identity(loaded)
    storage = storage or storage_url(output_root, recipe.name)
    backend = shared_storage(storage)
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(backend, include_best_trial=False)}
    study = optuna.create_study(
        storage=backend, study_name=name, load_if_exists=True, direction=spec.objective.resolved_direction,
        pruner=_pruner(spec),
    )
    if name in summaries:
        fail_running(study)
        trials = counted(study)
        states = {s: sum(t.state.name == s for t in trials) for s in FINISHED_STATES}
        detail = ", ".join(f"{n} {s.lower()}" for s, n in states.items() if n)
        message = f"resuming study {name}: {len(trials)} trials done" + (f" ({detail})" if detail else "")
        return OpenedStudy(study, name, storage, True, message)
    study.set_user_attr("hash", digest)
    study.set_user_attr("recipe_file", str(loaded.path))
    study.set_user_attr("created", time.time())
    study.set_user_attr("space", spec.identity()["space"])
    earlier = [s for s in summaries.values() if s.study_name != name]
    if earlier:
        last = max(earlier, key=lambda s: s.user_attrs.get("created", 0))
        message = (f"the search space or the base recipe changed since study {last.study_name} ({last.n_trials} "
                   f"trials, kept in {storage}): starting a new study {name}")
    else:
        message = f"new study {name}"
    return OpenedStudy(study, name, storage, False, message)


def fail_running(study, why: str | None = None) -> None:
    """Trials left RUNNING by a process that ended (killed, crashed) will never report: mark
    them failed, saying ``why``."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            if why:
                study._storage.set_trial_user_attr(trial._trial_id, "error", why)
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another process may own it; it is not counted anyway
            pass


def shared_storage(url: str):
    """The study's storage for several processes: SQLite waits for its lock instead of failing."""
    if not url.startswith("sqlite"):
        return url
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})


def load_shared_study(name: str, storage: str, spec):
    """An existing study, as a tuning worker opens it (the pruner is not stored: given again)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=shared_storage(storage), pruner=_pruner(spec))


def _pruner(spec):
    import optuna

    if not spec.pruning.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruning.startup_trials,
                                       n_warmup_steps=spec.pruning.warmup_steps)


def make_sampler(spec, seed: int, stream: int = 0):
    """The sampler. A grid is shuffled by ``seed`` alone: every call and every worker must see
    one order, since Optuna hands out grid points by trial number. Random and TPE draws are
    seeded with ``seed + stream`` (the trials so far, and a worker's own offset: a resumed or
    parallel random search does not replay values already tried)."""
    import optuna

    if spec.sampler == "grid":
        return optuna.samplers.GridSampler({k: p.grid() for k, p in spec.space.items()}, seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed + stream)
    return optuna.samplers.TPESampler(seed=seed + stream, n_startup_trials=min(10, max(2, len(spec.space) + 1)))


def suggest(trial, spec) -> dict:
    """The trial's values for every dimension (a grid search picks from each grid)."""
    values = {}
    for key, p in spec.space.items():
        if spec.sampler == "grid" or p.kind == "choice":
            values[key] = trial.suggest_categorical(key, p.grid() if spec.sampler == "grid" else p.values)
        elif p.kind == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1))
        elif p.kind == "float":
            values[key] = trial.suggest_float(key, p.low, p.high, step=p.step)
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, log=True)
    return values

"""Read a run back: one resolver for what a user names, one reader for what a run left.

Every command that uses a finished (or interrupted) run goes through here — ``compare``,
``ensemble``, ``--resume``, ``predict``, ``evaluate``, ``export``, ``runs`` — and so do
executors collecting finished job directories. A run is named by:

- its directory (or a fold's, ``RUN/folds/fold_2``, or a refit's, ``RUN/final``);
- its MLflow run id (a fold's nested run id too), a prefix of it, or the hex of its folder;
- its folder's name;
- a recipe file, a recipe name or an experiment name: that experiment's latest FINISHED run;
- an experiment folder: its latest FINISHED run.

``open_run(ref, fold=N)`` then picks fold N of a K-fold run. Nothing here imports
tensorflow or keras; MLflow only to look up a run id no run directory under the output root knows.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from dlrun.errors import UsageError, did_you_mean
from dlrun.track.rundir import HISTORY_FILE, MODEL_FILE, STATUS_FILE, RunDir, safe_name

KFOLD_CURVES = "kfold_curves.json"
RECIPE_FILE = "recipe.yaml"
LOCK_FILE = ".lock"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_HEX = re.compile(r"^[0-9a-f]{6,32}$")
_RECIPE_SUFFIXES = (".yaml", ".yml")


class RunReader:
    """What one run directory (a run, a fold of it, or its refit) recorded, read on demand."""

    def __init__(self, path: Path, top: "RunReader | None" = None):
        self.path = Path(path).absolute()
        if top is not None:  # a sub-run shares its run's reader (the recipe is read once)
            self.top = top

    def __repr__(self) -> str:
        return f"RunReader({str(self.path)!r})"

    # ------------------------------------------------------------------ where it sits

    @cached_property
    def top(self) -> "RunReader":
        """The run this directory belongs to (the folder that holds the saved recipe)."""
        for folder in [self.path, *self.path.parents][:3]:
            if (folder / RECIPE_FILE).is_file():
                return self if folder == self.path else RunReader(folder)
        raise UsageError(f"{self.path} has no {RECIPE_FILE} (nor its run above it): it is not a dlrun run directory")

    @property
    def job_name(self) -> str:
        """``holdout`` for a run's own job, else the sub-run's folder name (``fold_2``, ``final``)."""
        return "holdout" if self.top.path == self.path else self.path.name

    def folds(self) -> list["RunReader"]:
        folder = self.path / "folds"
        if not folder.is_dir():
            return []
        return [RunReader(p, self.top) for p in sorted((p for p in folder.iterdir() if p.is_dir()), key=_fold_order)]

    def final(self) -> "RunReader | None":
        """A K-fold run's refit (``final/``), where it made one."""
        return RunReader(self.path / "final", self.top) if (self.path / "final" / STATUS_FILE).is_file() or \
            (self.path / "final" / MODEL_FILE).is_file() else None

    def fold(self, number: int) -> "RunReader":
        folds = self.folds()
        if not folds:
            raise UsageError(f"--fold {number}: run {self.path} is not a K-fold run (it has no folds/)")
        for fold in folds:
            if fold.path.name == f"fold_{number}":
                return fold
        names = ", ".join(f.path.name.removeprefix("fold_") for f in folds)
        raise UsageError(f"--fold {number}: run {self.path} has folds {names}")

    # ------------------------------------------------------------------ what it recorded

    @cached_property
    def status(self) -> dict[str, Any]:
        """``run.json`` (empty when there is none)."""
        return _read_json(self.path / STATUS_FILE)

    @property
    def state(self) -> str | None:
        return self.status.get("status")

    @property
    def run_id(self) -> str | None:
        return self.status.get("mlflow_run_id")

    @cached_property
    def resolved(self) -> dict[str, Any]:
        """The run's saved recipe (``recipe.yaml``), as it was validated when the run started."""
        import yaml

        path = self.top.path / RECIPE_FILE
        try:
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read the run's recipe {path}: {exc}") from None

    @cached_property
    def recipe(self):
        """The saved recipe as a validated :class:`dlrun.recipe.schema.Recipe`."""
        from pydantic import ValidationError

        from dlrun.recipe.schema import Recipe

        try:
            return Recipe.model_validate(self.resolved)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise UsageError(f"{self.top.path / RECIPE_FILE} is not a recipe this dlrun reads ({where}: "
                             f"{first['msg']})") from None

    @property
    def base_dir(self) -> Path:
        """The folder of the recipe file the run was started from: where its relative paths point."""
        recipe_file = self.top.status.get("recipe_file")
        return Path(recipe_file).absolute().parent if recipe_file else self.top.path

    @property
    def protocol(self) -> str:
        return ((self.resolved.get("evaluation") or {}).get("protocol")) or "holdout"

    @property
    def name(self) -> str:
        """The run's display name: ``tracking.run_name``, else the recipe's name."""
        tracking = self.resolved.get("tracking") or {}
        return tracking.get("run_name") or self.resolved.get("name") or self.top.path.parent.name

    def history(self) -> dict[str, list[float]]:
        return RunDir(self.path).read_history()

    def kfold_curves(self) -> dict[str, Any]:
        return _read_json(self.path / KFOLD_CURVES)

    def metrics(self) -> dict[str, float]:
        """The job's final evaluations (``metrics.json``), else the run's summary metrics."""
        return _read_json(self.path / "metrics.json") or self.status.get("metrics") or {}

    def splits(self) -> dict[str, Any]:
        return _read_json(self.top.path / "splits.json")

    def data_info(self) -> dict[str, Any]:
        return _read_json(self.top.path / "data.json")

    def environment(self) -> dict[str, Any]:
        """Where and with what the run ran (``environment.json``: host, packages, devices)."""
        return _read_json(self.top.path / "environment.json")

    def preprocessing(self) -> Any:
        """What the job's transforms learned (``preprocessing.json``): a list of steps for
        in-memory data, the source's statistics for streamed data; ``None`` if not recorded."""
        path = self.path / "preprocessing.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None

    def training_rows(self) -> tuple[list[int] | None, list[int] | None]:
        """The (train, validation) rows this job used, ``(None, None)`` for a refit on all rows."""
        if self.job_name == "final":
            return None, None
        part = self.splits().get(self.job_name)
        if not isinstance(part, dict) or part.get("train") is None:
            raise UsageError(f"{self.top.path / 'splits.json'} does not record the rows '{self.job_name}' was "
                             "trained on (a streamed source fixes its own parts)")
        return part["train"], part.get("validation")

    # ------------------------------------------------------------------ its model

    def model_job(self) -> "RunReader":
        """The job whose model stands for this run: itself, or a K-fold run's refit."""
        if self.job_name != "holdout" or not self.folds():
            return self
        final = self.final()
        if final is not None and (final.path / MODEL_FILE).is_file():
            return final
        numbers = ", ".join(f.path.name.removeprefix("fold_") for f in self.folds())
        raise UsageError(f"{self.path} is a K-fold run without a refit model: name one fold's model with --fold N "
                         f"(folds {numbers}), or train it with --refit")

    @property
    def model_path(self) -> Path:
        """This job's saved model; a clear error when it saved none."""
        path = self.path / MODEL_FILE
        if path.is_file():
            return path
        removed = [p for p in self.top.status.get("pruned") or [] if any(
            (self.top.path / f) == path for f in p.get("files", []))]
        if removed:
            why = f"dlrun gc removed it on {removed[-1].get('at')} (its records are kept); train it again"
        elif not (self.resolved.get("tracking") or {}).get("log_model", True):
            why = "its recipe has tracking.log_model: false; train it again with --set tracking.log_model=true"
        else:
            why = f"the run saved none (it is {self.top.state or 'without run.json'})"
        raise UsageError(f"no saved model in {self.path} ({MODEL_FILE}): {why}")

    def require_finished(self, purpose: str) -> None:
        """A job that finished: a fold of an unfinished K-fold run counts once it finished itself."""
        holder = self if self.status else self.top
        if holder.state != "FINISHED":
            raise UsageError(f"run {holder.path} is {holder.state or 'without run.json'}: {purpose} uses "
                             "finished runs only")

    # ------------------------------------------------------------------ is anyone running it

    def holder(self) -> int | None:
        """The pid of the live process that holds the run (its lock), else None. The lock is
        the run's own: the system drops it when the process dies, however it dies."""
        lock = self.top.path / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return int(lock.read_text().strip() or 0) or -1
                except (OSError, ValueError):
                    return -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    @property
    def stale(self) -> bool:
        """RUNNING on record, but no live process holds it (killed with SIGKILL, a lost host)."""
        return self.state == "RUNNING" and self.holder() is None


@contextmanager
def lock_if_free(run_path: Path) -> Iterator[bool]:
    """Hold a run's lock while the block runs, without waiting: ``True``, or ``False`` (and no
    lock) when a live process holds it — a ``--resume`` started meanwhile is then refused."""
    fd = os.open(Path(run_path) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield True
    finally:
        os.close(fd)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _fold_order(path: Path) -> tuple:
    digits = "".join(c if c.isdigit() else " " for c in path.name).split()
    return tuple(int(d) for d in digits), path.name


# --------------------------------------------------------------------------- resolving


def open_run(ref: str | Path, output_root: Path, tracking_uri: str | None = None, fold: int | None = None
             ) -> RunReader:
    """The run ``ref`` names (see the module's docstring), or fold ``fold`` of it."""
    run = RunReader(resolve_run(str(ref), output_root, tracking_uri))
    return run.top.fold(fold) if fold is not None else run


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in (STATUS_FILE, HISTORY_FILE, KFOLD_CURVES))


def runs_root(output_root: Path) -> Path:
    return Path(output_root).expanduser().absolute() / "runs"


def all_run_dirs(output_root: Path) -> list[Path]:
    """Every top-level run directory under the output root, oldest first within an experiment."""
    root = runs_root(output_root)
    if not root.is_dir():
        return []
    return sorted(p for exp in root.iterdir() if exp.is_dir() for p in exp.iterdir() if is_run_dir(p))


def _status(path: Path) -> dict[str, Any]:
    return RunDir(path).read_status()


def latest_finished(experiment_dir: Path) -> Path:
    """The newest FINISHED run of an experiment folder (folder names sort by UTC start time)."""
    runs = sorted((p for p in experiment_dir.iterdir() if is_run_dir(p)), reverse=True)
    for run in runs:
        if _status(run).get("status") == "FINISHED":
            return run
    seen = ", ".join(f"{p.name} ({_status(p).get('status', 'no run.json')})" for p in runs[:5]) or "none"
    raise UsageError(f"experiment '{experiment_dir.name}' has no FINISHED run under {experiment_dir.parent} "
                     f"(runs: {seen}); name a run directory to use an unfinished run")


def _recipe_experiment(path: Path) -> str:
    """The experiment a recipe file's runs go to: ``tracking.experiment``, else its name."""
    from dlrun.errors import RecipeError
    from dlrun.recipe.loading import load_recipe

    try:
        recipe = load_recipe(path, require_data=False).recipe
    except RecipeError as exc:
        raise UsageError(f"cannot read the recipe {path} to find its runs:\n{exc}") from None
    return recipe.tracking.experiment or recipe.name


def run_by_id(ref: str, output_root: Path, tracking_uri: str | None = None) -> Path | None:
    """A run directory whose run.json has this MLflow run id (or whose folder ends in this hex);
    else the ``dlrun.run_dir`` tag of the run in the MLflow store."""
    matches = []
    runs = all_run_dirs(output_root)
    subruns = [s for run in runs for s in [*sorted((run / "folds").glob("*")), run / "final"] if is_run_dir(s)]
    for run in runs + subruns:
        run_id = str(_status(run).get("mlflow_run_id") or "")
        if run_id == ref or (len(ref) >= 6 and (run_id.startswith(ref) or run.name.endswith(f"-{ref}"))):
            matches.append(run)
    if len(matches) > 1:
        names = ", ".join(str(m) for m in matches[:4])
        raise UsageError(f"'{ref}' matches {len(matches)} runs ({names}); give more of the run id")
    if matches:
        return matches[0]
    if _RUN_ID.match(ref):
        return _from_mlflow(ref, output_root, tracking_uri)
    return None


def _from_mlflow(run_id: str, output_root: Path, tracking_uri: str | None) -> Path | None:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        db = Path(output_root).expanduser().absolute() / "mlflow.db"
        if not db.is_file():
            return None  # no store to ask (and opening one would create it)
        uri = f"sqlite:///{db}"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException:
        return None
    run_dir = run.data.tags.get("dlrun.run_dir")
    if not run_dir:
        raise UsageError(f"MLflow run {run_id} at {uri} has no dlrun.run_dir tag, so its run directory is "
                         "unknown; name the run directory instead")
    if not Path(run_dir).is_dir():
        raise UsageError(f"MLflow run {run_id} records its run directory as {run_dir}, which does not exist here")
    return Path(run_dir)


def resolve_run(ref: str, output_root: Path, tracking_uri: str | None = None) -> Path:
    """The run directory ``ref`` names; :class:`UsageError` saying what was tried otherwise."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if is_run_dir(path):
            return path.absolute()
        if any(is_run_dir(p) for p in path.iterdir()):  # an experiment folder
            return latest_finished(path.absolute())
    elif path.suffix in _RECIPE_SUFFIXES:
        if not path.is_file():
            raise UsageError(f"no such recipe file: {path}")
        return _experiment_run(_recipe_experiment(path), output_root, ref)
    if _HEX.match(ref):
        found = run_by_id(ref, output_root, tracking_uri)
        if found is not None:
            return found
    named = [run for run in all_run_dirs(output_root) if run.name == ref]  # a run folder's name
    if len(named) == 1:
        return named[0]
    experiments = runs_root(output_root)
    if (experiments / safe_name(ref)).is_dir():
        return latest_finished(experiments / safe_name(ref))
    for folder in (Path("recipes"), Path(".")):
        for suffix in _RECIPE_SUFFIXES:
            if (folder / f"{ref}{suffix}").is_file():
                return _experiment_run(_recipe_experiment(folder / f"{ref}{suffix}"), output_root, ref)
    if path.is_dir():  # a folder of the same name, not a run: say so rather than "unknown"
        raise UsageError(f"{path} is a folder but not a run directory (it has no {STATUS_FILE} or {HISTORY_FILE}), "
                         f"and no run or experiment under {experiments} is called '{ref}'")
    names = sorted(p.name for p in experiments.iterdir() if p.is_dir()) if experiments.is_dir() else []
    known = f" (experiments there: {', '.join(names[:12])})" if names else " (it has no runs yet)"
    raise UsageError(
        f"unknown run '{ref}': not a run directory, a run id, a recipe file or an experiment under "
        f"{experiments}{known}{did_you_mean(ref, names)}"
    )


def _experiment_run(experiment: str, output_root: Path, ref: str) -> Path:
    folder = runs_root(output_root) / safe_name(experiment, "experiment")
    if not folder.is_dir():
        raise UsageError(f"'{ref}' has no runs yet: no folder {folder} (train it first, or pass --output-root)")
    return latest_finished(folder)

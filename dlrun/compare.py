"""``dlrun compare``: overlay one metric's curve from several recorded runs (the book's
Figures 4.4–4.7) and tabulate final and best values.

A run is named by its directory, its MLflow run id (or the hex suffix of its folder), a recipe
file, or a recipe/experiment name (→ the latest FINISHED run of that experiment). Everything
is read back from run directories (``history.csv``, ``kfold_curves.json``, ``run.json``);
MLflow is imported only to look up a run id no run directory under the output root knows.
TensorFlow is never imported.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dlrun import tables
from dlrun.metric_direction import lower_is_better
from dlrun.errors import UsageError, did_you_mean
from dlrun.track.rundir import HISTORY_FILE, STATUS_FILE, RunDir, safe_name

KFOLD_CURVES = "kfold_curves.json"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_HEX = re.compile(r"^[0-9a-f]{6,32}$")
_RECIPE_SUFFIXES = (".yaml", ".yml")



@dataclass
class RunCurves:
    """One run's recorded curves and what the comparison says about it."""

    ref: str  # what the user wrote
    run_dir: Path
    label: str
    recipe: str | None
    run_id: str | None
    status: str | None
    protocol: str  # holdout | kfold (averaged curves)
    history: dict[str, list[float]]
    test_metrics: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- resolving


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in (STATUS_FILE, HISTORY_FILE, KFOLD_CURVES))


def _runs_root(output_root: Path) -> Path:
    return Path(output_root).expanduser().absolute() / "runs"


def _all_run_dirs(output_root: Path) -> list[Path]:
    root = _runs_root(output_root)
    if not root.is_dir():
        return []
    return sorted(p for exp in root.iterdir() if exp.is_dir() for p in exp.iterdir() if _is_run_dir(p))


def _status(path: Path) -> dict[str, Any]:
    return RunDir(path).read_status()


def latest_finished(experiment_dir: Path) -> Path:
    """The newest FINISHED run of an experiment folder (folder names sort by UTC start time)."""
    runs = sorted((p for p in experiment_dir.iterdir() if _is_run_dir(p)), reverse=True)
    for run in runs:
        if _status(run).get("status") == "FINISHED":
            return run
    seen = ", ".join(f"{p.name} ({_status(p).get('status', 'no run.json')})" for p in runs[:5]) or "none"
    raise UsageError(f"experiment '{experiment_dir.name}' has no FINISHED run under {experiment_dir.parent} "
                     f"(runs: {seen}); name a run directory to compare an unfinished run")


def _recipe_experiment(path: Path) -> str:
    """The experiment a recipe file's runs go to: ``tracking.experiment``, else its name."""
    from dlrun.errors import RecipeError
    from dlrun.recipe.loading import load_recipe

    try:
        recipe = load_recipe(path, require_data=False).recipe
    except RecipeError as exc:
        raise UsageError(f"cannot read the recipe {path} to find its runs:\n{exc}") from None
    return recipe.tracking.experiment or recipe.name


def _by_run_id(ref: str, output_root: Path, tracking_uri: str | None) -> Path | None:
    """A run directory whose run.json has this MLflow run id (or whose folder ends in this hex);
    else the ``dlrun.run_dir`` tag of the run in the MLflow store."""
    matches = []
    runs = _all_run_dirs(output_root)
    folds = [f for run in runs if (run / "folds").is_dir() for f in sorted((run / "folds").iterdir())]
    for run in runs + [f for f in folds if _is_run_dir(f)]:
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
        if _is_run_dir(path):
            return path.absolute()
        if any(_is_run_dir(p) for p in path.iterdir()):  # an experiment folder
            return latest_finished(path.absolute())
        raise UsageError(f"{path} is a folder but not a run directory (it has no {STATUS_FILE} or {HISTORY_FILE})")
    if path.suffix in _RECIPE_SUFFIXES:
        if not path.is_file():
            raise UsageError(f"no such recipe file: {path}")
        return _experiment_run(_recipe_experiment(path), output_root, ref)
    if _HEX.match(ref):
        found = _by_run_id(ref, output_root, tracking_uri)
        if found is not None:
            return found
    named = [run for run in _all_run_dirs(output_root) if run.name == ref]  # a run folder's name
    if len(named) == 1:
        return named[0]
    experiments = _runs_root(output_root)
    if (experiments / safe_name(ref)).is_dir():
        return latest_finished(experiments / safe_name(ref))
    for folder in (Path("recipes"), Path(".")):
        for suffix in _RECIPE_SUFFIXES:
            if (folder / f"{ref}{suffix}").is_file():
                return _experiment_run(_recipe_experiment(folder / f"{ref}{suffix}"), output_root, ref)
    names = sorted(p.name for p in experiments.iterdir() if p.is_dir()) if experiments.is_dir() else []
    known = f" (experiments there: {', '.join(names[:12])})" if names else " (it has no runs yet)"
    raise UsageError(
        f"unknown run '{ref}': not a run directory, a run id, a recipe file or an experiment under "
        f"{experiments}{known}{did_you_mean(ref, names)}"
    )


def _experiment_run(experiment: str, output_root: Path, ref: str) -> Path:
    folder = _runs_root(output_root) / safe_name(experiment, "experiment")
    if not folder.is_dir():
        raise UsageError(f"'{ref}' has no runs yet: no folder {folder} (train it first, or pass --output-root)")
    return latest_finished(folder)


# --------------------------------------------------------------------------- loading


def _find_upwards(run_dir: Path, name: str, levels: int = 3) -> Path | None:
    """``recipe.yaml`` of a run, or of the run a fold directory belongs to."""
    for folder in [run_dir, *run_dir.parents][: levels + 1]:
        if (folder / name).is_file():
            return folder / name
    return None


def _recipe_info(run_dir: Path) -> tuple[str | None, str | None]:
    """(recipe name, tracking.run_name) from the run's saved recipe."""
    path = _find_upwards(run_dir, "recipe.yaml")
    if path is None:
        return None, None
    import yaml

    try:
        resolved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None, None
    tracking = resolved.get("tracking") or {}
    return resolved.get("name"), tracking.get("run_name")


def _test_metrics(status: dict, run_dir: Path) -> dict[str, float]:
    metrics = status.get("metrics") or {}
    if not metrics and (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {k: float(v) for k, v in metrics.items() if k.startswith("test_") and isinstance(v, (int, float))}


def load_run(ref: str, run_dir: Path) -> RunCurves:
    """A run's curves: ``history.csv``, or for a K-fold run the fold-averaged ``kfold_curves.json``."""
    status = _status(run_dir)
    recipe, run_name = _recipe_info(run_dir)
    if (run_dir / KFOLD_CURVES).is_file():
        history = json.loads((run_dir / KFOLD_CURVES).read_text(encoding="utf-8")).get("mean", {})
        protocol = "kfold"
    else:
        history = RunDir(run_dir).read_history()
        protocol = "holdout"
    if not any(history.values()):
        state = status.get("status", "no run.json")
        raise UsageError(f"run {run_dir} ({state}) recorded no epochs: no {HISTORY_FILE} or {KFOLD_CURVES}")
    label = run_name or recipe or run_dir.parent.name
    if not (run_dir / "recipe.yaml").is_file() and recipe:  # a fold or final sub-run of a run
        label = f"{label} {run_dir.name}"
    return RunCurves(ref, run_dir, label, recipe, status.get("mlflow_run_id"), status.get("status"), protocol,
                     history, _test_metrics(status, run_dir))


def _disambiguate(runs: list[RunCurves]) -> None:
    """Equal labels get their folder's short id: ``imdb_dense (69d5bb)``; K-fold runs say so."""
    def kfold(run: RunCurves, extra: str = "") -> str:
        notes = [n for n in (extra, "k-fold mean" if run.protocol == "kfold" else "") if n]
        return f"{run.label} ({', '.join(notes)})" if notes else run.label

    counts: dict[str, int] = {}
    for run in runs:
        counts[kfold(run)] = counts.get(kfold(run), 0) + 1
    seen: dict[str, int] = {}
    for run in runs:
        if counts[kfold(run)] == 1:
            run.label = kfold(run)
            continue
        parts = run.run_dir.name.split("-")
        label = kfold(run, parts[2] if len(parts) >= 3 else run.run_dir.name)
        seen[label] = seen.get(label, 0) + 1
        run.label = label if seen[label] == 1 else f"{label} #{seen[label]}"


def check_metric(runs: Sequence[RunCurves], metric: str) -> None:
    for run in runs:
        if metric not in run.history:
            keys = sorted(run.history)
            raise UsageError(f"run '{run.label}' ({run.run_dir}) has no '{metric}' curve"
                             f"{did_you_mean(metric, keys)} (it records: {', '.join(keys)}); choose one with --metric")


# --------------------------------------------------------------------------- summary


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def summarize(run: RunCurves, metric: str) -> dict[str, Any]:
    """Final value, best value and best epoch (1-based) of ``metric``, by its direction."""
    curve = [float(v) for v in run.history[metric]]
    finite = [(v, i) for i, v in enumerate(curve) if math.isfinite(v)]
    best = (min if lower_is_better(metric) else max)(finite, key=lambda t: t[0]) if finite else None
    return {
        "label": run.label,
        "ref": run.ref,
        "run_dir": str(run.run_dir),
        "run_id": run.run_id,
        "recipe": run.recipe,
        "status": run.status,
        "protocol": run.protocol,
        "epochs": len(curve),
        "final": _number(curve[-1]) if curve else None,
        "best": best[0] if best else None,
        "best_epoch": best[1] + 1 if best else None,
        "test": run.test_metrics,
        "curve": [_number(v) for v in curve],
    }


@dataclass
class Comparison:
    metric: str
    smooth: float | None
    runs: list[RunCurves]
    rows: list[dict[str, Any]]
    plot: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "direction": "min" if lower_is_better(self.metric) else "max",
            "smooth": self.smooth,
            "plot": str(self.plot) if self.plot else None,
            "runs": self.rows,
        }


def default_plot_path(output_root: Path, metric: str, runs: Sequence[RunCurves], smooth: float | None) -> Path:
    """``<output_root>/compare/<metric>-<label>-vs-<label>-<hash>.png``: the same comparison
    overwrites its own figure, a different one (other runs, smoothing) gets another file."""
    key = "\n".join([metric, str(smooth), *(str(r.run_dir) for r in runs)])
    digest = hashlib.sha1(key.encode()).hexdigest()[:6]
    names = "-vs-".join(safe_name(r.label) for r in runs)
    stem = safe_name(f"{metric}-{names}")[:70].rstrip("-_.")
    return Path(output_root).expanduser().absolute() / "compare" / f"{stem}-{digest}.png"


def compare(
    refs: Sequence[str], *, metric: str = "val_loss", smooth: float | None = None, output: Path | None = None,
    output_root: Path = Path("artifacts"), tracking_uri: str | None = None, plot: bool = True,
) -> Comparison:
    """Resolve ``refs``, check they all record ``metric``, draw the overlay, summarize each run."""
    if not refs:
        raise UsageError("name at least one run, run id or recipe to compare")
    if smooth is not None and not 0.0 <= smooth < 1.0:
        raise UsageError(f"--smooth must be in [0, 1) (the book uses 0.9), got {smooth}")
    if output is not None and Path(output).suffix.lower() != ".png":
        raise UsageError(f"--output must be a .png file, got {output}")
    runs = [load_run(ref, resolve_run(ref, output_root, tracking_uri)) for ref in refs]
    _disambiguate(runs)
    check_metric(runs, metric)
    result = Comparison(metric, smooth, runs, [summarize(r, metric) for r in runs])
    if plot:
        from dlrun.track.compare_plot import plot_overlay

        path = Path(output) if output is not None else default_plot_path(output_root, metric, runs, smooth)
        result.plot = plot_overlay({r.label: r.history[metric] for r in runs}, metric, path, smooth=smooth)
    return result


# --------------------------------------------------------------------------- table


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table_cells(result: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table (values of the raw, unsmoothed curves)."""
    tests = sorted({k for row in result.rows for k in row["test"]})
    header = ["run", "epochs", f"final {result.metric}", f"best {result.metric}", "best epoch", *tests]
    rows = [
        [row["label"], _fmt(row["epochs"]), _fmt(row["final"]), _fmt(row["best"]), _fmt(row["best_epoch"]),
         *(_fmt(row["test"].get(k)) for k in tests)]
        for row in result.rows
    ]
    return header, rows


def plain_table(result: Comparison) -> str:
    return tables.plain_table(*table_cells(result))


def print_table(result: Comparison, tty: bool) -> None:
    direction = "lower" if lower_is_better(result.metric) else "higher"
    smoothed = f", plot smoothed ×{result.smooth}" if result.smooth else ""
    tables.render_table(*table_cells(result), title=f"{result.metric} ({direction} is better{smoothed})", tty=tty)

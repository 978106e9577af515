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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dlrun import tables
from dlrun.metric_direction import lower_is_better
from dlrun.errors import UsageError, did_you_mean
from dlrun.track.rundir import HISTORY_FILE, safe_name
from dlrun.track.runs import KFOLD_CURVES, RunReader, resolve_run


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


# --------------------------------------------------------------------------- loading


def _test_metrics(run: RunReader) -> dict[str, float]:
    metrics = run.status.get("metrics") or run.metrics()
    return {k: float(v) for k, v in metrics.items() if k.startswith("test_") and isinstance(v, (int, float))}


def load_run(ref: str, run_dir: Path) -> RunCurves:
    """A run's curves: ``history.csv``, or for a K-fold run the fold-averaged ``kfold_curves.json``."""
    run = RunReader(run_dir)
    try:
        recipe, run_name = run.resolved.get("name"), (run.resolved.get("tracking") or {}).get("run_name")
    except UsageError:  # no saved recipe: the curves alone still compare
        recipe = run_name = None
    if (run_dir / KFOLD_CURVES).is_file():
        history, protocol = run.kfold_curves().get("mean", {}), "kfold"
    else:
        history, protocol = run.history(), "holdout"
    if not any(history.values()):
        state = run.state or "no run.json"
        raise UsageError(f"run {run_dir} ({state}) recorded no epochs: no {HISTORY_FILE} or {KFOLD_CURVES}")
    label = run_name or recipe or run_dir.parent.name
    if recipe and run.job_name != "holdout":  # a fold or final sub-run of a run
        label = f"{label} {run_dir.name}"
    return RunCurves(ref, run_dir, label, recipe, run.run_id, run.state, protocol, history, _test_metrics(run))


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

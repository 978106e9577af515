"""Evaluation protocols: how jobs are laid over splits, and how their results add up.

A protocol is two functions: ``plan`` (the splits, computed before any run is created so a
bad split is an input error) and ``run`` (the jobs, returning the run's summary metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dlrun.data.dataset import StreamedDataset
from dlrun.data.splits import Split, holdout_split, kfold_splits, resolve_stratify
from dlrun.errors import UsageError, did_you_mean
from dlrun.metric_direction import lower_is_better
from dlrun.recipe.schema import Recipe
from dlrun.training.fold_job import final_metrics, log_model
from dlrun.training.job import JobContext, run_job
from dlrun.training.kfold_jobs import record_executor, run_folds, run_refit
from dlrun.track.mlflow_ui import log_summary


def monitor_mode(recipe: Recipe, monitor: str) -> str:
    """``min`` or ``max``: the recipe's ``evaluation.mode``, else the direction Keras gives the
    metric (``_direction`` up/down), else a guess from its name."""
    mode = getattr(recipe.evaluation, "mode", "auto")
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    if name != "loss":
        import keras

        metrics = recipe.compile.metrics  # per output (a graph model's): {output: [metrics]}
        for spec in [m for ms in metrics.values() for m in ms] if isinstance(metrics, dict) else metrics:
            if name in (spec.name, spec.args.get("name")):
                try:
                    direction = getattr(keras.metrics.get(spec.name), "_direction", None)
                except ValueError:
                    direction = None
                if direction in ("up", "down"):
                    return "max" if direction == "up" else "min"
    return "min" if lower_is_better(name) else "max"


@dataclass
class ProtocolContext:
    recipe: Recipe
    dataset: Any  # dlrun.data.dataset.Dataset
    splits: list[Split]
    run_dir: Any  # RunDir
    tracker: Any  # Tracker | None
    tracked: Any  # TrackedRun | None (the run itself, the parent for folds)
    reporter: Any
    preflight: Any = None  # dlrun.training.job.Preflight: splits[0]'s fitted pipeline, the data it tried
    base_dir: Any = None  # the recipe's folder
    resume: bool = False  # continue each job from its checkpoint; keep finished folds
    executor: Any = None  # where K-fold's jobs run (dlrun.execution); None: in this process, one by one

    def job_context(self, run_dir, tracked) -> JobContext:
        return JobContext(self.recipe, self.dataset, run_dir, tracked, self.reporter, self.base_dir, self.resume)

    def pipeline_for(self, split: Split):
        """The preflight's fitted pipeline for the split it was fitted on (others fit their own)."""
        return self.preflight.pipeline if self.preflight is not None and split is self.splits[0] else None

    @property
    def checked(self):
        """The sample signature the preflight put through the model: a job seeing the same need not try again."""
        return self.preflight.checked if self.preflight is not None else None


def _best_epoch(curve: list[float] | None, monitor: str, mode: str = "min") -> dict[str, float]:
    """The best epoch (1-based) of a curve and its value; nothing when the curve is all NaN."""
    if not curve or not np.isfinite(np.asarray(curve, dtype=float)).any():
        return {}
    values = np.where(np.isfinite(curve), curve, np.nan)
    index = int(np.nanargmin(values) if mode == "min" else np.nanargmax(values))
    return {"best_epoch": index + 1, f"best_{monitor}": float(values[index])}


def _split_record(splits: list[Split], dataset) -> dict:
    if isinstance(dataset, StreamedDataset):  # parts fixed by the source (folders, row ranges)
        return {"parts": dataset.info.get("parts", {})}
    record = {
        s.name: {
            "train": s.train.tolist(),
            "validation": None if s.validation is None else s.validation.tolist(),
        }
        for s in splits
    }
    if "test_indices" in dataset.info:
        record["test"] = list(map(int, dataset.info["test_indices"]))
    return record


# --------------------------------------------------------------------------- hold-out


def plan_holdout(recipe: Recipe, dataset) -> list[Split]:
    if isinstance(dataset, StreamedDataset):
        return [Split("holdout", None, None)]  # the source fixes its parts
    return [holdout_split(len(dataset.y_train), recipe.data.split.validation, recipe.seed)]


def plan_baseline(recipe: Recipe, dataset) -> list[Split]:
    return [Split("baseline", None, None)]


def run_baseline(ctx: ProtocolContext) -> dict[str, float]:
    from dlrun.training.baseline import run_baseline as run

    ctx.run_dir.write_json("splits.json", _split_record(ctx.splits, ctx.dataset))
    return run(ctx)


def run_holdout(ctx: ProtocolContext) -> dict[str, float]:
    (split,) = ctx.splits
    if getattr(ctx.executor, "name", "serial") != "serial":
        ctx.reporter.note(f"a hold-out run is one job: it runs in this process, not on --executor {ctx.executor.name}")
    ctx.run_dir.write_json("splits.json", _split_record(ctx.splits, ctx.dataset))
    result = run_job(ctx.job_context(ctx.run_dir, ctx.tracked), split, pipeline=ctx.pipeline_for(split),
                     checked=ctx.checked)
    summary = final_metrics(result)
    monitor = "val_loss" if "val_loss" in result.history else "loss"
    summary.update(_best_epoch(result.history.get(monitor), monitor))
    summary["epochs_run"] = result.epochs_run
    if ctx.tracked is not None:
        log_summary(ctx.tracked, summary)
        log_model(ctx.tracked, ctx.run_dir, result.model)
    return summary


# --------------------------------------------------------------------------- K-fold


def plan_kfold(recipe: Recipe, dataset) -> list[Split]:
    spec = recipe.evaluation
    stratify = resolve_stratify(spec.stratify, dataset.y_train, recipe.compile.loss_names)
    return kfold_splits(dataset.y_train, spec.k, spec.shuffle, stratify, recipe.seed, spec.repeats)


def check_kfold_monitor(recipe: Recipe, logged: list[str]) -> None:
    """``evaluation.monitor`` must name a curve the folds will log (checked in the preflight)."""
    curves = [*logged, *(f"val_{name}" for name in logged)]
    monitor = recipe.evaluation.monitor
    if monitor not in curves:
        raise UsageError(
            f"evaluation.monitor: '{monitor}' is not a metric this model logs{did_you_mean(monitor, curves)} "
            f"(it logs: {', '.join(curves)})"
        )


def average_curves(histories: list[dict[str, list[float]]]) -> tuple[dict, dict]:
    """Per-epoch mean and std over folds (the book's Listing 3.29). Folds stopped early
    contribute to the epochs they ran."""
    keys = sorted({k for h in histories for k in h})
    mean, std = {}, {}
    for key in keys:
        length = max(len(h.get(key, [])) for h in histories)
        per_epoch = [[h[key][e] for h in histories if e < len(h.get(key, []))] for e in range(length)]
        mean[key] = [float(np.mean(v)) for v in per_epoch]
        std[key] = [float(np.std(v)) for v in per_epoch]
    return mean, std


def best_mean_epoch(histories: list[dict[str, list[float]]], monitor: str, mode: str = "min") -> dict[str, float]:
    """The best epoch of the fold-averaged ``monitor`` curve, among the epochs every fold
    reached (a late epoch seen by one long-running fold is no average)."""
    common = min(len(h.get(monitor, [])) for h in histories)
    mean, _ = average_curves([{monitor: h[monitor][:common]} for h in histories if monitor in h])
    return _best_epoch(mean.get(monitor), monitor, mode)


def run_kfold(ctx: ProtocolContext) -> dict[str, float]:
    recipe, spec = ctx.recipe, ctx.recipe.evaluation
    ctx.run_dir.write_json("splits.json", _split_record(ctx.splits, ctx.dataset))
    if ctx.tracked is not None:
        stratified = resolve_stratify(spec.stratify, ctx.dataset.y_train, recipe.compile.loss_names)
        ctx.tracked.set_tags({"dlrun.folds": str(len(ctx.splits)), "dlrun.stratified": str(stratified).lower()})

    record_executor(ctx)
    results = run_folds(ctx)  # read back from the fold directories that finished

    summary: dict[str, float] = {}
    for key in results[0].metrics:
        values = [r.metrics[key] for r in results if key in r.metrics]
        summary[f"cv_{key}_mean"] = float(np.mean(values))
        summary[f"cv_{key}_std"] = float(np.std(values))
    histories = [r.history for r in results]
    mean, std = average_curves(histories)
    best = best_mean_epoch(histories, spec.monitor, monitor_mode(recipe, spec.monitor))
    summary.update({k.replace(f"best_{spec.monitor}", f"best_mean_{spec.monitor}"): v for k, v in best.items()})
    ctx.run_dir.write_json("kfold_curves.json", {"mean": mean, "std": std, "monitor": spec.monitor})
    _plot_kfold(ctx, mean, std, best.get("best_epoch"))
    if ctx.tracked is not None:  # the parent's curves are the folds' mean, under the folds' names
        for epoch in range(max(len(v) for v in mean.values())):
            ctx.tracked.log_epoch({k: v[epoch] for k, v in mean.items() if epoch < len(v)}, step=epoch + 1)
    if spec.refit and "best_epoch" in best:
        epochs = int(best["best_epoch"])
        summary.update({**run_refit(ctx, epochs).metrics, "refit_epochs": epochs})
    log_summary(ctx.tracked, summary)
    return summary


def _plot_kfold(ctx: ProtocolContext, mean: dict, std: dict, best_epoch: int | None) -> None:
    from dlrun.track.plots import plot_kfold_curves

    plot_kfold_curves(
        {k: v for k, v in mean.items() if k.startswith("val_")} or mean,
        std,
        ctx.run_dir.file("kfold_curves.png"),
        title=f"{ctx.recipe.name} — {len(ctx.splits)}-fold validation",
        best_epoch=best_epoch,
    )


@dataclass(frozen=True)
class Protocol:
    plan: Callable[[Recipe, Any], list[Split]]
    run: Callable[[ProtocolContext], dict[str, float]]


PROTOCOLS: dict[str, Protocol] = {
    "holdout": Protocol(plan_holdout, run_holdout),
    "kfold": Protocol(plan_kfold, run_kfold),
    "baseline": Protocol(plan_baseline, run_baseline),
}

"""Evaluation protocols: how jobs are laid over splits, and how their results add up.

Each protocol takes a :class:`ProtocolContext` and returns the run's summary metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dlrun.data.splits import Split, holdout_split, kfold_splits, resolve_stratify
from dlrun.recipe.schema import Recipe
from dlrun.train.job import JobContext, JobResult, run_job

_LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "mape", "msle", "hinge", "crossentropy", "divergence")


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)


@dataclass
class ProtocolContext:
    recipe: Recipe
    dataset: Any  # dlrun.data.dataset.Dataset
    run_dir: Any  # RunDir
    tracker: Any  # Tracker | None
    tracked: Any  # TrackedRun | None (the run itself, the parent for folds)
    reporter: Any

    def job_context(self, run_dir, tracked) -> JobContext:
        return JobContext(
            self.recipe, self.dataset, run_dir, tracked, self.reporter, log_model=self.recipe.tracking.log_model
        )


def _log_outputs(tracked, run_dir, model=None) -> None:
    if tracked is None:
        return
    if model is not None and run_dir.file("model.keras").exists():
        tracked.log_keras_model(model, name="model")


def final_metrics(result: JobResult) -> dict[str, float]:
    """End-of-run evaluations, renamed where they would collide with a per-epoch curve
    (``val_loss`` at the end → ``final_val_loss``; MLflow keeps one history per name)."""
    return {f"final_{k}" if k in result.history else k: v for k, v in result.metrics.items()}


def run_holdout(ctx: ProtocolContext) -> dict[str, float]:
    recipe = ctx.recipe
    split = holdout_split(len(ctx.dataset.y_train), recipe.data.split.validation, recipe.seed)
    ctx.run_dir.write_json("splits.json", _split_record([split], ctx.dataset))
    result = run_job(ctx.job_context(ctx.run_dir, ctx.tracked), split)
    summary = final_metrics(result)
    summary.update(_best_epoch(result.history, "val_loss" if "val_loss" in result.history else "loss"))
    summary["epochs_run"] = result.epochs_run
    if ctx.tracked is not None:
        ctx.tracked.log_metrics(summary)
    _log_outputs(ctx.tracked, ctx.run_dir, result.model if recipe.tracking.log_model else None)
    return summary


def _best_epoch(history: dict[str, list[float]], monitor: str) -> dict[str, float]:
    curve = history.get(monitor)
    if not curve:
        return {}
    values = np.asarray(curve, dtype=float)
    index = int(np.nanargmin(values) if lower_is_better(monitor) else np.nanargmax(values))
    return {"best_epoch": index + 1, f"best_{monitor}": float(values[index])}


def _split_record(splits: list[Split], dataset) -> dict:
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


def run_kfold(ctx: ProtocolContext) -> dict[str, float]:
    from dlrun.track.plots import plot_kfold_curves

    recipe, spec = ctx.recipe, ctx.recipe.evaluation
    y = ctx.dataset.y_train
    stratify = resolve_stratify(spec.stratify, y, recipe.compile.loss.name)
    splits = kfold_splits(y, spec.k, spec.shuffle, stratify, recipe.seed, spec.repeats)
    ctx.run_dir.write_json("splits.json", _split_record(splits, ctx.dataset))
    if ctx.tracked is not None:
        ctx.tracked.set_tags({"dlrun.stratified": str(stratify).lower(), "dlrun.folds": str(len(splits))})

    results: list[JobResult] = []
    for split in splits:
        results.append(_run_fold(ctx, split))
        _clear_session()

    summary: dict[str, float] = {}
    for key in results[0].metrics:
        values = [r.metrics[key] for r in results if key in r.metrics]
        summary[f"cv_{key}_mean"] = float(np.mean(values))
        summary[f"cv_{key}_std"] = float(np.std(values))
    mean, std = average_curves([r.history for r in results])
    monitor = spec.monitor if spec.monitor in mean else "loss"
    best = _best_epoch(mean, monitor)
    summary.update({k.replace(f"best_{monitor}", f"best_mean_{monitor}"): v for k, v in best.items()})
    ctx.run_dir.write_json("kfold_curves.json", {"mean": mean, "std": std, "monitor": monitor})
    plot_kfold_curves(
        {k: v for k, v in mean.items() if k.startswith("val_")} or mean,
        std,
        ctx.run_dir.file("kfold_curves.png"),
        title=f"{recipe.name} — {len(splits)}-fold validation",
        best_epoch=best.get("best_epoch"),
    )
    if ctx.tracked is not None:
        for epoch in range(max(len(v) for v in mean.values())):
            ctx.tracked.log_epoch(
                {f"cv_mean_{k}": v[epoch] for k, v in mean.items() if epoch < len(v)}, step=epoch + 1
            )
    if spec.refit and "best_epoch" in best:
        summary.update(_refit(ctx, int(best["best_epoch"])))
    if ctx.tracked is not None:
        ctx.tracked.log_metrics(summary)
    return summary


def _run_fold(ctx: ProtocolContext, split: Split) -> JobResult:
    fold_dir = ctx.run_dir.child(f"folds/{split.name}")
    child = None
    if ctx.tracker is not None:
        child = ctx.tracker.start_run(
            run_name=f"{ctx.recipe.name}-{split.name}", tags={"dlrun.fold": split.name}, parent=ctx.tracked
        )
    fold_dir.write_status("RUNNING", mlflow_run_id=getattr(child, "run_id", None))
    try:
        result = run_job(ctx.job_context(fold_dir, child), split, evaluate_test=False)
    except KeyboardInterrupt:
        _end(child, fold_dir, "KILLED", "interrupted")
        raise
    except BaseException as exc:
        _end(child, fold_dir, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    if child is not None:
        child.log_metrics(final_metrics(result))
        _log_outputs(child, fold_dir, result.model if ctx.recipe.tracking.log_model else None)
        child.log_artifacts(fold_dir.path)
    _end(child, fold_dir, "FINISHED", None)
    return result


def _refit(ctx: ProtocolContext, epochs: int) -> dict[str, float]:
    """Train on all training data for the best averaged epoch, evaluate on the test split."""
    split = Split("final", np.arange(len(ctx.dataset.y_train)), None)
    final_dir = ctx.run_dir.child("final")
    result = run_job(ctx.job_context(final_dir, None), split, epochs=epochs)
    if ctx.tracked is not None:
        ctx.tracked.log_artifacts(final_dir.path, "final")
    return {f"final_{k}": v for k, v in result.metrics.items()}


def _end(tracked, run_dir, status: str, error: str | None) -> None:
    run_dir.write_status(status, error=error)
    if tracked is not None:
        tracked.end(status, error)


def _clear_session() -> None:
    import keras

    keras.backend.clear_session()  # a fresh graph per fold keeps memory flat


PROTOCOLS: dict[str, Callable[[ProtocolContext], dict[str, float]]] = {
    "holdout": run_holdout,
    "kfold": run_kfold,
}

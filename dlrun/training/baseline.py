"""``evaluation: {protocol: baseline}`` — no model: the data source's common-sense baseline.

The book measures one before training anything (6.3.3, Listing 6.35): a time series' latest
value as the forecast, its MAE on the validation windows (0.29 normalized, 2.57 °C on Jena).
A model is worth training only if it beats this number.
"""

from __future__ import annotations


def run_baseline(ctx) -> dict[str, float]:
    """Compute the baseline metrics of ``ctx.dataset`` (a StreamedDataset), record them in the
    run directory and MLflow, report them, and return them."""
    from dlrun.errors import UsageError

    extra = getattr(ctx.dataset, "extra_metrics", None)
    if extra is None:
        raise UsageError("evaluation.protocol: baseline needs a data source with a baseline "
                         "(data.source: timeseries_csv)")
    metrics = {k: float(v) for k, v in extra({}).items()}
    fitted = getattr(ctx.dataset, "fitted", None)
    if fitted:
        ctx.run_dir.write_json("preprocessing.json", fitted)  # the std behind *_original_units
    ctx.run_dir.write_json("metrics.json", metrics)
    if ctx.tracked is not None:
        ctx.tracked.log_metrics(metrics)
    ctx.reporter.job_finished("baseline", metrics)
    return metrics

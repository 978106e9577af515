"""One metric from several runs on one set of axes (the book's Figures 4.4–4.7: the reference
network's validation loss as crosses, each variant's as dots).

Drawn on matplotlib's Agg canvas directly, never through pyplot (see :mod:`dlrun.track.plots`);
matplotlib is imported inside the function only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from dlrun.track.plots import smooth_curve

# The first run (the reference) gets the book's '+'; the others its 'o', then other shapes.
_MARKERS = ("+", "o", "s", "^", "v", "D", "x", "*", "P", "h")
_ACRONYMS = {"mae": "MAE", "mse": "MSE", "rmse": "RMSE", "auc": "AUC", "mape": "MAPE"}


def metric_label(metric: str) -> str:
    """``val_loss`` → ``Validation loss``, ``val_mae`` → ``Validation MAE``, ``loss`` → ``Training loss``."""
    if metric.startswith("val_"):
        prefix, base = "Validation", metric[4:]
    elif metric.startswith("test_"):
        prefix, base = "Test", metric[5:]
    else:
        prefix, base = "Training", metric
    words = " ".join(_ACRONYMS.get(w, w) for w in base.split("_"))
    return f"{prefix} {words}"


def plot_overlay(
    curves: Mapping[str, Sequence[float]], metric: str, path: Path, *, smooth: float | None = None,
    title: str | None = None,
) -> Path:
    """Draw :func:`overlay_figure` into the PNG ``path`` (folders created); returns ``path``."""
    fig = overlay_figure(curves, metric, smooth=smooth, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def overlay_figure(
    curves: Mapping[str, Sequence[float]], metric: str, *, smooth: float | None = None, title: str | None = None,
):
    """One marked line per run (label → one value per epoch, epochs 1-based). ``smooth`` applies
    the book's exponential moving average (:func:`smooth_curve`) before drawing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    drawn = 0
    for i, (label, values) in enumerate(curves.items()):
        points = [float(v) for v in values]
        if smooth:
            points = smooth_curve(points, smooth)
        if not points:
            continue
        marker = _MARKERS[i % len(_MARKERS)]
        ax.plot(range(1, len(points) + 1), points, marker=marker, linestyle="-", linewidth=0.8,
                markersize=8 if marker == "+" else 5, markeredgewidth=1.5 if marker == "+" else 1.0,
                color=f"C{i % 10}", label=label)
        drawn += sum(1 for p in points if not math.isnan(p))
    name = metric_label(metric)
    ax.set_xlabel("Epochs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(name + (f" (smoothed, factor {smooth:g})" if smooth else ""))
    ax.set_title(title or name)
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no values recorded", ha="center", va="center", transform=ax.transAxes)
    return fig

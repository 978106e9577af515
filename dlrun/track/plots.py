"""Training curves as PNG files (the book's Figures 3.7–3.9).

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``), never through pyplot: no window, no global backend switch, so a notebook's
own backend is left alone and nothing leaks between calls. matplotlib is imported inside the
functions only.

Keys that are not training metrics — the learning rate Keras logs (``learning_rate``/``lr``)
when a schedule or ReduceLROnPlateau is used — get their own last panel on a log scale
instead of being mixed with the metrics. A first epoch far above the rest (a loss that starts
at 40 and settles near 2) is drawn cut at the top of the panel with its value written there, so
the epochs that matter keep the panel's height.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

_SCHEDULE_KEYS = ("learning_rate", "lr")
_SKIP_KEYS = ("epoch",)


def smooth_curve(points: Sequence[float], factor: float = 0.9) -> list[float]:
    """Exponential moving average (the book's Listing 3.30).

    Each point becomes ``previous * factor + point * (1 - factor)``; the first is kept.
    A NaN point repeats the previous smoothed value instead of poisoning the rest.
    """
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"smoothing factor must be in [0, 1), got {factor}")
    smoothed: list[float] = []
    for point in points:
        point = float(point)
        if smoothed and not math.isnan(smoothed[-1]):
            previous = smoothed[-1]
            smoothed.append(previous if math.isnan(point) else previous * factor + point * (1 - factor))
        else:
            smoothed.append(point)
    return smoothed


def _panels(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """Metric base names (loss first, then first-seen order) and schedule keys present."""
    bases: list[str] = []
    schedules: list[str] = []
    for key in keys:
        if key in _SKIP_KEYS:
            continue
        if key in _SCHEDULE_KEYS:
            schedules.append(key)
            continue
        base = key[4:] if key.startswith("val_") else key
        if base not in bases:
            bases.append(base)
    if "loss" in bases:
        bases.remove("loss")
        bases.insert(0, "loss")
    return bases, schedules


# Panels of a fixed size laid out with fixed margins (inches): room for 7-character tick labels and
# a y label on the left, the panel's title and the figure's title above. matplotlib's constrained
# layout measured every text before drawing: the quickstart's PNG took 0.49 s with it, 0.29 s without.
PANEL_WIDTH, PANEL_HEIGHT = 4.8, 3.6
LEFT, RIGHT, BETWEEN_COLUMNS = 0.95, 0.2, 1.15
TOP, BOTTOM, BETWEEN_ROWS = 0.75, 0.55, 1.0


def _figure(n_panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(n_panels, 3) or 1
    nrows = max(1, math.ceil(n_panels / ncols))
    width, height = PANEL_WIDTH * ncols, PANEL_HEIGHT * nrows
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes_width = (width - LEFT - RIGHT - BETWEEN_COLUMNS * (ncols - 1)) / ncols
    axes_height = (height - TOP - BOTTOM - BETWEEN_ROWS * (nrows - 1)) / nrows
    fig.subplots_adjust(left=LEFT / width, right=1 - RIGHT / width, bottom=BOTTOM / height, top=1 - TOP / height,
                        wspace=BETWEEN_COLUMNS / axes_width, hspace=BETWEEN_ROWS / axes_height)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for extra in axes[n_panels:]:
        extra.set_visible(False)
    return fig, axes


_ACRONYMS = {"mae": "MAE", "mse": "MSE", "rmse": "RMSE", "auc": "AUC", "mape": "MAPE"}


def _label(base: str) -> str:
    """``mae`` → ``MAE``, ``binary_accuracy`` → ``Binary accuracy``."""
    words = [_ACRONYMS.get(w, w) for w in base.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("Epochs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def _clip_first_epoch(ax, curves: list[list[float]], baseline: float | None = None) -> None:
    """When the first epoch of the panel's curves is far above every later point (more than the
    later points' whole range above them), cut the y axis just above the later points and write
    the first epoch's value at the top: otherwise it squeezes the rest into a flat line."""
    later = [v for c in curves for v in c[1:] if math.isfinite(v)] + ([baseline] if baseline is not None else [])
    first = [c[0] for c in curves if c and math.isfinite(c[0])]
    if len(later) < 2 or not first:
        return
    low, high = min(later + first), max(later)
    span = high - min(later) or abs(high) or 1.0
    if max(first) <= high + span:
        return
    top = high + 0.15 * span
    ax.set_ylim(low - 0.05 * span, top)
    ax.annotate(f"epoch 1: {max(first):.4g} ↑", xy=(1, top), xytext=(4, -12), textcoords="offset points",
                fontsize=8, color="C3")


def plot_history(history: Mapping[str, Sequence[float]], path: Path, title: str,
                 baselines: Mapping[str, float] | None = None) -> Path:
    """:func:`history_figure` saved as a PNG at ``path``; returns ``path``."""
    return _save(history_figure(history, title, baselines), path)


def history_figure(history: Mapping[str, Sequence[float]], title: str, baselines: Mapping[str, float] | None = None):
    """One panel per metric (loss first): training ``x`` as dots, validation ``val_x`` as a
    line, epochs 1-based. A learning-rate key gets its own log-scale panel. ``baselines``: a
    value per panel (``{"mae": 0.29}``) drawn as a dashed level line — a time series'
    common-sense baseline, which the model has to beat."""
    bases, schedules = _panels(list(history))
    baselines = baselines or {}
    fig, axes = _figure(len(bases) + len(schedules) or 1)
    for ax, base in zip(axes, bases):
        curves = []
        for key, style, label in ((base, "o", "Training"), (f"val_{base}", "-", "Validation")):
            values = history.get(key)
            if values is None or len(values) == 0:
                continue
            epochs = range(1, len(values) + 1)
            curves.append([float(v) for v in values])
            ax.plot(epochs, curves[-1], style, color="C0", markersize=3, label=label)
        if base in baselines:
            ax.axhline(baselines[base], color="C2", linestyle="--",
                       label=f"Common-sense baseline ({baselines[base]:.4g})")
        _clip_first_epoch(ax, curves, baselines.get(base))
        label = _label(base)
        ax.set_title(f"Training and validation {label if label.isupper() else label.lower()}")
        _epoch_axis(ax)
        ax.set_ylabel(label)
        ax.legend()
    for ax, key in zip(axes[len(bases):], schedules):
        values = [float(v) for v in history[key]]
        ax.plot(range(1, len(values) + 1), values, "-", color="C2", drawstyle="steps-post")
        if values and all(v > 0 for v in values if not math.isnan(v)):
            ax.set_yscale("log")
        ax.set_title("Learning rate")
        _epoch_axis(ax)
    if not bases and not schedules:
        axes[0].text(0.5, 0.5, "no epochs recorded", ha="center", va="center")
    fig.suptitle(title)
    return fig


def plot_kfold_curves(
    mean: Mapping[str, Sequence[float]],
    std: Mapping[str, Sequence[float]],
    path: Path,
    title: str,
    best_epoch: int | None = None,
    smooth: bool = False,
    *,
    skip_first: int = 0,
    factor: float = 0.9,
) -> Path:
    """Per-epoch averages over folds with a ±std band (the book's Listing 3.29/Figure 3.9).

    ``mean``/``std`` map history keys (``val_mae``, ``mae``…) to one value per epoch. Each metric
    gets a panel: validation solid, training dashed, each with its band. ``best_epoch``
    (1-based) is marked with a vertical line. ``smooth`` applies :func:`smooth_curve` to the
    mean and to the band edges; ``skip_first`` drops the first epochs from the plot (the book
    drops 10), keeping the epoch numbers right.
    """
    bases, _ = _panels([k for k in mean if k not in _SCHEDULE_KEYS])
    fig, axes = _figure(len(bases) or 1)
    for ax, base in zip(axes, bases):
        shown: list[list[float]] = []
        for key, style, label in ((f"val_{base}", "-", "Validation"), (base, "--", "Training")):
            if key not in mean or len(mean[key]) == 0:
                continue
            mu = [float(v) for v in mean[key]]
            sd = [float(v) for v in std.get(key, [0.0] * len(mu))]
            sd = (sd + [0.0] * len(mu))[: len(mu)]
            low = [m - s for m, s in zip(mu, sd)]
            high = [m + s for m, s in zip(mu, sd)]
            if smooth:
                mu, low, high = (smooth_curve(c, factor) for c in (mu, low, high))
            start = min(max(0, skip_first), len(mu))
            epochs = list(range(start + 1, len(mu) + 1))
            color = "C0" if key.startswith("val_") else "C1"
            ax.plot(epochs, mu[start:], style, color=color, label=f"{label} (mean)")
            ax.fill_between(epochs, low[start:], high[start:], color=color, alpha=0.2, label="± std")
            shown.append(mu[start:])
            if key.startswith("val_") and best_epoch is not None and start < best_epoch <= len(mu):
                ax.plot([best_epoch], [mu[best_epoch - 1]], "o", color="C3")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="C3", linestyle=":", label=f"best epoch {best_epoch}")
        if not skip_first:
            _clip_first_epoch(ax, shown)
        ax.set_title(f"{_label(base)} across folds")
        _epoch_axis(ax)
        ax.set_ylabel(_label(base))
        ax.legend()
    if not bases:
        axes[0].text(0.5, 0.5, "no epochs recorded", ha="center", va="center")
    fig.suptitle(title + (" (smoothed)" if smooth else ""))
    return _save(fig, path)

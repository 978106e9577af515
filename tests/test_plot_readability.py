"""Learning curves a user can read: a first epoch far above the rest does not flatten them, and a
time series' plot shows the common-sense baseline the model has to beat (book 6.3.3)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import dlrun

sys.path.insert(0, str(Path(__file__).parent))
from test_timeseries_recipes import jena_like, tiny  # noqa: E402,F401 - the fixture and its overrides

SPIKE = {"loss": [48.0, 2.1, 1.6, 1.4, 1.3], "val_loss": [9.0, 2.0, 1.7, 1.5, 1.5],
         "mae": [30.0, 1.2, 1.0, 0.9, 0.8], "val_mae": [5.0, 1.1, 1.0, 0.95, 0.9]}


def _panel(fig, title_word: str):
    (ax,) = [a for a in fig.axes if a.get_visible() and title_word in a.get_title().lower()]
    return ax


def test_a_first_epoch_far_above_the_rest_is_cut_and_labelled():
    from dlrun.track.plots import history_figure

    loss = _panel(history_figure(SPIKE, "spike"), "loss")
    low, high = loss.get_ylim()
    assert high < 3.0 and low < 1.3  # the later epochs fill the panel, 48 does not flatten them
    assert any(t.get_text() == "epoch 1: 48 ↑" for t in loss.texts)
    calm = _panel(history_figure({"loss": [2.0, 1.6, 1.4], "val_loss": [2.1, 1.8, 1.7]}, "calm"), "loss")
    assert calm.get_ylim()[1] >= 2.1 and not calm.texts  # nothing cut where nothing sticks out


def test_kfold_curves_cut_the_first_epoch_too(tmp_path):
    from dlrun.track import plots

    seen = {}
    original = plots._save
    plots._save = lambda fig, path: seen.setdefault("fig", fig) and original(fig, path)
    try:
        plots.plot_kfold_curves({"val_mae": SPIKE["val_mae"], "mae": SPIKE["mae"]}, {}, tmp_path / "k.png", "k")
    finally:
        plots._save = original
    assert _panel(seen["fig"], "mae").get_ylim()[1] < 2.0


def test_a_time_series_run_draws_its_common_sense_baseline(jena_like, tmp_path, recipes_dir, monkeypatch):  # noqa: F811
    from dlrun.track import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or Path(path))
    summary = dlrun.train(recipes_dir / "jena_dense.yaml", [*tiny(jena_like), "fit.epochs=2", "fit.steps_per_epoch=2",
                                                                  "fit.validation_steps=2"],
                          output_root=tmp_path / "out")
    baseline = summary.metrics["val_baseline_mae"]
    (fig,) = figures
    for title in ("loss", "mae"):  # jena_dense's loss is the MAE too
        lines = [line for line in _panel(fig, title).get_lines() if "baseline" in str(line.get_label()).lower()]
        assert len(lines) == 1 and lines[0].get_ydata()[0] == pytest.approx(baseline), title


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("history", [
    {"loss": [0.61, 0.32, 0.25], "val_loss": [0.4, 0.3, 0.28], "accuracy": [0.8, 0.9, 0.93],
     "val_accuracy": [0.85, 0.9, 0.92]},
    {"loss": [2e-5, 1.5e-5, 1.2e-5], "val_loss": [2.2e-5, 1.9e-5, 1.7e-5], "mae": [123456.0, 98765.0, 87654.0],
     "val_mae": [130000.0, 99000.0, 91000.0], "binary_accuracy": [0.5, 0.6, 0.7], "auc": [0.7, 0.8, 0.9],
     "learning_rate": [1e-3, 5e-4, 2.5e-4]},
], ids=["two panels", "five panels on two rows"])
def test_panels_keep_their_labels_inside_the_figure_and_apart(history):
    from dlrun.track.plots import history_figure

    fig = history_figure(history, "a run — holdout")
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_visible()]
    title = fig._suptitle.get_window_extent(renderer)
    for ax in panels:
        outer = ax.get_tightbbox(renderer)  # the panel with its ticks, labels, title and legend
        assert fig.bbox.x0 - 1 <= outer.x0 and outer.x1 <= fig.bbox.x1 + 1, ax.get_title()
        assert fig.bbox.y0 - 1 <= outer.y0 and outer.y1 <= fig.bbox.y1 + 1, ax.get_title()
        assert not _overlaps(outer, title), ax.get_title()
        for other in panels:
            if other is not ax:
                assert not _overlaps(outer, other.get_tightbbox(renderer)), (ax.get_title(), other.get_title())

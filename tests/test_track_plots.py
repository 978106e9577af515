"""Plots: valid PNG files, smoothing like the book's Listing 3.30, no pyplot state."""

from __future__ import annotations

import math
import sys

import pytest

pytest.importorskip("matplotlib")

from dlrun.track.plots import plot_history, plot_kfold_curves, smooth_curve  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_history(tmp_path):
    history = {
        "loss": [0.6, 0.4, 0.3, 0.25],
        "accuracy": [0.7, 0.8, 0.85, 0.9],
        "val_loss": [0.65, 0.5, 0.45, 0.5],
        "val_accuracy": [0.68, 0.75, 0.8, 0.79],
        "learning_rate": [1e-3, 1e-3, 5e-4, 5e-4],
    }
    path = plot_history(history, tmp_path / "plots" / "history.png", "IMDB, dense")
    assert path == tmp_path / "plots" / "history.png"
    width, height = png_size(path)
    assert width > 0 and height > 0 and path.stat().st_size > 1000
    if "matplotlib.pyplot" in sys.modules:  # imported by another library, not by us
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []  # no figure left open


def test_plot_history_odd_inputs(tmp_path):
    only_val = plot_history({"val_mae": [3.0, math.nan, 2.5]}, tmp_path / "a.png", "val only")
    png_size(only_val)
    empty = plot_history({}, tmp_path / "b.png", "nothing yet")
    png_size(empty)
    single = plot_history({"loss": [1.0]}, tmp_path / "c.png", "one epoch")
    png_size(single)


def test_plot_kfold_curves(tmp_path):
    mean = {"val_mae": [4.0, 3.0, 2.6, 2.5, 2.55], "mae": [4.5, 3.2, 2.4, 2.1, 1.9]}
    std = {"val_mae": [0.5, 0.4, 0.3, 0.3, 0.35], "mae": [0.2, 0.1, 0.1, 0.1, 0.1]}
    plain = plot_kfold_curves(mean, std, tmp_path / "kfold.png", "Boston, 4 folds", best_epoch=4)
    smoothed = plot_kfold_curves(
        mean, std, tmp_path / "kfold_smooth.png", "Boston", best_epoch=4, smooth=True, skip_first=1
    )
    for path in (plain, smoothed):
        width, height = png_size(path)
        assert width > 0 and height > 0
    nothing = plot_kfold_curves({}, {}, tmp_path / "none.png", "empty")
    png_size(nothing)


def test_smooth_curve_matches_the_book():
    def book(points, factor=0.9):  # Listing 3.30, verbatim
        smoothed_points = []
        for point in points:
            if smoothed_points:
                previous = smoothed_points[-1]
                smoothed_points.append(previous * factor + point * (1 - factor))
            else:
                smoothed_points.append(point)
        return smoothed_points

    points = [5.0, 3.0, 4.0, 2.0, 2.5, 1.0]
    assert smooth_curve(points) == pytest.approx(book(points))
    assert smooth_curve(points, factor=0.5) == pytest.approx(book(points, 0.5))
    assert smooth_curve(points, factor=0.0) == points
    assert smooth_curve([]) == []
    assert smooth_curve([1.0, math.nan, 3.0])[:2] == [1.0, 1.0]  # NaN does not poison the rest
    with pytest.raises(ValueError):
        smooth_curve(points, factor=1.0)

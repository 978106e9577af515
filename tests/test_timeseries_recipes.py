"""The book's Jena recipes (6.3, 6.4): their settings, and each one run end to end for one short
epoch on a tiny generated CSV with the Jena columns (the real file is not to be had offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dlrun
from dlrun.errors import RecipeError
from dlrun.recipe.loading import load_recipe

JENA = ["jena_baseline", "jena_dense", "jena_gru", "jena_gru_dropout", "jena_stacked_gru", "jena_reversed_gru",
        "jena_bidirectional_gru", "jena_conv1d", "jena_conv1d_gru"]
COLUMNS = ["p (mbar)", "T (degC)", "Tpot (K)", "Tdew (degC)", "rh (%)", "VPmax (mbar)", "VPact (mbar)",
           "VPdef (mbar)", "sh (g/kg)", "H2OC (mmol/mol)", "rho (g/m**3)", "wv (m/s)", "max. wv (m/s)", "wd (deg)"]


@pytest.fixture(scope="module")
def jena_like(tmp_path_factory) -> Path:
    """400 ten-minute rows in the Jena layout: a daily temperature cycle and noisy other columns."""
    rng = np.random.default_rng(0)
    rows = 400
    times = pd.date_range("2009-01-01 00:10", periods=rows, freq="10min").strftime("%d.%m.%Y %H:%M:%S")
    table = {"Date Time": times}
    for i, name in enumerate(COLUMNS):
        table[name] = rng.normal(i, 1 + i / 10, rows)
    table["T (degC)"] = 5 + 8 * np.sin(np.arange(rows) * 2 * np.pi / 144) + rng.normal(0, 0.5, rows)
    path = tmp_path_factory.mktemp("jena") / "jena_climate_2009_2016.csv"
    pd.DataFrame(table).to_csv(path, index=False)
    return path


def tiny(path: Path) -> list[str]:
    """Overrides: the tiny file, 64-row windows (the convnets' three poolings need ~61), 2 batches."""
    return [f"data.path={path}", "data.lookback=64", "data.step=1", "data.delay=4",
            "data.train={start: 0, end: 200}", "data.validation={start: 200, end: 300}", "data.test={start: 300}",
            "fit.batch_size=16"]


@pytest.mark.parametrize("name", JENA)
def test_recipes_keep_the_books_settings(recipes_dir, name):
    recipe = load_recipe(recipes_dir / f"{name}.yaml", require_data=False).recipe
    data = recipe.data
    assert recipe.name == name and Path(data.path).name == "jena_climate_2009_2016.csv"
    assert (data.time_column, data.target, data.delay) == ("Date Time", "T (degC)", 144)
    assert (data.lookback, data.step) == ((720, 3) if name == "jena_conv1d_gru" else (1440, 6))
    assert (data.train.start, data.train.end, data.validation.start, data.validation.end, data.test.start,
            data.test.end) == (0, 200000, 200001, 300000, 300001, None)
    assert data.normalize and data.reverse == (name == "jena_reversed_gru") and recipe.fit.batch_size == 128
    text = (recipes_dir / f"{name}.yaml").read_text()
    assert text.startswith("# Deep Learning with Python, 6.")
    if name == "jena_baseline":
        assert recipe.evaluation.protocol == "baseline" and recipe.model is None
        return
    assert recipe.evaluation.protocol == "holdout"
    assert recipe.compile.loss.name == "mae" and recipe.compile.optimizer.name.lower() == "rmsprop"
    assert recipe.fit.steps_per_epoch == 500
    assert recipe.fit.validation_steps == (300000 - 200001 - data.lookback) // 128  # the book's val_steps
    epochs = 40 if name in ("jena_gru_dropout", "jena_stacked_gru", "jena_bidirectional_gru") else 20
    assert recipe.fit.epochs == epochs


def test_the_baseline_recipe_runs_without_a_model(recipes_dir, jena_like, tmp_path):
    summary = dlrun.train(recipes_dir / "jena_baseline.yaml", tiny(jena_like), output_root=tmp_path)
    metrics = summary.metrics
    assert set(metrics) == {"val_baseline_mae", "test_baseline_mae", "val_baseline_mae_original_units",
                            "test_baseline_mae_original_units"}
    run = Path(summary.run_dir)
    assert json.loads((run / "metrics.json").read_text()) == pytest.approx(metrics)
    std = json.loads((run / "preprocessing.json").read_text())["target_std"]
    assert metrics["val_baseline_mae_original_units"] == pytest.approx(metrics["val_baseline_mae"] * std)
    parts = json.loads((run / "data.json").read_text())["parts"]
    assert parts["validation"]["rows"] == [200, 300] and parts["validation"]["windows"] == 300 - 200 - 64 - 4
    assert not (run / "model.keras").exists()


@pytest.mark.parametrize("name", JENA[1:])
def test_each_model_recipe_trains_one_short_epoch(recipes_dir, jena_like, tmp_path, name):
    overrides = [*tiny(jena_like), "fit.epochs=1", "fit.steps_per_epoch=2", "fit.validation_steps=2"]
    summary = dlrun.train(recipes_dir / f"{name}.yaml", overrides, output_root=tmp_path)
    assert summary.status == "FINISHED" and summary.protocol == "holdout"
    assert summary.metrics["best_epoch"] == 1 and "final_val_mae" in summary.metrics  # the run's summary
    metrics = json.loads((Path(summary.run_dir) / "metrics.json").read_text())  # the job's final evaluations
    for key in ("val_mae", "test_mae", "val_baseline_mae", "test_baseline_mae"):
        assert np.isfinite(metrics[key]), key
        assert summary.metrics.get(key, summary.metrics.get(f"final_{key}")) == pytest.approx(metrics[key])
    std = json.loads((Path(summary.run_dir) / "preprocessing.json").read_text())["target_std"]
    assert metrics["val_mae_original_units"] == pytest.approx(metrics["val_mae"] * std)
    assert metrics["test_baseline_mae_original_units"] == pytest.approx(metrics["test_baseline_mae"] * std)


def test_a_recipe_without_its_data_is_refused_before_anything_runs(recipes_dir, tmp_path):
    with pytest.raises(RecipeError, match="data.path: no such file: .*jena_climate_2009_2016.csv"):
        dlrun.train(recipes_dir / "jena_baseline.yaml", [f"data.path={tmp_path}/jena_climate_2009_2016.csv"],
                    output_root=tmp_path)

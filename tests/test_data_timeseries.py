"""``source: timeseries_csv``: the book's windows (6.3), chronological parts, training-only
normalization, the common-sense baseline, missing values and the errors users see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter

from dlrun.data import timeseries
from dlrun.data.timeseries import load_timeseries
from dlrun.data.windows import Windows
from dlrun.errors import DataError
from dlrun.recipe.schema import DataSpec


def spec(**fields):
    return TypeAdapter(DataSpec).validate_python({"source": "timeseries_csv", **fields})


def write_csv(path: Path, table: dict) -> Path:
    pd.DataFrame(table).to_csv(path, index=False)
    return path


def ramp_csv(tmp_path, rows=12) -> Path:
    """Column ``a`` is the row number, ``b`` = 100 + 10 × row: every value says where it came from."""
    r = np.arange(rows)
    return write_csv(tmp_path / "ramp.csv", {"a": r, "b": 100 + 10 * r})


def load(path, batch_size=64, seed=0, **fields):
    defaults = {"path": str(path), "target": "b", "lookback": 4, "step": 2, "delay": 1, "train": {"start": 0},
                "normalize": False, "shuffle": False}
    return load_timeseries(spec(**{**defaults, **fields}), path.parent, seed=seed, batch_size=batch_size)


def arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------- windows


def test_windows_follow_the_books_listing_by_hand(tmp_path):
    # lookback 4, step 2, delay 1 over rows 0…11: i runs 4…10; samples rows i-4, i-2; target row i+1.
    x, y = arrays(load(ramp_csv(tmp_path)).train())
    assert x.shape == (7, 2, 2) and y.shape == (7,)
    assert x[0].tolist() == [[0, 100], [2, 120]] and y[0] == 150
    assert x[-1].tolist() == [[6, 160], [8, 180]] and y[-1] == 210  # target = the last row, 11
    assert x[:, :, 0].tolist() == [[i - 4, i - 2] for i in range(4, 11)]


def test_windows_match_keras_timeseries_dataset_from_array(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    path = write_csv(tmp_path / "noise.csv", {"a": rng.normal(size=200), "b": rng.normal(size=200)})
    lookback, step, delay = 12, 3, 5
    x, y = arrays(load(path, lookback=lookback, step=step, delay=delay, batch_size=16).train())
    data = pd.read_csv(path).to_numpy().astype(np.float32)
    # Keras' window starting at s is our row i = s + lookback; its target sits at s + lookback + delay.
    reference = keras.utils.timeseries_dataset_from_array(
        data, data[lookback + delay:, 1], sequence_length=lookback // step, sampling_rate=step, batch_size=16)
    rx, ry = arrays(reference)
    assert len(x) == 200 - lookback - delay
    np.testing.assert_array_equal(x, rx[: len(x)])
    np.testing.assert_array_equal(y, ry[: len(y)])


def books_generator(data, lookback, delay, min_index, max_index, batch_size, step):
    """Listing 6.33 without shuffling (the book's own code, one pass)."""
    i = min_index + lookback
    while i + batch_size < max_index:
        rows = np.arange(i, min(i + batch_size, max_index))
        i += len(rows)
        samples = np.zeros((len(rows), lookback // step, data.shape[-1]))
        targets = np.zeros((len(rows),))
        for j, row in enumerate(rows):
            samples[j] = data[range(rows[j] - lookback, rows[j], step)]
            targets[j] = data[rows[j] + delay][1]
        yield samples, targets


def test_windows_equal_the_books_generator_where_its_targets_stay_in_the_part(tmp_path):
    rng = np.random.default_rng(1)
    path = write_csv(tmp_path / "s.csv", {"a": rng.normal(size=300), "b": rng.normal(size=300)})
    data = pd.read_csv(path).to_numpy().astype(np.float32)
    x, y = arrays(load(path, lookback=24, step=6, delay=8, batch_size=10, train={"start": 0, "end": 300}).train())
    # The book's default max_index for the last part, len(data) - delay - 1, keeps its targets inside.
    bx, by = map(np.concatenate, zip(*books_generator(data, 24, 8, 0, 300 - 8 - 1, 10, 6)))
    assert len(bx) == 260 and len(x) == 300 - 24 - 8  # the book drops its last partial batch
    np.testing.assert_allclose(x[:260], bx)
    np.testing.assert_allclose(y[:260], by)


def test_lookback_not_a_multiple_of_step_takes_every_step_th_row(tmp_path):
    x, _ = arrays(load(ramp_csv(tmp_path, 20), lookback=5, step=2, delay=0).train())
    assert x[0, :, 0].tolist() == [0, 2, 4]  # rows i-5, i-3, i-1 of i = 5, as data[i-5:i:2]


def test_reverse_feeds_each_window_latest_first(tmp_path):
    path = ramp_csv(tmp_path)
    x, y = arrays(load(path).train())
    rx, ry = arrays(load(path, reverse=True).train())
    np.testing.assert_array_equal(rx, x[:, ::-1, :])
    np.testing.assert_array_equal(ry, y)


def test_training_windows_reshuffle_each_pass_with_the_seed(tmp_path):
    path = ramp_csv(tmp_path, 400)
    ordered = arrays(load(path).train())[1]
    shuffled = load(path, shuffle=True, seed=3, batch_size=32)
    first, second = arrays(shuffled.train())[1], arrays(shuffled.train().repeat(2))[1]
    assert sorted(first.tolist()) == ordered.tolist()
    assert first.tolist() != ordered.tolist() and second[: len(first)].tolist() != second[len(first):].tolist()
    again = arrays(load(path, shuffle=True, seed=3, batch_size=32).train())[1]
    assert again.tolist() == first.tolist()  # seeded
    validation = load(path, shuffle=True, train={"end": 200}, validation={"start": 200}).validation()
    assert arrays(validation)[1].tolist() == sorted(arrays(validation)[1].tolist())  # never shuffled


# --------------------------------------------------------------------------- parts


def test_chronological_parts_never_share_a_row(tmp_path):
    path = write_csv(tmp_path / "r.csv", {"a": np.arange(100), "b": np.arange(100)})
    ds = load(path, lookback=10, step=2, delay=5, train={"end": 40}, validation={"start": 40, "end": 70},
              test={"start": 70}, batch_size=8)
    used = {}
    for name in ("train", "validation", "test"):
        x, y = arrays(getattr(ds, name)())  # column a and the target are the row numbers
        used[name] = (min(x.min(), y.min()), max(x.max(), y.max()))
    assert used["train"] == (0, 39) and used["validation"] == (40, 69) and used["test"] == (70, 99)
    parts = ds.info["parts"]
    assert parts["train"]["targets"][1] < parts["validation"]["samples"][0]
    assert parts["validation"]["targets"][1] < parts["test"]["samples"][0]
    assert [parts[p]["windows"] for p in ("train", "validation", "test")] == [25, 15, 15]


def test_fractions_resolve_to_rows(tmp_path):
    ds = load(ramp_csv(tmp_path, 100), train={"end": 0.5}, validation={"start": 0.5, "end": 0.8}, test={"start": 0.8})
    assert [ds.info["parts"][p]["rows"] for p in ("train", "validation", "test")] == [[0, 50], [50, 80], [80, 100]]


def test_normalization_statistics_come_from_the_training_rows_only(tmp_path):
    b = np.r_[np.full(50, 10.0), np.full(50, 20.0)] + np.tile([-1.0, 1.0], 50)  # train mean 10, std 1
    path = write_csv(tmp_path / "n.csv", {"a": np.arange(100.0), "b": b})
    ds = load(path, normalize=True, lookback=2, step=1, delay=0, train={"end": 50}, validation={"start": 50})
    assert ds.fitted["mean"]["b"] == pytest.approx(10.0) and ds.fitted["std"]["b"] == pytest.approx(1.0)
    assert ds.fitted["mean"]["a"] == pytest.approx(24.5) and ds.fitted["fitted_on_rows"] == [0, 50]
    assert ds.fitted["target_std"] == pytest.approx(1.0)
    _, y = arrays(ds.validation())
    np.testing.assert_allclose(y, b[52:] - 10.0, atol=1e-6)  # validation scaled with the training statistics


# --------------------------------------------------------------------------- baseline


def test_baseline_mae_on_a_ramp(tmp_path):
    # Target = 100 + 10 r; the latest sample row is i - 2, the target row i + 1: off by 30.
    path = ramp_csv(tmp_path, 60)
    ds = load(path, train={"end": 20}, validation={"start": 20, "end": 40}, test={"start": 40})
    assert ds.extra_metrics({}) == {"val_baseline_mae": 30.0, "test_baseline_mae": 30.0,
                                    "val_baseline_mae_original_units": 30.0,
                                    "test_baseline_mae_original_units": 30.0}
    normalized = load(path, normalize=True, train={"end": 20}, validation={"start": 20, "end": 40})
    std = float(np.std(100 + 10 * np.arange(20)))
    extra = normalized.extra_metrics({"val_mae": 0.5, "final_val_loss": 0.4, "val_mape": 3.0})
    assert extra["val_baseline_mae"] == pytest.approx(30.0 / std)
    assert extra["val_baseline_mae_original_units"] == pytest.approx(30.0)
    assert extra["val_mae_original_units"] == pytest.approx(0.5 * std)
    assert "final_val_loss_original_units" not in extra and "val_mape_original_units" not in extra
    assert normalized.fitted["target_std"] == pytest.approx(std)
    # Reversed windows hold the same latest row (now first): the same baseline.
    assert load(path, reverse=True, train={"end": 20}, validation={"start": 20, "end": 40}).extra_metrics(
        {})["val_baseline_mae"] == 30.0


def test_baseline_is_computed_once(tmp_path, monkeypatch):
    calls = []
    real = timeseries.last_value_mae
    monkeypatch.setattr(timeseries, "last_value_mae", lambda *a: calls.append(1) or real(*a))
    ds = load(ramp_csv(tmp_path, 40), train={"end": 20}, validation={"start": 20})
    ds.extra_metrics({})
    ds.extra_metrics({"val_mae": 1.0})
    assert len(calls) == 1


def test_baseline_matches_a_hand_count_on_a_zigzag(tmp_path):
    target = np.array([0, 1, 0, 3, 0, 5, 0, 7, 0, 9], dtype=float)
    path = write_csv(tmp_path / "z.csv", {"b": target})
    ds = load(path, lookback=2, step=1, delay=0, train={"end": 5}, validation={"start": 5})
    # Validation rows 5…9: i = 7, 8, 9; latest rows 6, 7, 8 (values 0, 7, 0), targets 7, 0, 9.
    assert ds.extra_metrics({})["val_baseline_mae"] == pytest.approx((7 + 7 + 9) / 3)


# --------------------------------------------------------------------------- missing values


def gappy_csv(tmp_path) -> Path:
    b = np.arange(10.0)
    b[[0, 4, 5]] = np.nan
    return write_csv(tmp_path / "gappy.csv", {"a": np.arange(10.0), "b": b})


def test_missing_values_are_an_error_by_default(tmp_path):
    with pytest.raises(DataError, match=r"'b' 3.*on line 2.*data.missing: interpolate or drop"):
        load(gappy_csv(tmp_path), lookback=2, step=1, delay=0)


def test_missing_values_interpolate_linearly_and_hold_the_ends(tmp_path):
    ds = load(gappy_csv(tmp_path), lookback=1, step=1, delay=0, missing="interpolate", target="b", batch_size=20)
    x, y = arrays(ds.train())
    assert x[:, 0, 1].tolist() == [1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # 0 ← 1; 4, 5 on the line
    assert ds.info["missing"] == {"policy": "interpolate", "values": {"b": 3}, "longest_gap": {"b": 2}}
    (warning,) = ds.info["warnings"]  # 3 of 10 rows made up: said before training
    assert "column 'b'" in warning and "3 of its 10 rows (30%; the longest gap 2 rows)" in warning


def test_missing_values_drop_their_rows(tmp_path):
    ds = load(gappy_csv(tmp_path), lookback=1, step=1, delay=0, missing="drop", batch_size=20)
    x, _ = arrays(ds.train())
    assert x[:, 0, 0].tolist() == [1.0, 2.0, 3.0, 6.0, 7.0, 8.0]
    assert ds.info["rows"] == 7 and ds.info["missing"]["rows_dropped"] == 3


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fields, message", [
    ({"target": "bb"}, r"data.target: .* has no column 'bb' \(its columns: a, b\) — did you mean 'b'\?"),
    ({"columns": ["a", "c"]}, r"data.columns\[1\]: .* has no column 'c'"),
    ({"columns": ["a"]}, r"data.target: 'b' is not among data.columns"),
    ({"time_column": "when"}, r"data.time_column: .* has no column 'when'"),
    ({"train": {"end": 30}, "validation": {"start": 20}}, r"data.validation: rows \[20, 40\) start before "
                                                          r"data.train ends \(30\)"),
    ({"train": {"start": 20}, "validation": {"start": 0, "end": 20}}, r"data.validation: .*start before"),
    ({"train": {"end": 5}}, r"data.train: rows \[0, 5\) are 5 rows, too few for one window: .* = 6 rows"),
    ({"train": {"start": 10, "end": 5}}, r"data.train: end \(5\) must come after start \(10\)"),
    ({"train": {"end": 1.5}}, r"data.train.end: 1.5 is a float, read as a fraction"),
    ({"train": {"end": 41}}, r"data.train.end: row 41 is outside the series' 40 rows"),
])
def test_bad_settings_are_clear_data_errors(tmp_path, fields, message):
    with pytest.raises(DataError, match=message):
        load(ramp_csv(tmp_path, 40), **fields)


def test_a_non_numeric_column_is_named_with_its_line(tmp_path):
    path = write_csv(tmp_path / "t.csv", {"a": ["1", "2", "x", "4"] * 5, "b": np.arange(20.0), "s": ["q"] * 20})
    with pytest.raises(DataError, match=r"data.columns\[0\]: column 'a' .* not numeric \(e.g. 'x' on line 4\)"):
        load(path, columns=["a", "b"], lookback=2, step=1)
    with pytest.raises(DataError, match=r"data.target: column 's' .* not numeric"):
        load(path, target="s", lookback=2, step=1)
    ds = load(path, lookback=2, step=1)  # by default the non-numeric columns are left out, and said so
    assert ds.info["columns"] == ["b"] and ds.info["skipped_columns"] == ["a", "s"]


def test_a_missing_jena_file_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"does not exist .*jena_climate_2009_2016.csv.zip"):
        load_timeseries(spec(path="jena_climate_2009_2016.csv", target="T (degC)", lookback=2, train={}),
                        tmp_path, seed=0, batch_size=8)


# --------------------------------------------------------------------------- real files


def test_the_jena_header_and_time_stamps_parse(shared_datasets):
    path = shared_datasets / "jena_climate" / "jena_climate_2009_2016_first19rows.csv"
    ds = load(path, time_column="Date Time", target="T (degC)", lookback=6, step=3, delay=2, normalize=True,
              train={"end": 10}, validation={"start": 10})
    assert len(ds.info["columns"]) == 14 and ds.info["columns"][1] == "T (degC)"
    assert ds.info["time"] == {"column": "Date Time", "first": "2009-01-01 00:10:00",
                               "last": "2009-01-01 03:10:00", "in_order": True}
    x, y = next(iter(ds.train()))
    assert x.shape[1:] == (2, 14) and y.shape[1:] == ()
    with pytest.raises(DataError, match=r"did you mean 'T \(degC\)'"):
        load(path, time_column="Date Time", target="T (degc)", lookback=6, train={})


def test_nyc_weather_windows_and_baseline(shared_datasets, tmp_path):
    table = pd.read_csv(shared_datasets / "nyc_weather_2013" / "nycflights13_weather.csv.gz")
    jfk = table[table.origin == "JFK"].drop(columns=["origin", "year", "month", "day", "hour", "wind_gust"])
    path = tmp_path / "jfk.csv"
    jfk.to_csv(path, index=False)
    ds = load(path, time_column="time_hour", target="temp", lookback=240, step=6, delay=24, normalize=True,
              missing="interpolate", train={"end": 0.5}, validation={"start": 0.5, "end": 0.75}, test={"start": 0.75})
    assert ds.info["rows"] == 8706 and ds.info["sample_shape"] == [40, 8]
    assert ds.info["parts"]["validation"]["windows"] == 2177 - 240 - 24
    extra = ds.extra_metrics({})
    # A day ahead, temperature's last value is off by a few °F: a real, non-trivial baseline.
    assert 2.0 < extra["val_baseline_mae_original_units"] < 10.0
    in_units = extra["val_baseline_mae"] * ds.fitted["target_std"]
    assert in_units == pytest.approx(extra["val_baseline_mae_original_units"])


def test_importing_the_module_imports_no_tensorflow():
    code = ("import dlrun.data.timeseries, dlrun.training.baseline, sys; "
            "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_windows_geometry():
    w = Windows(lookback=1440, step=6, delay=144)
    assert w.length == 240 and w.offsets[-1] == -6 and w.span == 1585
    assert w.count(200001, 300000) == 98415  # the book's validation rows, targets kept inside

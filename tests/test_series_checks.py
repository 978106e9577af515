"""A time series that would be windowed wrong, as a user meets it: stations one after another (time
goes back), stations interleaved (times repeat), rows out of order (``data.sort: true``), columns
mostly made up by interpolation, steps beyond a part. Refused before training with the figures, or
said (even with --quiet) and recorded in data.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter

from dlrun.data.timeseries import load_timeseries
from dlrun.errors import DataError
from dlrun.recipe.schema import DataSpec

ROOT = Path(__file__).resolve().parent.parent

RECIPE = """\
name: weather
data:
  source: timeseries_csv
  path: {path}
  time_column: time
  target: temp
  lookback: 6
  delay: 2
  train: {{end: 0.6}}
  validation: {{start: 0.6, end: 0.8}}
  test: {{start: 0.8}}
model:
  layers:
    - Flatten
    - Dense: {{units: 1}}
compile: {{optimizer: rmsprop, loss: mae}}
fit:
  epochs: 1
  batch_size: 8
"""


def dlrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "dlrun", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def station(name: str, hours: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    time = pd.date_range("2024-01-01", periods=hours, freq="h")
    return pd.DataFrame({"station": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         "temp": np.sin(np.arange(hours) / 4) + rng.normal(0, 0.1, hours),
                         "pressure": 1000 + rng.normal(0, 5, hours)})


def test_stations_one_after_another_are_refused_naming_the_column_that_splits_them(tmp_path):
    pd.concat([station("EWR"), station("JFK", seed=1)]).to_csv(tmp_path / "stations.csv", index=False)
    (tmp_path / "weather.yaml").write_text(RECIPE.format(path="stations.csv"))
    refused = dlrun("train", "weather.yaml", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert (f"data.time_column: 'time' of {tmp_path / 'stations.csv'} goes back in time 1 time, first on line 62 "
            f"(2024-01-01 00:00:00 after 2024-01-03 11:00:00): the rows are not one series in time order (the column "
            f"'station' holds 2 values, EWR, JFK: one series each?) — give one series in time order, e.g. the rows "
            f"of one 'station', or set data.sort: true if they are one series in the wrong order") in refused.stderr
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_sorting_interleaves_stations_which_is_refused_too_and_steps_beyond_a_part_are_refused(tmp_path):
    pd.concat([station("EWR"), station("JFK", seed=1)]).to_csv(tmp_path / "stations.csv", index=False)
    (tmp_path / "weather.yaml").write_text(RECIPE.format(path="stations.csv"))
    interleaved = dlrun("train", "weather.yaml", "--set", "data.sort=true", cwd=tmp_path)
    assert interleaved.returncode == 2, interleaved.stderr
    assert ("60 of the 120 rows of " in interleaved.stderr and " repeat the time stamp of the row before once "
            "sorted (first on line 62: 2024-01-01 00:00:00): several series interleaved (the column 'station' "
            "holds 2 values" in interleaved.stderr)

    station("EWR").to_csv(tmp_path / "ewr.csv", index=False)
    (tmp_path / "ewr.yaml").write_text(RECIPE.format(path="ewr.csv") + "  validation_steps: 3\n")
    # validation rows [36, 48): 12 rows, 4 windows of lookback 6 + delay 2: one batch of 8.
    too_many = dlrun("train", "ewr.yaml", cwd=tmp_path)
    assert too_many.returncode == 2, too_many.stderr
    assert (f"{tmp_path / 'ewr.yaml'}:20:21: fit.validation_steps: 3 batches, but the validation part is 1 batch "
            f"(4 windows in batches of 8): Keras would run out of validation data") in too_many.stderr


@pytest.mark.slow
def test_rows_out_of_order_are_sorted_when_asked_and_made_up_values_are_said(tmp_path):
    table = station("EWR", hours=120)
    table.loc[table.index % 5 != 0, "pressure"] = np.nan  # 96 of 120 readings missing
    table.iloc[[10, 11]] = table.iloc[[11, 10]].to_numpy()  # two rows swapped
    table.to_csv(tmp_path / "ewr.csv", index=False)
    (tmp_path / "ewr.yaml").write_text(RECIPE.format(path="ewr.csv").replace("  delay: 2\n", "  delay: 2\n  sort: true\n"
                                                                             "  missing: interpolate\n")
                                       + "  steps_per_epoch: 20\n")
    run = dlrun("train", "ewr.yaml", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    said = [line.removeprefix("dlrun: warning: ") for line in run.stderr.splitlines() if line.startswith("dlrun: warning")]
    assert said[0] == (f"data.missing: column 'pressure' of {tmp_path / 'ewr.csv'} is interpolated over 96 of its "
                       f"120 rows (80%; the longest gap 4 rows): the model sees straight lines there — leave it out "
                       f"of data.columns if it should not count")
    # training rows [0, 72): 64 windows, 8 batches of 8 a pass
    assert said[1].startswith("fit.steps_per_epoch: 20 batches an epoch are 2.5 passes over the training part "
                              "(64 windows in 8 batches of 8)")
    (run_dir,) = (tmp_path / "artifacts" / "runs" / "weather").iterdir()
    data = json.loads((run_dir / "data.json").read_text())
    assert data["time"]["in_order"] is False and data["time"]["sorted"] is True and data["warnings"] == said
    assert data["missing"]["longest_gap"] == {"pressure": 4}


# --------------------------------------------------------------------------- the same, loaded directly


def load(path: Path, **fields):
    spec = {"source": "timeseries_csv", "path": str(path), "time_column": "time", "target": "temp", "lookback": 2,
            "train": {}, **fields}
    return load_timeseries(TypeAdapter(DataSpec).validate_python(spec), path.parent, seed=0, batch_size=8)


def test_a_few_repeated_times_are_said_and_a_mostly_made_up_target_is_refused(tmp_path):
    table = station("EWR")
    table.loc[30, "time"] = table.loc[29, "time"]  # a clock change: one hour twice
    table.to_csv(tmp_path / "dst.csv", index=False)
    (warning,) = load(tmp_path / "dst.csv").info["warnings"]
    assert "1 of the 60 rows of" in warning and "(first on line 32: 2024-01-02 05:00:00): repeated readings or " \
                                                  "a clock change" in warning

    table = station("EWR")
    table.loc[table.index % 3 != 0, "temp"] = np.nan
    table.to_csv(tmp_path / "gappy.csv", index=False)
    with pytest.raises(DataError, match=r"data.missing: interpolate would make up the target 'temp' of .*gappy.csv "
                                        r"over 40 of its 60 rows \(67%; the longest gap 2 rows\)"):
        load(tmp_path / "gappy.csv", missing="interpolate")
    dropped = load(tmp_path / "gappy.csv", missing="drop")
    assert dropped.info["warnings"][0].startswith("data.missing: drop removes 40 of the 60 rows of ")


def test_sort_needs_a_time_column():
    with pytest.raises(ValueError, match="sort: true sorts the rows by time: it needs data.time_column"):
        TypeAdapter(DataSpec).validate_python({"source": "timeseries_csv", "path": "x.csv", "target": "t",
                                               "lookback": 2, "train": {}, "sort": True})

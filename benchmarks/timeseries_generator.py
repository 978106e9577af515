"""The Jena GRU workflow (6.3.5): dlrun's tf.data windows vs. the book's Python generator.

Same series (NYC JFK hourly weather, or a synthetic one), same normalization (training rows), same
windows, same model (GRU(32) + Dense(1), or 6.3.4's dense one with --model dense; MAE, RMSprop),
same steps; one process. Prints per-epoch
seconds of both sides, their ratio, both validation MAEs, and the input pipelines alone (batches a
second, no model). Usage and results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from dlrun.report import Reporter

NYC = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "nyc_weather_2013" / "nycflights13_weather.csv.gz"
COLUMNS = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "precip", "pressure", "visib"]
TARGET = COLUMNS.index("temp")
# The same network on both sides: recipe layers for dlrun, Keras layers for the book's script.
MODELS = {
    "gru": ("[{GRU: {units: 32}}, {Dense: {units: 1}}]",  # 6.3.5
            lambda keras: [keras.layers.GRU(32), keras.layers.Dense(1)]),
    "dense": ("[Flatten, {Dense: {units: 32, activation: relu}}, {Dense: {units: 1}}]",  # 6.3.4
              lambda keras: [keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)]),
}


def series_csv(folder: Path) -> tuple[Path, str]:
    """JFK's 8,706 hourly rows (gaps interpolated), else a synthetic 8,760-hour year."""
    import pandas as pd

    path = folder / "series.csv"
    if NYC.is_file():
        table = pd.read_csv(NYC)
        jfk = table[table.origin == "JFK"][["time_hour", *COLUMNS]].reset_index(drop=True)
        jfk[COLUMNS] = jfk[COLUMNS].interpolate(limit_direction="both")
        jfk.to_csv(path, index=False)
        return path, f"NYC JFK hourly weather 2013 ({len(jfk)} rows × {len(COLUMNS)} columns)"
    rng = np.random.default_rng(0)
    hours = np.arange(8760)
    table = {name: rng.normal(0, 1, len(hours)).cumsum() * 0.1 for name in COLUMNS}
    table["temp"] = 50 + 20 * np.sin(hours * 2 * np.pi / 8760) + 8 * np.sin(hours * 2 * np.pi / 24)
    times = pd.date_range("2013-01-01", periods=len(hours), freq="h")
    pd.DataFrame({"time_hour": times, **table}).to_csv(path, index=False)
    return path, f"synthetic hourly series ({len(hours)} rows × {len(COLUMNS)} columns; NYC data not found)"


def parts(rows: int) -> dict[str, tuple[int, int]]:
    """Half for training, a quarter each for validation and test (the book's 200k/100k/120k, roughly)."""
    return {"train": (0, rows // 2), "validation": (rows // 2, rows * 3 // 4), "test": (rows * 3 // 4, rows)}


# --------------------------------------------------------------------------- dlrun


class EpochTimes(Reporter):
    def __init__(self):
        self.seconds, self.logs = [], []

    def epoch(self, job, epoch, epochs, logs, seconds):
        self.seconds.append(seconds)
        self.logs.append(dict(logs))


def run_dlrun(args, csv: Path, ranges, folder: Path) -> dict:
    import dlrun

    (train_s, train_e), (val_s, val_e), (test_s, _) = ranges.values()
    recipe = folder / "gru.yaml"
    recipe.write_text(f"""\
name: timeseries_benchmark
seed: {args.seed}
data:
  source: timeseries_csv
  path: {csv}
  time_column: time_hour
  columns: {json.dumps(COLUMNS)}
  target: temp
  lookback: {args.lookback}
  step: {args.step}
  delay: {args.delay}
  train: {{start: {train_s}, end: {train_e}}}
  validation: {{start: {val_s}, end: {val_e}}}
  test: {{start: {test_s}}}
model:
  layers: {MODELS[args.model][0]}
compile: {{optimizer: rmsprop, loss: mae}}
fit:
  epochs: {args.epochs}
  batch_size: {args.batch_size}
  steps_per_epoch: {args.steps}
  validation_steps: {args.validation_steps}
tracking: {{log_model: false}}
""")
    reporter = EpochTimes()
    summary = dlrun.train(recipe, output_root=folder / "out", reporter=reporter)
    return {"epoch_seconds": reporter.seconds, "val_mae": [logs["val_loss"] for logs in reporter.logs],
            "val_baseline_mae": summary.metrics["val_baseline_mae"]}


# --------------------------------------------------------------------------- the book


def generator(data, lookback, delay, min_index, max_index, shuffle=False, batch_size=128, step=6):
    """Listing 6.33, as printed (Python 3: ``range``; ``lookback // step`` rows a sample)."""
    if max_index is None:
        max_index = len(data) - delay - 1
    i = min_index + lookback
    while 1:
        if shuffle:
            rows = np.random.randint(min_index + lookback, max_index, size=batch_size)
        else:
            if i + batch_size >= max_index:
                i = min_index + lookback
            rows = np.arange(i, min(i + batch_size, max_index))
            i += len(rows)
        samples = np.zeros((len(rows), lookback // step, data.shape[-1]))
        targets = np.zeros((len(rows),))
        for j, row in enumerate(rows):
            indices = range(rows[j] - lookback, rows[j], step)
            samples[j] = data[indices]
            targets[j] = data[rows[j] + delay][TARGET]  # the book's [1]: Jena's temperature column
        yield samples, targets


def normalized(csv: Path, train_end: int) -> np.ndarray:
    """The book's Listing 6.32 on the same columns: mean and std of the training rows."""
    import pandas as pd

    data = pd.read_csv(csv)[COLUMNS].to_numpy(dtype=np.float64)
    mean, std = data[:train_end].mean(axis=0), data[:train_end].std(axis=0)
    return (data - mean) / std


def book_generators(args, csv: Path, ranges):
    """Train and validation generators over exactly dlrun's windows: row i < part end - delay."""
    (train_s, train_e), (val_s, val_e), _ = ranges.values()
    data = normalized(csv, train_e)
    common = dict(lookback=args.lookback, delay=args.delay, batch_size=args.batch_size, step=args.step)
    return (generator(data, min_index=train_s, max_index=train_e - args.delay, shuffle=True, **common),
            generator(data, min_index=val_s, max_index=val_e - args.delay, **common))


def run_book(args, csv: Path, ranges) -> dict:
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    train_gen, val_gen = book_generators(args, csv, ranges)
    model = keras.Sequential([keras.Input(shape=(args.lookback // args.step, len(COLUMNS))),
                              *MODELS[args.model][1](keras)])
    model.compile(optimizer=keras.optimizers.RMSprop(), loss="mae")
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    history = model.fit(train_gen, steps_per_epoch=args.steps, epochs=args.epochs, validation_data=val_gen,
                        validation_steps=args.validation_steps, callbacks=[Timer()], verbose=0)
    return {"epoch_seconds": seconds, "val_mae": history.history["val_loss"]}


# --------------------------------------------------------------------------- input pipelines alone


def pipelines_alone(args, csv: Path, ranges) -> dict:
    """Training batches a second with no model: the book's generator vs. dlrun's tf.data windows."""
    import tensorflow as tf
    from pydantic import TypeAdapter

    from dlrun.data.timeseries import load_timeseries
    from dlrun.recipe.schema import DataSpec

    (train_s, train_e), (val_s, val_e), _ = ranges.values()
    spec = TypeAdapter(DataSpec).validate_python({
        "source": "timeseries_csv", "path": str(csv), "time_column": "time_hour", "columns": COLUMNS,
        "target": "temp", "lookback": args.lookback, "step": args.step, "delay": args.delay,
        "train": {"start": train_s, "end": train_e}, "validation": {"start": val_s, "end": val_e}})
    train = load_timeseries(spec, csv.parent, seed=args.seed, batch_size=args.batch_size).train().repeat()
    batches = args.steps * args.epochs
    rates = {}
    for name, source in (("book generator", book_generators(args, csv, ranges)[0]), ("dlrun tf.data", iter(train))):
        next(source)  # warm-up: graph building, first prefetch
        start = time.perf_counter()
        for _ in range(batches):
            x, y = next(source)
            tf.convert_to_tensor(x), tf.convert_to_tensor(y)  # what Keras feeds the model (no-op for tf.data)
        rates[name] = batches / (time.perf_counter() - start)
    return rates


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="gru",
                        help="gru: GRU(32) (6.3.5, the default); dense: Flatten, Dense(32) (6.3.4)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="steps_per_epoch (the book: 500)")
    parser.add_argument("--validation-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lookback", type=int, default=240, help="rows (hours) back: 10 days")
    parser.add_argument("--step", type=int, default=1, help="hourly data: every row")
    parser.add_argument("--delay", type=int, default=24, help="rows (hours) ahead")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csv, what = series_csv(folder)
        import pandas as pd

        ranges = parts(len(pd.read_csv(csv)))
        val_start, val_end = ranges["validation"]
        # The book's validation generator wraps before a last batch that would reach max_index.
        full = (val_end - val_start - args.lookback - args.delay - 1) // args.batch_size
        if args.validation_steps > full:
            parser.error(f"--validation-steps {args.validation_steps}: the validation rows hold {full} full batches")
        print(f"data: {what}; parts {ranges}")
        print(f"model: {MODELS[args.model][0]}, mae, RMSprop; {args.epochs} epochs × {args.steps} steps of "
              f"{args.batch_size}, {args.validation_steps} validation steps; lookback {args.lookback}, "
              f"step {args.step}, delay {args.delay}")
        ours = run_dlrun(args, csv, ranges, folder)
        book = run_book(args, csv, ranges)
        rates = pipelines_alone(args, csv, ranges)

    def later(seconds):  # epoch 1 traces the tf.function: report it apart when there are more
        return statistics.median(seconds[1:] or seconds)

    ratio = later(book["epoch_seconds"]) / later(ours["epoch_seconds"])
    for name, result in (("dlrun", ours), ("book generator", book)):
        secs = " ".join(f"{s:.2f}" for s in result["epoch_seconds"])
        maes = " ".join(f"{m:.4f}" for m in result["val_mae"])
        print(f"{name:>15}: epoch seconds {secs} (median of epochs 2+: {later(result['epoch_seconds']):.2f}); "
              f"val MAE {maes}")
    print(f"speed-up, training (book seconds / dlrun seconds, epochs 2+): {ratio:.2f}×")
    print("input pipelines alone, training batches/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
          + f" → {rates['dlrun tf.data'] / rates['book generator']:.1f}×")
    print(f"common-sense baseline, validation MAE (normalized): {ours['val_baseline_mae']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "dlrun": ours, "book": book,
                                         "training_speedup": ratio, "pipeline_batches_per_s": rates}, indent=2))


if __name__ == "__main__":
    main()

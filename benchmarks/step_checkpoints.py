"""What checkpoints inside an epoch (``fit.checkpoint_steps: N``) cost, against plain Keras.

Same process, same data, alternating order; a quickstart-sized model (Dense 512 on 3,600
MNIST-shaped rows) in batches of 32, so an epoch has 113 batches. Sides:

- plain Keras ``fit`` on the arrays (the baseline, ratio 1);
- Keras' own ``BackupAndRestore(save_freq=N)`` (what Keras offers: it restarts the epoch on
  resume, with mid-epoch weights, so it is not exact);
- dlrun's whole-epoch checkpoint (weights + optimizer + state.json after every epoch);
- dlrun's seeded per-epoch order alone (deterministic mode's feeding; no checkpoint);
- dlrun every N batches: the arrays fed in dlrun's seeded per-epoch order (tf.data), the
  state saved every N batches with the epoch's metric totals, and after every epoch.

    python benchmarks/step_checkpoints.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from _alternating import measure_in_turns, print_ratios

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH, ROWS, EPOCHS = 32, 3600, 4


def main(pairs: int = 5, every: tuple[int, ...] = (50, 10)) -> None:
    import keras
    import numpy as np

    from dlrun.training.callbacks import step_checkpointer
    from dlrun.training.checkpoints import save_checkpoint
    from dlrun.data.streams import array_stream

    rng = np.random.default_rng(0)
    x = rng.random((ROWS, 784), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, ROWS), 10)
    folder = Path(tempfile.mkdtemp(prefix="dlrun-bench-"))

    def model():
        keras.backend.clear_session()  # no drift from the graphs of earlier rounds
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
        m.compile("rmsprop", "categorical_crossentropy", metrics=["accuracy"])
        return m

    def seconds_per_epoch(side) -> float:
        m = model()
        inputs, callbacks = side(m)
        m.fit(**inputs(0, 1), epochs=1, verbose=0, callbacks=callbacks)  # tracing
        start = time.perf_counter()
        m.fit(**inputs(1, 1 + EPOCHS), initial_epoch=1, epochs=1 + EPOCHS, verbose=0, callbacks=callbacks)
        return (time.perf_counter() - start) / EPOCHS

    def arrays(first, last):
        return {"x": x, "y": y, "batch_size": BATCH, "shuffle": True}

    def ordered(first, last):
        stream = array_stream(x, y, BATCH, 0)
        return {"x": stream.dataset(first * stream.batches_per_pass), "steps_per_epoch": stream.batches_per_pass,
                "shuffle": False}

    def epoch_saver(m):
        return keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: save_checkpoint(folder / "epochs", m, epoch + 1, 1, 99, [], 0))

    sides = {"plain keras fit": lambda m: (arrays, [])}
    for n in every:
        sides[f"keras BackupAndRestore({n})"] = lambda m, n=n: (
            arrays, [keras.callbacks.BackupAndRestore(str(folder / f"backup{n}"), save_freq=n)])
    sides["dlrun per-epoch checkpoint"] = lambda m: (arrays, [epoch_saver(m)])
    sides["dlrun seeded order, no saves"] = lambda m: (ordered, [])
    for n in every:
        sides[f"dlrun checkpoint_steps {n}"] = lambda m, n=n: (ordered, [epoch_saver(m), step_checkpointer(
            n, lambda epoch, batch: save_checkpoint(folder / f"steps{n}", m, epoch, 1, 99, [], 0, batch, BATCH))])

    times = measure_in_turns(sides, seconds_per_epoch, pairs)
    print(f"{ROWS} rows, batch {BATCH} ({-(-ROWS // BATCH)} batches/epoch), {EPOCHS} measured epochs, "
          f"{pairs} rounds; median ms/epoch, ratio to plain Keras, [each round]")
    print_ratios(times, "plain keras fit")

    # One save on its own, which the fit ratios above blur (this VM's epoch times vary by ±30 %).
    m = model()
    m.fit(**ordered(0, 1), epochs=1, verbose=0)
    saves = {"keras model.save_weights": lambda i: m.save_weights(folder / f"plain-{i}.weights.h5"),
             "dlrun save inside an epoch": lambda i: save_checkpoint(folder / "single", m, 0, 1, 99, [], 0, i + 1,
                                                                     BATCH)}
    for name, save in saves.items():
        seconds = []
        for i in range(20):
            start = time.perf_counter()
            save(i)
            seconds.append(time.perf_counter() - start)
        print(f"{name:30s} {statistics.median(seconds) * 1000:7.1f} ms a save (median of 20)")


if __name__ == "__main__":
    main()

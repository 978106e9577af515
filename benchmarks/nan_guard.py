"""What dlrun's NaN/inf loss check costs per epoch, against the same fit without it.

The check must look at every batch to name the batch where the loss stopped being finite. As a
plain per-batch hook it makes Keras stop and convert the logs at every batch; dlrun marks it
``async_safe`` so Keras runs it on its callback worker thread instead. Same process, same data,
alternating order, quickstart-sized model (Dense 512 on 3,600 MNIST-shaped rows, batch 128).

    python benchmarks/nan_guard.py
"""

from __future__ import annotations

import os
import time

from _alternating import measure_in_turns, print_ratios

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(pairs: int = 4, epochs: int = 4) -> None:
    import keras
    import numpy as np

    from dlrun.training.callbacks import nonfinite_guard

    rng = np.random.default_rng(0)
    x = rng.random((3600, 784), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, 3600), 10)

    def seconds_per_epoch(callbacks_for) -> float:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile("rmsprop", "categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=128, epochs=1, verbose=0, callbacks=callbacks_for())  # tracing
        start = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=callbacks_for())
        return (time.perf_counter() - start) / epochs

    def blocking_guard():
        guard = nonfinite_guard()
        guard.async_safe = False  # what a plain per-batch hook costs
        return [guard]

    sides = {"no check": lambda: [], "dlrun check (async)": lambda: [nonfinite_guard()],
             "blocking per-batch check": blocking_guard}
    times = measure_in_turns(sides, seconds_per_epoch, pairs)
    print_ratios(times, "no check")


if __name__ == "__main__":
    main()

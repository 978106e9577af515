"""The book's sliding windows over a series (Listing 6.33), as batched tf.data pipelines.

For a row ``i`` of a part ``[start, end)``::

    samples = data[i - lookback : i : step]     # ceil(lookback / step) rows, the last is i - step
    target  = data[i + delay][target_column]    #                          (when step divides lookback)

``i`` runs over ``start + lookback … end - 1 - delay``: the window *and* its target lie inside the
part. (The book's generator only keeps ``i`` below ``max_index``, so its targets reach up to
``delay`` rows into the next part; ours never do.)

The windows are gathered a whole batch at a time from one tensor, inside the tf.data graph: no
Python generator, no copy of the overlapping windows in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Windows:
    lookback: int
    step: int = 1
    delay: int = 0

    @property
    def offsets(self) -> np.ndarray:
        """Sample rows relative to ``i``, oldest first: ``-lookback, -lookback + step, …``."""
        return np.arange(-self.lookback, 0, self.step, dtype=np.int64)

    @property
    def length(self) -> int:
        """Rows in one sample (the model's time axis)."""
        return len(self.offsets)

    @property
    def span(self) -> int:
        """Rows a part needs for one window: the lookback, the delay and the target row."""
        return self.lookback + self.delay + 1

    def rows(self, start: int, end: int) -> np.ndarray:
        """Every ``i`` whose window and target lie in ``[start, end)``."""
        return np.arange(start + self.lookback, end - self.delay, dtype=np.int64)

    def count(self, start: int, end: int) -> int:
        return max(0, end - start - self.lookback - self.delay)

    def used_rows(self, start: int, end: int) -> dict[str, list[int]]:
        """The first and last row the part's samples and targets read (absolute row numbers)."""
        rows = self.rows(start, end)
        if not len(rows):
            return {}
        first, last = int(rows[0]), int(rows[-1])
        return {"samples": [first - self.lookback, last + int(self.offsets[-1])],
                "targets": [first + self.delay, last + self.delay]}


def window_dataset(part: np.ndarray, windows: Windows, target_column: int, *, batch_size: int,
                   shuffle: bool = False, seed: int = 0, reverse: bool = False):
    """Batches ``(x, y)`` of every window of ``part`` (one part's rows, float32, (rows, columns)):
    ``x`` (batch, windows.length, columns), ``y`` (batch,). ``shuffle`` reorders the windows
    again on every pass (seeded); ``reverse`` feeds each window latest row first (6.3.8)."""
    import tensorflow as tf

    rows = windows.rows(0, len(part))
    dataset = tf.data.Dataset.from_tensor_slices(rows)
    if shuffle:  # row numbers only: a full-size buffer costs 8 bytes a window
        dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(_gatherer(part, windows, target_column, reverse),
                                            num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def window_stream(part: np.ndarray, windows: Windows, target_column: int, *, batch_size: int,
                  shuffle: bool = False, seed: int = 0, reverse: bool = False):
    """The same batches as :func:`window_dataset`, as a seekable stream of passes whose order
    depends only on ``seed`` (dlrun.data.streams.BatchStream): a resumed job continues it."""
    from dlrun.data.streams import BatchStream

    gather = _gatherer(part, windows, target_column, reverse)
    # Window k ends before row lookback + k (Windows.rows from 0).
    return BatchStream(windows.count(0, len(part)), batch_size, seed if shuffle else None,
                       lambda picked: gather(picked + windows.lookback))


def _gatherer(part: np.ndarray, windows: Windows, target_column: int, reverse: bool):
    """``gather(i)``: the batch ``(x, y)`` of the windows ending before rows ``i``, gathered
    from one tensor inside the tf.data graph."""
    import tensorflow as tf

    offsets = windows.offsets[::-1] if reverse else windows.offsets
    series = tf.convert_to_tensor(part, tf.float32)
    targets = tf.convert_to_tensor(part[:, target_column], tf.float32)
    offsets = tf.constant(offsets)
    delay = tf.constant(windows.delay, tf.int64)

    def gather(i):  # i: the batch's rows, (batch,)
        return tf.gather(series, i[:, None] + offsets), tf.gather(targets, i + delay)

    return gather


def last_value_mae(target: np.ndarray, windows: Windows) -> float:
    """The common-sense baseline (6.3.3): predict each window's target by the latest target
    value the window holds; the mean absolute error over every window of one part
    (``target``: the part's target column)."""
    rows = windows.rows(0, len(target))
    target = np.asarray(target, dtype=np.float64)
    latest = target[rows + windows.offsets[-1]]
    return float(np.mean(np.abs(target[rows + windows.delay] - latest)))


def batches(windows: int, batch_size: int) -> int:
    return math.ceil(windows / batch_size)

"""Training batches as one endless stream whose order depends only on the seed.

Keras shuffles arrays with TensorFlow's global random state, and tf.data's reshuffling
depends on how many passes a process has made: neither is shared by a resumed process.
dlrun can instead feed a stream of passes over the rows, pass ``p`` in
``default_rng([seed, p]).permutation`` order (unshuffled data: in row order), cut into
batches. A job that has trained ``k`` batches continues at batch ``k`` of that stream, so a
run resumed after an epoch — or in the middle of one — sees exactly the batches of a run
that never stopped.

In-memory arrays are fed this way in deterministic mode and when the recipe saves
checkpoints inside epochs; time-series windows and cached image features always are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class BatchStream:
    """Passes over ``rows`` rows in batches; ``gather(row_numbers)`` (a tensor) makes a batch."""

    rows: int
    batch_size: int
    seed: int | None  # None: every pass in row order
    gather: Callable[[Any], Any]

    @property
    def batches_per_pass(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def dataset(self, position: int = 0):
        """The stream's batches from batch ``position`` (0: the first pass's first batch) on, endless."""
        import tensorflow as tf

        first, within = divmod(position, self.batches_per_pass)
        return (tf.data.Dataset.range(first, np.iinfo(np.int64).max)
                .flat_map(self._pass)
                .skip(within)  # row numbers only: skipping costs no gather
                .map(self.gather, num_parallel_calls=tf.data.AUTOTUNE)  # in order all the same
                .prefetch(tf.data.AUTOTUNE))

    def _pass(self, p):
        import tensorflow as tf

        rows = tf.numpy_function(self._order, [p], tf.int64, stateful=False)
        rows.set_shape([self.rows])
        return tf.data.Dataset.from_tensor_slices(rows).batch(self.batch_size)

    def _order(self, p) -> np.ndarray:
        if self.seed is None:
            return np.arange(self.rows, dtype=np.int64)
        return np.random.default_rng([self.seed, int(p)]).permutation(self.rows).astype(np.int64)


def array_stream(x, y, batch_size: int, seed: int | None) -> BatchStream:
    """A :class:`BatchStream` over in-memory ``(x, y)`` (dicts of arrays: named inputs/outputs).
    (The arrays become TensorFlow constants: fine up to a couple of GiB.)"""
    import tensorflow as tf

    rows = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    xs, ys = tf.nest.map_structure(tf.constant, x), tf.nest.map_structure(tf.constant, y)
    return BatchStream(rows, batch_size, seed, lambda r: tf.nest.map_structure(lambda a: tf.gather(a, r), (xs, ys)))

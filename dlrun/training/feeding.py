"""In-memory arrays fed to Keras in a per-epoch order that depends only on (seed, epoch).

Keras shuffles arrays with TensorFlow's global random state, which a resumed process does
not share with the one that was interrupted. In deterministic mode, and when the recipe
saves checkpoints inside epochs (``fit.checkpoint_steps``), dlrun feeds the arrays through
tf.data itself: epoch ``e`` visits the rows in ``default_rng([seed, e]).permutation`` order
(unshuffled data: in row order), so a run resumed at epoch ``e`` — or after batch ``b`` of
it — sees the same batches as one that never stopped.
(The arrays become TensorFlow constants: fine up to a couple of GiB.)
"""

from __future__ import annotations

import math

import numpy as np


def ordered_epochs(x, y, batch_size: int, seed: int | None, first_epoch: int, last_epoch: int, skip: int = 0):
    """``(dataset, steps_per_epoch)`` for ``fit(initial_epoch=first_epoch, epochs=last_epoch)``;
    ``seed`` None keeps the rows in order. ``skip``: batches of the first epoch already trained
    (then the dataset holds that one epoch's remaining batches)."""
    import tensorflow as tf

    if skip and last_epoch != first_epoch + 1:
        raise ValueError("skip applies to a single, interrupted epoch")
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    xs, ys = tf.nest.map_structure(tf.constant, x), tf.nest.map_structure(tf.constant, y)  # dicts: named

    def order(epoch):
        if seed is None:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([seed, int(epoch)]).permutation(n).astype(np.int64)

    def epoch_batches(epoch):
        rows = tf.numpy_function(order, [epoch], tf.int64, stateful=False)
        rows.set_shape([n])
        return tf.data.Dataset.from_tensor_slices(rows).batch(batch_size)

    dataset = (tf.data.Dataset.range(first_epoch, last_epoch)
               .flat_map(epoch_batches)
               .skip(skip)
               .map(lambda rows: tf.nest.map_structure(lambda a: tf.gather(a, rows), (xs, ys)))
               .prefetch(2))
    return dataset, math.ceil(n / batch_size) - skip

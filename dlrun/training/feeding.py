"""In-memory arrays fed to Keras in a per-epoch order that depends only on (seed, epoch).

Keras shuffles arrays with TensorFlow's global random state, which a resumed process does
not share with the one that was interrupted. In deterministic mode dlrun feeds the arrays
through tf.data itself: epoch ``e`` visits the rows in ``default_rng([seed, e]).permutation``
order, so a run resumed at epoch ``e`` sees the same batches as one that never stopped.
(The arrays become TensorFlow constants: fine up to a couple of GiB.)
"""

from __future__ import annotations

import math

import numpy as np


def seeded_epochs(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first_epoch: int, last_epoch: int):
    """``(dataset, steps_per_epoch)`` for ``fit(initial_epoch=first_epoch, epochs=last_epoch)``."""
    import tensorflow as tf

    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    xs, ys = tf.nest.map_structure(tf.constant, x), tf.nest.map_structure(tf.constant, y)  # dicts: named

    def order(epoch):
        return np.random.default_rng([seed, int(epoch)]).permutation(n).astype(np.int64)

    def epoch_batches(epoch):
        rows = tf.numpy_function(order, [epoch], tf.int64, stateful=False)
        rows.set_shape([n])
        return tf.data.Dataset.from_tensor_slices(rows).batch(batch_size)

    dataset = (tf.data.Dataset.range(first_epoch, last_epoch)
               .flat_map(epoch_batches)
               .map(lambda rows: tf.nest.map_structure(lambda a: tf.gather(a, rows), (xs, ys)))
               .prefetch(2))
    return dataset, math.ceil(n / batch_size)

"""``fit.precision``: the Keras dtype policy a recipe's model is built under, and its outputs kept in
float32 (a float16 softmax or loss loses digits; Keras' mixed-precision guide does the same).

Keras 3's ``compile()`` wraps the optimizer in a ``LossScaleOptimizer`` by itself for a model whose
policy is ``mixed_float16``; the kinds with their own training step scale their losses themselves
(:func:`dlrun.model.kinds.parts.loss_scaled`). ``mixed_bfloat16`` needs no loss scaling.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

@contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Layers created inside compute in ``name``'s dtype; the policy before is restored after, so
    a later model in the same process (the next K-fold fold, a notebook's) is not affected."""
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def keep_output_float32(layer) -> None:
    """Make ``layer`` (one producing a model output) compute in float32 under a mixed policy,
    unless the recipe gave it a dtype of its own. Keras casts its float16 inputs up."""
    import keras

    policy = keras.config.dtype_policy()
    if policy.compute_dtype != "float32" and layer.dtype_policy.name == policy.name:
        layer.dtype_policy = "float32"


def loss_scaling(model) -> bool:
    """Whether the model's optimizer scales the loss (a ``LossScaleOptimizer``, or a kind's several)."""
    import keras

    optimizers = [getattr(model, "optimizer", None), getattr(model, "d_optimizer", None),
                  getattr(model, "g_optimizer", None)]
    return any(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in optimizers)

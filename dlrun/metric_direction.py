"""Whether a lower value of a metric is better, guessed from its name (no TensorFlow import)."""

from __future__ import annotations

_LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "mape", "msle", "hinge", "crossentropy", "divergence",
                    "logcosh", "poisson", "false_")


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)

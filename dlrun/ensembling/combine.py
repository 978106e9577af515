"""Averaging predictions, choosing weights, and scoring with the recipe's own loss and metrics.

Scores come from Keras itself: the predictions go through a weightless identity model compiled
with the recipe's ``compile`` section, so ``loss`` and every metric are computed exactly as
``model.evaluate`` computes them for a trained model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dlrun.errors import UsageError


def parse_weights(text: str | None, n: int) -> np.ndarray | None:
    """``"0.5,0.3,0.2"`` → normalized weights; their count must match the members'."""
    if text is None:
        return None
    try:
        values = np.array([float(v) for v in text.split(",") if v.strip()], dtype=float)
    except ValueError:
        raise UsageError(f"--weights: '{text}' is not a comma-separated list of numbers") from None
    if len(values) != n:
        raise UsageError(f"--weights: {len(values)} weights given for {n} members (one per member, in order)")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise UsageError(f"--weights: weights must be finite, non-negative and not all zero, got {text}")
    return values / values.sum()


def stack_predictions(predictions: Sequence[np.ndarray]) -> np.ndarray:
    """The members' predictions as one float64 array, members first."""
    return np.stack([np.asarray(p, dtype=np.float64) for p in predictions])


def average_stacked(stacked: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The (weighted) average of predictions already put together by :func:`stack_predictions`."""
    w = np.full(len(stacked), 1.0 / len(stacked)) if weights is None else np.asarray(weights, dtype=np.float64)
    return np.tensordot(w, stacked, axes=1).astype(np.float32)


def average(predictions: Sequence[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
    return average_stacked(stack_predictions(predictions), weights)


class Scorer:
    """The recipe's loss and metrics on predictions (``{"loss": …, "mae": …}``)."""

    def __init__(self, compile_spec, sample_shape: tuple[int, ...]):
        import keras

        from dlrun.model.builder import compile_model

        inputs = keras.Input(shape=sample_shape, dtype="float32")
        self.model = keras.Model(inputs, keras.layers.Identity()(inputs))
        compile_model(self.model, compile_spec)
        loss = self.model.loss  # a Loss object, or the name of a loss function
        self._loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss

    def __call__(self, predictions: np.ndarray, y: np.ndarray) -> dict[str, float]:
        values = self.model.evaluate(predictions, y, batch_size=min(len(y), 4096), verbose=0, return_dict=True)
        return {k: float(v) for k, v in values.items()}

    def loss(self, predictions: np.ndarray, y: np.ndarray) -> float:
        """The recipe's loss alone (fast: no metrics, no evaluate loop)."""
        return float(np.mean(np.asarray(self._loss(y, predictions))))  # a function's per-sample values


def fit_weights_shared(scorer: Scorer, predictions: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Weights on the simplex minimizing the recipe's loss of the weighted average on rows no
    member trained on (SLSQP from equal weights)."""
    from scipy.optimize import minimize

    stacked = stack_predictions(predictions)  # once: the optimizer evaluates the loss many times
    n = len(stacked)
    start = np.full(n, 1.0 / n)
    result = minimize(
        lambda w: scorer.loss(average_stacked(stacked, np.clip(w, 0, None)), y), start, method="SLSQP",
        bounds=[(0.0, 1.0)] * n, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
        options={"maxiter": 200, "ftol": 1e-10},
    )
    w = np.clip(result.x if np.all(np.isfinite(result.x)) else start, 0, None)
    if scorer.loss(average_stacked(stacked, w / w.sum()), y) > scorer.loss(average_stacked(stacked, start), y):
        return start  # never worse than the plain mean on the data it was fitted on
    return w / w.sum()


def fit_weights_inverse_loss(losses: Sequence[float]) -> np.ndarray:
    """Weights ∝ 1/loss of each member on its own validation rows (out-of-fold for K-fold)."""
    values = np.asarray(losses, dtype=float)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise UsageError(f"--fit-weights: the members' validation losses {values.tolist()} are not all "
                         "positive and finite; give --weights instead")
    inverse = 1.0 / values
    return inverse / inverse.sum()

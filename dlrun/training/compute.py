"""How a job computes on its devices: the model built under the recipe's precision and, when the
job sees several GPUs, under ``MirroredStrategy``; how many batches one compiled call runs
(``fit.steps_per_execution``, ``auto``); and what was resolved, recorded in ``environment.json``
and as MLflow tags.

``steps_per_execution: auto`` (the rule, also in the README): a step is *tiny* when the model's
weights × the batch size is at most :data:`TINY_STEP` (about 16 M, a few milliseconds of compute
on a CPU core — as long as Keras' own per-batch work); a tiny step runs ``min(32, batches per
epoch)`` batches per call, any other 1. With ``fit.checkpoint_steps`` it is lowered to a divisor of
it, so every step checkpoint falls between two calls; where fit reads a repeating dataset (a seeded
stream, ``steps_per_epoch``), to a divisor of the epoch's batches too. The first batches are not
timed: the choice must not depend on the machine's load, or a resumed run would batch differently.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

TINY_STEP = 2**24  # weights × rows of one batch
MAX_AUTO_STEPS = 32  # a Ctrl-C, a NaN or a progress bar waits at most this many batches

_strategy: dict[tuple, Any] = {}  # one MirroredStrategy per GPU set and process


def job_strategy():
    """``MirroredStrategy`` over this process's GPUs when it sees more than one, else None."""
    import tensorflow as tf

    gpus = tuple(d.name for d in tf.config.list_logical_devices("GPU"))
    if len(gpus) < 2:
        return None
    if gpus not in _strategy:
        _strategy[gpus] = tf.distribute.MirroredStrategy(list(gpus))
    return _strategy[gpus]


@contextmanager
def model_scope(recipe) -> Iterator[None]:
    """Build and compile inside: the recipe's ``fit.precision``, and the job's strategy."""
    from dlrun.model.precision import precision_policy

    strategy = job_strategy()
    with precision_policy(recipe.fit.precision):
        if strategy is None:
            yield
        else:
            with strategy.scope():
                yield


def batches_per_epoch(recipe, data) -> int | None:
    """How many training batches one epoch of ``data`` (a job's JobData) has, when known."""
    if data.streamed:
        if recipe.fit.steps_per_epoch:
            return recipe.fit.steps_per_epoch
        return data.stream.batches_per_pass if data.stream is not None else None
    x = data.train[0]
    rows = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    return math.ceil(rows / recipe.fit.batch_size)


def steps_per_execution(recipe, model, batches: int | None, repeating: bool, note=lambda text: None) -> int:
    """The recipe's ``fit.steps_per_execution``, ``auto`` resolved by the rule above.

    ``repeating``: fit reads a dataset that does not end with the epoch (a seeded stream, streamed
    data with ``steps_per_epoch``). Keras then runs whole calls of N batches and would train past
    the epoch's end when N does not divide it, so N is lowered to a divisor (``note`` says so)."""
    asked = recipe.fit.steps_per_execution
    every = recipe.fit.checkpoint_steps if recipe.fit.checkpoint else None
    counts = [c for c in (every, *((batches, recipe.fit.validation_steps) if repeating else ())) if c]
    if asked == "auto":
        tiny = batches is not None and _weights(model) * recipe.fit.batch_size <= TINY_STEP
        return _largest_divisor(min(MAX_AUTO_STEPS, batches) if tiny else 1, counts)
    steps = math.gcd(asked, *counts)
    if steps != asked:
        note(f"fit.steps_per_execution {asked}: {steps} batches per call instead, so that calls end where the "
             f"epoch's {batches} batches (or fit.validation_steps) end — give a divisor of it")
    return steps


def steps_for_call(steps: int, batches: int | None) -> int:
    """One fit call's batches per execution: a divisor of the job's ``steps`` that also divides the
    call's ``batches`` per epoch (a resumed epoch's rest), so no call trains past an epoch's end."""
    return math.gcd(steps, batches) if batches else steps


def _weights(model) -> float:
    """The model's weight count; a subclassed model that builds on its first training batch counts
    as large (its step is not known to be tiny)."""
    try:
        return model.count_params()
    except ValueError:
        return math.inf


def _largest_divisor(cap: int, counts: list[int]) -> int:
    return max(d for d in range(1, max(1, cap) + 1) if all(c % d == 0 for c in counts))


def compute_facts(recipe, model) -> dict[str, Any]:
    """What the job's model resolved: precision and loss scaling, XLA, batches per call, devices."""
    import tensorflow as tf

    from dlrun.model.precision import loss_scaling

    strategy = job_strategy()
    return {
        "precision": model.dtype_policy.name,
        "loss_scaling": loss_scaling(model),
        "jit_compile": bool(model.jit_compile),
        "jit_compile_asked": recipe.compile.jit_compile,
        "steps_per_execution": int(model.steps_per_execution),
        "steps_per_execution_asked": recipe.fit.steps_per_execution,
        "strategy": type(strategy).__name__ if strategy is not None else "default",
        "replicas": strategy.num_replicas_in_sync if strategy is not None else 1,
        "gpus": [d.name for d in tf.config.list_logical_devices("GPU")],
    }


def record_compute(run_dir, tracked, facts: dict[str, Any]) -> None:
    """``facts`` into the job's ``environment.json`` (key ``compute``) and its MLflow run's tags."""
    path = run_dir.file("environment.json")
    environment = run_dir.read_json("environment.json") if path.exists() else {}
    run_dir.write_json("environment.json", {**environment, "compute": facts})
    if tracked is not None:
        tracked.set_tags({f"dlrun.{key}": _tag(value) for key, value in facts.items()})


def _tag(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return (",".join(value) or "none") if isinstance(value, list) else str(value)

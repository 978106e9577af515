"""Named learning-rate schedules for Keras' ``LearningRateScheduler``, built by dlrun.

A recipe names a schedule and gives its arguments next to it, never Python code::

    fit:
      callbacks:
        - LearningRateScheduler: {schedule: step_decay, drop: 0.5, every: 10}

Each schedule is a pure function of the epoch (0-based, as Keras counts) and the base rate:
the optimizer's learning rate as the recipe compiles it, unless ``initial_learning_rate`` is
given. Being a function of the epoch alone, a resumed run gets the same rate at the same epoch.

Plain Python only (no TensorFlow): the recipe validator checks names and arguments with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from dlrun.errors import did_you_mean

# LearningRateScheduler's own arguments, next to the schedule's.
KERAS_ARGS = ("verbose",)
BASE_ARG = "initial_learning_rate"  # every schedule may take it; default: the optimizer's rate


@dataclass(frozen=True)
class Arg:
    kind: type  # int or float
    default: Any = None  # None: required
    low: float | None = None  # inclusive bounds
    high: float | None = None
    positive: bool = False  # strictly above zero


@dataclass(frozen=True)
class Schedule:
    rate: Callable[..., float]  # (epoch, base, **args) → learning rate
    args: dict[str, Arg]
    doc: str


def _step_decay(epoch: int, base: float, drop: float, every: int) -> float:
    return base * drop ** (epoch // every)


def _exponential(epoch: int, base: float, rate: float) -> float:
    return base * rate ** epoch


def _cosine(epoch: int, base: float, epochs: int, min_learning_rate: float) -> float:
    progress = min(epoch, epochs) / epochs
    return min_learning_rate + (base - min_learning_rate) * 0.5 * (1 + math.cos(math.pi * progress))


def _linear_warmup(epoch: int, base: float, warmup_epochs: int, start_factor: float) -> float:
    if epoch >= warmup_epochs:
        return base
    return base * (start_factor + (1 - start_factor) * epoch / warmup_epochs)


def _warmup_cosine(epoch: int, base: float, warmup_epochs: int, epochs: int, min_learning_rate: float,
                   start_factor: float) -> float:
    if epoch < warmup_epochs:
        return _linear_warmup(epoch, base, warmup_epochs, start_factor)
    return _cosine(epoch - warmup_epochs, base, max(epochs - warmup_epochs, 1), min_learning_rate)


def _constant(epoch: int, base: float) -> float:
    return base


SCHEDULES: dict[str, Schedule] = {
    "constant": Schedule(_constant, {}, "the base rate every epoch"),
    "step_decay": Schedule(_step_decay, {"drop": Arg(float, low=0, high=1, positive=True),
                                         "every": Arg(int, low=1)},
                           "base × drop^(epoch // every): the rate drops by a factor every few epochs"),
    "exponential": Schedule(_exponential, {"rate": Arg(float, low=0, high=1, positive=True)},
                            "base × rate^epoch"),
    "cosine": Schedule(_cosine, {"epochs": Arg(int, low=1), "min_learning_rate": Arg(float, 0.0, low=0)},
                       "half a cosine from base down to min_learning_rate over `epochs`, then flat"),
    "linear_warmup": Schedule(_linear_warmup, {"warmup_epochs": Arg(int, low=1),
                                               "start_factor": Arg(float, 0.1, low=0, high=1)},
                              "from start_factor × base up to base over warmup_epochs, then constant"),
    "warmup_cosine": Schedule(_warmup_cosine, {"warmup_epochs": Arg(int, low=1), "epochs": Arg(int, low=1),
                                               "min_learning_rate": Arg(float, 0.0, low=0),
                                               "start_factor": Arg(float, 0.1, low=0, high=1)},
                              "linear warmup, then a cosine decay until `epochs`"),
}


def schedule_problems(args: dict) -> list[tuple[tuple, str]]:
    """(argument path, problem) for a LearningRateScheduler's arguments; empty when fine."""
    name = args.get("schedule")
    if name is None:
        return [((), f"LearningRateScheduler needs 'schedule': one of {', '.join(SCHEDULES)}")]
    if not isinstance(name, str) or name not in SCHEDULES:
        hint = did_you_mean(name, SCHEDULES) if isinstance(name, str) else ""
        return [(("schedule",), f"unknown schedule '{name}'{hint} (known: {', '.join(SCHEDULES)})")]
    spec = SCHEDULES[name]
    allowed = {"schedule", BASE_ARG, *KERAS_ARGS, *spec.args}
    problems = []
    for key, value in args.items():
        if key not in allowed:
            problems.append(((key,), f"schedule {name} has no argument '{key}'"
                                     f"{did_you_mean(str(key), sorted(allowed - {'schedule'}))}"))
        elif key == BASE_ARG:
            problems += [((key,), p) for p in _value_problems(key, value, Arg(float, positive=True))]
        elif key in spec.args:
            problems += [((key,), p) for p in _value_problems(key, value, spec.args[key])]
    unknown = [str(key) for key in args if key not in allowed]
    for key, arg in spec.args.items():
        if arg.default is None and key not in args and not any(did_you_mean(k, [key]) for k in unknown):
            problems.append(((), f"schedule {name} needs the argument '{key}'"))
    return problems


def _value_problems(key: str, value: Any, arg: Arg) -> list[str]:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (arg.kind is int and not isinstance(value, int)):
        return [f"{key} must be {'an integer' if arg.kind is int else 'a number'}, not {value!r}"]
    if arg.positive and value <= 0:
        return [f"{key} must be above 0"]
    if arg.low is not None and value < arg.low:
        return [f"{key} must be at least {arg.low}"]
    if arg.high is not None and value > arg.high:
        return [f"{key} must be at most {arg.high}"]
    return []


def learning_rate_function(args: dict, base: float) -> Callable[[int], float]:
    """``epoch → learning rate`` for validated arguments (``schedule`` and its own)."""
    spec = SCHEDULES[args["schedule"]]
    base = float(args.get(BASE_ARG, base))
    values = {key: args.get(key, arg.default) for key, arg in spec.args.items()}
    return lambda epoch: float(spec.rate(epoch, base, **values))


def keras_args(args: dict) -> dict:
    """The arguments that are LearningRateScheduler's own (``verbose``)."""
    return {key: args[key] for key in KERAS_ARGS if key in args}

"""Sides measured in turns, in one process: each round runs every side once, the order
reversed every other round, so drift (a warming cache, another job) falls on all of them."""

from __future__ import annotations

import statistics
from typing import Callable


def measure_in_turns(sides: dict[str, object], measure: Callable[[object], float], rounds: int) -> dict[str, list]:
    """``{side: [seconds per round]}``, ``measure(side)`` timing one side once."""
    times: dict[str, list] = {name: [] for name in sides}
    for turn in range(rounds):
        for name in (list(sides) if turn % 2 else list(reversed(sides))):
            times[name].append(measure(sides[name]))
    return times


def print_ratios(times: dict[str, list], baseline: str) -> None:
    """One line a side: median ms/epoch, its ratio to ``baseline``'s median, every round."""
    base = statistics.median(times[baseline])
    width = max(map(len, times)) + 2
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:{width}s} {median * 1000:7.1f} ms/epoch  ratio {median / base:.3f}  "
              f"[{', '.join(f'{v * 1000:.0f}' for v in values)}]")

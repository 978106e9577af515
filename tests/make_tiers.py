"""Write ``tests/slow_tests.txt`` from a measured run, so ``pytest -m "not slow"`` stays quick.

    python -m pytest -q -p no:cacheprovider -n 0 --durations=0 > durations.log   # serially, on 2 cores
    python tests/make_tiers.py durations.log [--budget 150]

Every test's setup, call and teardown seconds are summed; the quickest tests not already marked
``@pytest.mark.slow`` are kept in the quick tier until their total reaches ``--budget`` seconds (the
rest of the 4-minute goal is pytest's collection and TensorFlow's import), and the others are
listed in ``slow_tests.txt``, which ``conftest.py`` marks slow. Explicit marks stay the way to say
that a new test is heavy; this file keeps the tier honest as tests grow.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
LIST = HERE / "slow_tests.txt"
_LINE = re.compile(r"^\s*([\d.]+)s\s+(setup|call|teardown)\s+(\S.*?)\s*$")


def durations(log: str) -> dict[str, float]:
    """Seconds per test node id, from pytest's ``--durations=0`` table."""
    seconds: dict[str, float] = defaultdict(float)
    for line in log.splitlines():
        match = _LINE.match(line)
        if match:
            seconds[match.group(3)] += float(match.group(1))
    return dict(seconds)


def explicitly_slow() -> set[str]:
    """Node ids already marked slow in the code (collected with the list file ignored)."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow", "-p", "no:cacheprovider", "-n0"]
    out = subprocess.run([*command, str(HERE)], capture_output=True, text=True, cwd=HERE.parent,
                         env={**os.environ, "DLRUN_NO_SLOW_LIST": "1"})
    return {line.strip() for line in out.stdout.splitlines() if "::" in line}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="the output of pytest -q --durations=0 over the whole suite")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds of tests in the quick tier")
    args = parser.parse_args()

    seconds = durations(args.log.read_text())
    if not seconds:
        sys.exit(f"{args.log}: no --durations=0 table in it")
    marked = explicitly_slow()
    quick, total = [], 0.0
    for test, spent in sorted(((t, s) for t, s in seconds.items() if t not in marked), key=lambda p: p[1]):
        if total + spent > args.budget:
            break
        quick.append(test)
        total += spent
    slow = sorted(t for t in seconds if t not in marked and t not in quick)
    LIST.write_text("# Tests measured as slow (tests/make_tiers.py): conftest.py marks them @pytest.mark.slow.\n"
                    + "".join(f"{t}\n" for t in slow))
    print(f"quick tier: {len(quick)} tests, {total:.0f} s measured; listed slow: {len(slow)}; "
          f"marked slow in the code: {len(marked)}")


if __name__ == "__main__":
    main()

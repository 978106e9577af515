"""``--json`` output: one strict JSON object, alone on stdout.

Under ``--json`` the JSON object is the only thing on stdout, whatever else a command runs:
:func:`claim_stdout` points file descriptor 1 — Python's ``print`` and C libraries alike (a
plugin that prints, TensorFlow) — at stderr for the whole command and keeps the real stdout
for :func:`print_json`.
"""

from __future__ import annotations

import json
import os
import sys


class _JsonOut:
    """The real stdout, once :func:`claim_stdout` has pointed file descriptor 1 at stderr."""

    stream = None


def claim_stdout() -> None:
    sys.stdout.flush()
    _JsonOut.stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)


def print_json(obj) -> None:
    """Write one JSON object on the real stdout (strict JSON: see :func:`json_dumps`)."""
    stream = _JsonOut.stream or sys.stdout
    print(json_dumps(obj), file=stream, flush=True)


def json_dumps(obj) -> str:
    """Strict JSON: NaN and infinities (a diverged loss) become null."""
    def clean(value):
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(obj), allow_nan=False)

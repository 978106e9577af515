"""The errors dlrun reports to users, and the exit code each maps to.

Exit codes: 0 ok · 1 runtime failure · 2 recipe, data or usage error · 130 interrupted.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class DlrunError(Exception):
    """An error with a message meant for the user (no traceback unless --debug)."""

    exit_code = EXIT_RUNTIME


class UsageError(DlrunError):
    exit_code = EXIT_USAGE


class DataError(DlrunError):
    """The data cannot be loaded or does not fit the recipe (missing file, wrong shape…)."""

    exit_code = EXIT_USAGE


class ModelBuildError(DlrunError):
    """The model section cannot be built (shape mismatch, bad layer argument value…)."""

    exit_code = EXIT_USAGE


class TrainingDiverged(DlrunError):
    """The loss became NaN or infinite; the run is FAILED and its last good checkpoint kept."""


class ResumeError(DlrunError):
    """A run cannot be resumed as asked (finished, still running, recipe changed…)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Location:
    """Where a value of a recipe came from: a file position or a ``--set`` argument."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class RecipeIssue:
    location: Location
    path: str  # dotted recipe path, e.g. model.layers[1]
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.location}: {where}{self.message}"


class RecipeError(DlrunError):
    """One or more problems of a recipe, each located in its file."""

    exit_code = EXIT_USAGE

    def __init__(self, issues: Iterable[RecipeIssue]):
        self.issues = sorted(
            issues, key=lambda i: (i.location.file, i.location.line or 0, i.location.column or 0)
        )
        super().__init__("\n".join(str(i) for i in self.issues))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` — did you mean 'x'?`` when a close match exists, else ``''``."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return f" — did you mean '{lowered[word.lower()]}'?"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        close = [lowered[m] for m in difflib.get_close_matches(word.lower(), lowered, n=1, cutoff=0.6)]
    return f" — did you mean '{close[0]}'?" if close else ""

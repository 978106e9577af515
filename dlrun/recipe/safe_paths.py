"""Recipe text that becomes a path dlrun writes to: it must stay inside the run directory.

Callbacks that write files take their path relative to the run directory. Checked twice: here
by the text alone (``dlrun validate``, no file system), and in
:func:`dlrun.training.callbacks.build_callbacks` against the real run directory (symlinks).
Names of folders (experiment, run name) are made safe by :func:`dlrun.track.rundir.safe_name`.

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

import re
import string
from pathlib import PurePosixPath
from typing import Any

# The argument of each callback that names a file or folder it writes.
CALLBACK_PATH_ARGS = {
    "ModelCheckpoint": "filepath",
    "TensorBoard": "log_dir",
    "CSVLogger": "filename",
    "BackupAndRestore": "backup_dir",
    "OrbaxCheckpoint": "directory",
}
# ModelCheckpoint fills ``{epoch}``/``{val_loss:.2f}`` fields in; a fill character in a format
# spec (``{epoch:/^3}`` → ``/1/``) could write separators and '..' the text does not show.
FORMATTED_ARGS = {("ModelCheckpoint", "filepath")}
_NUMBER_SPEC = re.compile(r"[0-9.,_+\- eEfFgGdn%]*")
_MAX_PATH, _MAX_PART = 1024, 255


def path_problem(text: Any, formatted: bool = False) -> str | None:
    """Why ``text`` is not a relative path that stays inside a folder, or None when it is fine."""
    if not isinstance(text, str):
        return None  # not a path at all: the schema or Keras reports the type
    if "\x00" in text:
        return "contains a NUL character"
    if "\\" in text:
        return "contains a backslash: write folders with '/'"
    if not text.strip():
        return "is empty"
    parts = PurePosixPath(text).parts
    if text.startswith("/"):
        return "is absolute: give a path relative to the run directory"
    if ".." in parts:
        return "goes up with '..': give a path inside the run directory"
    if len(text) > _MAX_PATH or any(len(p.encode()) > _MAX_PART for p in parts):
        return "is too long"
    return _format_problem(text) if formatted else None


def _format_problem(text: str) -> str | None:
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"is not a valid format string ({exc})"
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        if not field.isidentifier() or conversion or not _NUMBER_SPEC.fullmatch(spec or ""):
            return (f"has the field '{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}': "
                    f"write fields as {{epoch}}, {{epoch:02d}} or {{val_loss:.2f}}")
    return None


def callback_path_issues(name: str, args: dict) -> list[tuple[str, str]]:
    """(argument, problem) for the path argument of a callback, if it has one and it is unsafe."""
    key = CALLBACK_PATH_ARGS.get(name)
    if key is None or key not in args:
        return []
    problem = path_problem(args[key], formatted=(name, key) in FORMATTED_ARGS)
    return [(key, f"{name} {key} {problem}")] if problem else []

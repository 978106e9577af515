"""The files a recipe makes dlrun read, and the rule they follow.

Files a recipe reads: ``data.path`` (and a feature extractor's ``weights``), dlrun's file
layers (``PretrainedEmbedding.path``, ``SavedModel.path``, ``Pretrained.weights``), and every
argument of a Keras object that Keras reads as a file — a ``vocabulary`` given as text
(TextVectorization, StringLookup, IntegerLookup), and by name any ``path``, ``filepath``,
``filename``, ``file``, ``directory`` or ``*_path``/``*_file``/``*_dir`` argument (a plugin's
too), except the callback paths dlrun writes into the run directory.

The rule (:func:`read_issues`): a relative path resolves against the recipe's folder; the file
(symlinks followed) must lie inside that folder, inside a folder the user allowed
(``--allow-read DIR`` or ``DLRUN_ALLOW_READ``), or come from the user's own command line
(``--set``). URLs are refused: dlrun reads local files only. Everything read is recorded as an
input of the run (:func:`input_record`).

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Iterator

from dlrun.recipe.graph_check import graph_layers, per_output
from dlrun.recipe.kinds_check import part_layers
from dlrun.recipe.task_schema import TASK_IMAGE_KEYS
from dlrun.recipe.safe_paths import CALLBACK_PATH_ARGS
from dlrun.recipe.yaml_source import Path_, format_path

# dlrun's own layers that read a file, and the argument naming it ('imagenet' and null name none).
RECIPE_LAYER_PATH_ARGS = {"PretrainedEmbedding": ("path",), "SavedModel": ("path",), "Pretrained": ("weights",)}
NOT_FILES = (None, "imagenet")
_READ_NAMES = {"path", "filepath", "filename", "file", "directory", "vocabulary"}
_READ_SUFFIXES = ("_path", "_file", "_filepath", "_filename", "_dir", "_directory")
# Arguments whose text is no local file: RemoteMonitor's URL parts (a network callback).
_NOT_READ = {("RemoteMonitor", "path"), ("RemoteMonitor", "root")}
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
ALLOW_READ_ENV = "DLRUN_ALLOW_READ"
HASHED_UP_TO = 256 * 2**20  # bigger files are recorded by size and time only


def is_read_arg(owner: str, arg: str, value: Any) -> bool:
    """Whether ``owner``'s argument ``arg`` with this value names a file Keras (or dlrun) reads."""
    if not isinstance(value, str):
        return False  # a vocabulary given inline is data, not a file
    if owner in RECIPE_LAYER_PATH_ARGS:
        return arg in RECIPE_LAYER_PATH_ARGS[owner] and value not in NOT_FILES
    if CALLBACK_PATH_ARGS.get(owner) == arg or (owner, arg) in _NOT_READ:
        return False  # written into the run directory (safe_paths), or a URL part
    return arg in _READ_NAMES or arg.endswith(_READ_SUFFIXES)


def read_paths(raw: dict) -> Iterator[tuple[Path_, str]]:
    """``(recipe path, text)`` of every file the raw recipe mapping reads."""
    data = raw.get("data")
    if isinstance(data, dict):
        if isinstance(data.get("path"), str):
            yield ("data", "path"), data["path"]
        features = data.get("features")
        if isinstance(features, dict) and isinstance(features.get("weights"), str) and features["weights"] not in NOT_FILES:
            yield ("data", "features", "weights"), features["weights"]
    task = raw.get("task")
    if isinstance(task, dict):  # a task's images and its base's weights file
        for key in TASK_IMAGE_KEYS:
            if isinstance(task.get(key), str):
                yield ("task", key), task[key]
        base = task.get("base")
        if isinstance(base, dict) and isinstance(base.get("weights"), str) and base["weights"] not in NOT_FILES:
            yield ("task", "base", "weights"), base["weights"]
    for path, value in _keras_objects(raw):
        yield from _object_reads(value, path)


def _keras_objects(raw: dict) -> Iterator[tuple[Path_, Any]]:
    model, comp, fit = (raw.get(k) if isinstance(raw.get(k), dict) else {} for k in ("model", "compile", "fit"))
    for i, layer in enumerate(model.get("layers") if isinstance(model.get("layers"), list) else []):
        yield ("model", "layers", i), layer
    yield from graph_layers(raw)
    yield from part_layers(raw)
    for key in ("optimizer", "generator_optimizer", "loss"):
        if key in comp:
            yield ("compile", key), comp[key]
    for sub, loss in per_output(comp.get("loss"), "loss"):
        yield ("compile", "loss") + sub, loss
    for sub, metric in per_output(comp.get("metrics"), "metrics"):
        yield ("compile", "metrics") + sub, metric
    for key in ("metrics", "callbacks"):
        section = comp if key == "metrics" else fit
        for i, item in enumerate(section.get(key) if isinstance(section.get(key), list) else []):
            yield (("compile",) if key == "metrics" else ("fit",)) + (key, i), item
    fine_tune = fit.get("fine_tune")
    if isinstance(fine_tune, dict) and "optimizer" in fine_tune:
        yield ("fit", "fine_tune", "optimizer"), fine_tune["optimizer"]


def _object_reads(value: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    """The file arguments of one ``{Name: {args}}`` object, and of the objects inside its arguments."""
    if not (isinstance(value, dict) and len(value) == 1):
        return
    (name, args), = value.items()
    if not isinstance(args, dict):
        return
    for arg, arg_value in args.items():
        if is_read_arg(str(name), str(arg), arg_value):
            yield path + (name, arg), arg_value
        else:
            yield from _object_reads(arg_value, path + (name, arg))


def allowed_roots() -> list[Path]:
    """The folders the user allowed recipes to read (``DLRUN_ALLOW_READ`` and ``--allow-read``)."""
    from dlrun.recipe.permissions import current

    listed = [p for p in os.environ.get(ALLOW_READ_ENV, "").split(os.pathsep) if p.strip()]
    return [_resolved(Path(p).expanduser()) for p in [*listed, *current().read]]


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return path.absolute()


def resolve_read(text: str, base_dir: Path) -> Path:
    """Where a path from a recipe points: ``~`` expanded, relative to the recipe's folder, links followed."""
    path = Path(text).expanduser()
    return (path if path.is_absolute() else Path(base_dir) / path).resolve()


def reach_problem(text: str, base_dir: Path, trusted: bool, place: Path_ = ()) -> tuple[Path | None, str | None]:
    """``(resolved path, why it may not be read)``; ``trusted``: the user gave it on the command line;
    ``place``: where the recipe names it (for the hint)."""
    if URL.match(text):
        return None, "is a URL: a recipe reads local files only (download it, and name the file)"
    try:
        resolved = resolve_read(text, base_dir)
        resolved.exists()
    except (OSError, RuntimeError, ValueError):  # a NUL byte, a name too long, a symlink loop
        return None, "not a usable path (it holds a NUL byte, a name too long for the file system or a link loop)"
    if trusted:
        return resolved, None
    home = _resolved(Path(base_dir))
    roots = [home, *allowed_roots()]
    if any(resolved == root or resolved.is_relative_to(root) for root in roots):
        return resolved, None
    allow = resolved if resolved.is_dir() else resolved.parent
    return resolved, (f"{resolved} is outside the recipe's folder ({home}), and a recipe reads only files under its "
                      f"own folder — allow it with --allow-read {allow} (or {ALLOW_READ_ENV}), or give the path "
                      f"yourself with --set {format_path(place) or 'KEY'}=…")


def input_record(reads: list[tuple[Path_, str, Path]]) -> list[dict]:
    """What ``inputs.json`` says of each file a run reads: where the recipe names it, the path,
    its size and SHA-256 (a folder: its file count)."""
    record = []
    for place, text, resolved in reads:
        entry: dict[str, Any] = {"place": format_path(place), "given": text, "path": str(resolved)}
        try:
            if resolved.is_dir():
                entry["files"] = sum(1 for p in resolved.rglob("*") if p.is_file())
            elif resolved.is_file():
                entry["bytes"] = resolved.stat().st_size
                if entry["bytes"] <= HASHED_UP_TO:
                    entry["sha256"] = file_sha256(resolved)
        except OSError as exc:
            entry["error"] = str(exc)
        record.append(entry)
    return record


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def rebase_paths(resolved: dict, base_dir: Path) -> dict:
    """A copy of a resolved recipe whose relative file paths (every one :func:`read_paths`
    finds) are absolute, resolved against ``base_dir`` (the recipe's folder): for a recipe
    written to another folder (``dlrun tune``'s best recipe). Absolute paths (``~`` included)
    stay as written; callback paths are relative to the run folder, not the recipe, and stay too."""
    out = copy.deepcopy(resolved)
    for place, text in list(read_paths(out)):
        if not Path(text).expanduser().is_absolute() and not URL.match(text):
            node = out
            for part in place[:-1]:
                node = node[part]
            node[place[-1]] = str((Path(base_dir) / text).resolve())
    return out

"""Load a recipe file: YAML → ``extends`` → ``--set`` overrides → validated :class:`Recipe`.

Every problem of the file is collected and raised at once as a :class:`RecipeError`.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from dlrun.errors import Location, RecipeError, RecipeIssue
from dlrun.recipe.catalog import check_recipe_objects
from dlrun.recipe.reads import URL, input_record, reach_problem, read_paths, rebase_paths  # noqa: F401 - re-exported
from dlrun.recipe.schema import Recipe
from dlrun.recipe.validation import pydantic_issues
from dlrun.recipe.yaml_source import Path_, SourceMap, YamlProblem, format_path, load_yaml_text

MAX_EXTENDS_DEPTH = 16


@dataclass
class LoadedRecipe:
    recipe: Recipe
    path: Path
    resolved: dict  # the recipe as validated, defaults filled in (what runs and is saved)
    overrides: list[str] = field(default_factory=list)
    extends: list[Path] = field(default_factory=list)  # every file merged in, base first
    warnings: list[RecipeIssue] = field(default_factory=list)  # data not found, reads not allowed (validate only)
    reads: list[tuple[Path_, str, Path]] = field(default_factory=list)  # (place, as written, resolved)

    def inputs(self) -> list[dict]:
        """Every file the run reads, for its ``inputs.json``: place, path, size, SHA-256."""
        return input_record(self.reads)

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def _issue(source: SourceMap, path: Path_, message: str, at_key: bool = False) -> RecipeIssue:
    return RecipeIssue(source.locate(path, key=at_key), format_path(path), message)


# Values that are one thing, not a section: a child recipe's value replaces the base's whole.
_REPLACED_WHOLE = {("compile", "optimizer"), ("compile", "loss"), ("data", "split", "test"),
                   ("data", "split", "validation")}
# The key that chooses a section's kind; when the kind changes, its other keys mean nothing.
_KIND_KEYS = {("data",): "source", ("evaluation",): "protocol", ("model",): "type"}


def deep_merge(base: Any, override: Any, path: Path_ = ()) -> Any:
    """Sections merge key by key; lists, scalars, Keras objects and a section whose kind
    (``source``, ``protocol``…) changes are replaced whole."""
    if not (isinstance(base, dict) and isinstance(override, dict)) or path in _REPLACED_WHOLE:
        return override
    kind = _KIND_KEYS.get(path)
    if kind and kind in base and kind in override and base[kind] != override[kind]:
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(base[key], value, path + (key,)) if key in base else value
    return merged


def _read_document(path: Path) -> tuple[dict, SourceMap]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([RecipeIssue(Location(str(path)), "", "no such recipe file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([RecipeIssue(Location(str(path)), "", f"cannot read the recipe: {exc}")]) from None
    try:
        value, source = load_yaml_text(text, str(path))
    except YamlProblem as problem:
        raise RecipeError([problem.issue]) from None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise RecipeError([RecipeIssue(Location(str(path), 1, 1), "", "a recipe must be a YAML mapping")])
    return value, source


def _load_with_extends(path: Path, chain: tuple[Path, ...]) -> tuple[dict, SourceMap, list[Path]]:
    path = path.resolve()
    if path in chain:
        cycle = " → ".join(p.name for p in chain + (path,))
        raise RecipeError([RecipeIssue(Location(str(chain[-1])), "extends", f"extends cycle: {cycle}")])
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise RecipeError([RecipeIssue(Location(str(path)), "extends", "extends chain is too deep")])
    raw, source = _read_document(path)
    bases = raw.pop("extends", None)
    if bases is None:
        return raw, source, [path]
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError([_issue(source, ("extends",), "extends must be a file path or a list of file paths")])
    merged: dict = {}
    merged_source = SourceMap()
    files: list[Path] = []
    for i, base in enumerate(bases):
        where = ("extends",) if len(bases) == 1 and isinstance(raw.get("extends"), str) else ("extends", i)
        try:
            base_path = (path.parent / base).resolve()
            found = base_path.is_file()
        except (ValueError, OSError):  # a NUL byte, a name too long: no file has this path
            raise RecipeError([_issue(source, where, _UNUSABLE_PATH)]) from None
        if not found:
            raise RecipeError([_issue(source, where, f"no such file to extend: {base_path}")])
        base_raw, base_source, base_files = _load_with_extends(base_path, chain + (path,))
        merged = deep_merge(merged, base_raw)
        merged_source.update(base_source)
        files += [f for f in base_files if f not in files]
    merged = deep_merge(merged, raw)
    merged_source.update(source)
    return merged, merged_source, files + [path]


_SEGMENT = re.compile(r"([^.\[\]]+)|\[([0-9]+)\]")


def parse_dotted(key: str) -> Path_ | None:
    """``model.layers[1].Dense.units`` or ``model.layers.1.Dense.units`` → a path."""
    if not key or key.startswith(".") or key.endswith(".") or ".." in key:
        return None
    parts: list[Any] = []
    pos = 0
    for match in _SEGMENT.finditer(key):
        gap = key[pos:match.start()]
        if gap not in ("", "."):
            return None
        name, index = match.groups()
        parts.append(int(index) if index is not None else int(name) if name.isascii() and name.isdigit() else name)
        pos = match.end()
    return tuple(parts) if pos == len(key) else None


def apply_override(raw: dict, source: SourceMap, text: str, index: int) -> str:
    """Apply one ``--set dotted.key=value`` (the value read as YAML) in place; returns the override
    as it is recorded: file paths in it made absolute (:func:`_paths_from_cwd`).

    Setting a section's kind (``data.source``, ``evaluation.protocol``, ``model.type``) to another
    one starts that section anew, as ``extends`` does: only the keys given on the command line
    before stay (the old kind's keys would mean nothing, or something else)."""
    where = Location(f"--set #{index + 1} '{text}'")
    key, sep, value_text = text.partition("=")
    path = parse_dotted(key.strip())
    if not sep or path is None:
        raise RecipeError([RecipeIssue(where, "", "expected --set dotted.key=value, e.g. fit.epochs=4")])
    try:
        value, _ = load_yaml_text(value_text, str(where))
    except YamlProblem as problem:
        raise RecipeError([RecipeIssue(where, format_path(path), problem.issue.message)]) from None
    node: Any = raw
    for depth, part in enumerate(path[:-1]):
        here = format_path(path[: depth + 1])
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise RecipeError([RecipeIssue(where, here, "no such list item to set")])
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise RecipeError([RecipeIssue(where, here, "cannot set a key inside a non-mapping value")])
            node = node.setdefault(part, {})
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise RecipeError([RecipeIssue(where, format_path(path), "no such list item to set")])
    elif not isinstance(node, dict):
        raise RecipeError([RecipeIssue(where, format_path(path), "cannot set a key inside a non-mapping value")])
    if _KIND_KEYS.get(path[:-1]) == last and last in node and node[last] != value:
        _start_section_anew(node, source, path[:-1])
    node[last] = value
    # Everything under the overridden key now comes from the command line.
    for table in (source.values, source.keys):
        for p in [p for p in table if p[: len(path)] == path]:
            del table[p]
        table[path] = where
    return _paths_from_cwd(raw, path, key.strip(), value) or text


def _from_command_line(source: SourceMap, path: Path_) -> bool:
    return source.locate(path).file.startswith("--set #")


def _start_section_anew(section: dict, source: SourceMap, at: Path_) -> None:
    """Drop a section's keys but those set on the command line (its kind is about to change)."""
    for key in [k for k in section if not _from_command_line(source, at + (k,))]:
        del section[key]
        for table in (source.values, source.keys):
            for p in [p for p in table if p[: len(at) + 1] == at + (key,)]:
                del table[p]


def _paths_from_cwd(raw: dict, path: Path_, key: str, value: Any) -> str | None:
    """A file path given with ``--set`` is relative to the shell's folder, as any command line's
    is (a recipe's own paths stay relative to its file): made absolute in ``raw`` here. Returns the
    override rewritten with those paths, or None when it holds no relative path."""
    changed = False
    for place, text in list(read_paths(raw)):
        if place[: len(path)] != path or Path(text).expanduser().is_absolute() or URL.match(text):
            continue
        node = raw
        for part in place[:-1]:
            node = node[part]
        node[place[-1]] = os.path.abspath(text)
        changed = True
    if not changed:
        return None
    node = raw
    for part in path:
        node = node[part]
    return f"{key}={json.dumps(node, ensure_ascii=False)}"  # JSON is YAML: read back as the same value


_UNUSABLE_PATH = "not a usable path (it holds a NUL byte or a name too long for the file system)"
# Sources whose path is a folder (text_directory may also name an archive file).
_FOLDER_SOURCES = {"image_directory": "folder", "text_directory": "folder or archive"}
_VALID_ELSEWHERE = " (the recipe is valid; it runs where the data is)"
_VALID_IF_ALLOWED = " (the recipe is valid; a run needs that permission)"


def _read_issues(raw: dict, recipe: Recipe, base_dir: Path, source: SourceMap
                 ) -> tuple[list[tuple[Path_, str, Path]], list[RecipeIssue], list[RecipeIssue]]:
    """The files the recipe reads ``(place, text, resolved)``, those it may not read (outside its
    folder and not allowed: :func:`dlrun.recipe.reads.reach_problem`), and those missing here."""
    reads, refused, missing = [], [], []
    for place, text in read_paths(raw):
        trusted = source.locate(place).file.startswith("--set #")  # typed by the user: theirs to read
        resolved, problem = reach_problem(text, base_dir, trusted, place)
        if problem:
            refused.append(_issue(source, place, problem))
        if resolved is None:  # a URL, a path no file system can hold
            continue
        if not problem:
            reads.append((place, text, resolved))
        kind = _FOLDER_SOURCES.get(recipe.data.source) if place == ("data", "path") else None
        if kind == "folder" and not resolved.is_dir():
            missing.append(_issue(source, place, f"no such folder: {resolved}"))
        elif kind == "folder or archive" and not resolved.exists():
            missing.append(_issue(source, place, f"no such folder or archive: {resolved}"))
        elif kind is None and not (resolved.is_file() or (place[-1].endswith(("dir", "directory"))
                                                           and resolved.is_dir())):
            missing.append(_issue(source, place, f"no such file: {resolved}"))
    return reads, refused, missing


def _network_uses(recipe: Recipe, source: SourceMap) -> list[RecipeIssue]:
    """The recipe's callbacks that reach the network, when the command did not allow it."""
    from dlrun.recipe.permissions import network_problem

    problems = ((i, network_problem(callback.name)) for i, callback in enumerate(recipe.fit.callbacks))
    return [_issue(source, ("fit", "callbacks", i), problem) for i, problem in problems if problem]


def load_recipe(path: str | Path, overrides: Iterable[str] = (), *, require_data: bool = True) -> LoadedRecipe:
    """Read, merge, override and validate a recipe; raise RecipeError listing every problem.

    With ``require_data=False`` (``dlrun validate``) a data file missing on this machine is a
    warning on the result, not an error: the recipe itself is valid where the data is. So is a
    file outside the recipe's folder, or a network callback, that the command did not allow
    (:mod:`dlrun.recipe.permissions`)."""
    path = Path(path)
    raw, source, files = _load_with_extends(path, ())
    raw = copy.deepcopy(raw)
    # Recorded with their paths absolute: a resumed run or a tuning trial replays them anywhere.
    overrides = [apply_override(raw, source, text, i) for i, text in enumerate(overrides)]
    raw.setdefault("name", path.stem)

    issues = [_issue(source, p, msg, at_key) for p, msg, at_key in check_recipe_objects(raw)]
    recipe = None
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        flagged = {i.path for i in issues}
        issues += [
            _issue(source, p, msg, at_key)
            for p, msg, at_key in pydantic_issues(exc, Recipe)
            if format_path(p) not in flagged
        ]
    if recipe is not None and recipe.search is not None:  # every searched path and value fits the recipe
        from dlrun.recipe.search_schema import search_issues

        issues += [_issue(source, p, msg, at_key) for p, msg, at_key in search_issues(raw, recipe)]
    reads, refused, missing = _read_issues(raw, recipe, path.parent, source) if recipe is not None else ([], [], [])
    network = _network_uses(recipe, source) if recipe is not None else []
    if require_data:
        issues += refused + missing + network
    if issues:
        raise RecipeError(issues)
    warnings = [] if require_data else [
        *(RecipeIssue(i.location, i.path, i.message + _VALID_IF_ALLOWED) for i in refused),
        *(RecipeIssue(i.location, i.path, i.message + _VALID_ELSEWHERE) for i in missing),
        *(RecipeIssue(i.location, i.path, i.message + _VALID_IF_ALLOWED) for i in network)]
    recipe.attach_source(source, path.parent.resolve())
    resolved = recipe.model_dump(mode="json")
    return LoadedRecipe(recipe, path.resolve(), resolved, overrides, files[:-1], warnings, reads)

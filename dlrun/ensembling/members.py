"""Which saved models an ensemble is made of, and the data each one was trained on.

Runs are named as ``dlrun compare`` names them (directory, run id, recipe file or name; its
resolver is reused). One K-fold run named alone stands for its fold models; with other runs,
for its refit model (``final/``). ``RUN/folds/fold_2`` or ``RUN/final`` name one model.
TensorFlow is not imported here.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dlrun.errors import UsageError

MODEL_FILE = "model.keras"


@dataclass
class Member:
    label: str
    model_path: Path
    run_dir: Path  # the run (the top-level directory that holds recipe.yaml)
    recipe: Any  # dlrun.recipe.schema.Recipe
    resolved: dict  # the run's saved recipe.yaml
    base_dir: Path  # the recipe file's folder (relative data paths)
    train: np.ndarray | None  # training rows (None: all of them)
    validation: np.ndarray | None  # rows it was validated on, never trained on
    run_id: str | None = None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _top_run(path: Path) -> Path:
    """The run a fold or final directory belongs to (the folder with the saved recipe)."""
    for folder in [path, *path.parents][:3]:
        if (folder / "recipe.yaml").is_file():
            return folder
    raise UsageError(f"{path} has no recipe.yaml (nor its run above it): it is not a dlrun run directory")


def _recipe(run: Path) -> tuple[Any, dict, Path]:
    from pydantic import ValidationError

    from dlrun.recipe.schema import Recipe

    resolved = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8")) or {}
    try:
        recipe = Recipe.model_validate(resolved)
    except ValidationError as exc:
        raise UsageError(f"{run / 'recipe.yaml'} is not a recipe this dlrun reads: {exc.errors()[0]['msg']}") from None
    recipe_file = _read_json(run / "run.json").get("recipe_file")
    base_dir = Path(recipe_file).parent if recipe_file else run
    return recipe, resolved, base_dir


def _rows(splits: dict, name: str, run: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    part = splits.get(name)
    if not isinstance(part, dict) or part.get("train") is None:
        raise UsageError(f"{run / 'splits.json'} does not record the rows '{name}' was trained on "
                         "(a streamed source fixes its own parts; ensembles need in-memory data)")
    val = part.get("validation")
    return np.asarray(part["train"], dtype=int), None if val is None else np.asarray(val, dtype=int)


def _no_model(path: Path, resolved: dict) -> UsageError:
    if not (resolved.get("tracking") or {}).get("log_model", True):
        why = "its recipe has tracking.log_model: false; train it again with --set tracking.log_model=true"
    else:
        why = "the run saved none (did it finish?)"
    return UsageError(f"no saved model in {path} ({MODEL_FILE}): {why}")


def _member(path: Path, label: str, read_recipe=_recipe) -> Member:
    """One saved model: a hold-out run, a fold directory or a refit (``final``) directory.
    ``read_recipe(run)`` gives the run's recipe as :func:`_recipe` does (a caller may cache it)."""
    run = _top_run(path)
    recipe, resolved, base_dir = read_recipe(run)
    if not (path / MODEL_FILE).is_file():
        raise _no_model(path, resolved)
    status = _read_json(run / "run.json")
    if status.get("status") != "FINISHED":
        raise UsageError(f"run {run} is {status.get('status', 'without run.json')}: ensemble finished runs only")
    if path.name == "final" and path != run:
        train, validation = None, None  # the refit trains on every training row
    else:
        name = path.name if path != run else "holdout"
        train, validation = _rows(_read_json(run / "splits.json"), name, run)
    run_id = _read_json(path / "run.json").get("mlflow_run_id")
    return Member(label, path / MODEL_FILE, run, recipe, resolved, base_dir, train, validation, run_id)


def _label(run: Path, resolved: dict, suffix: str = "") -> str:
    name = (resolved.get("tracking") or {}).get("run_name") or resolved.get("name") or run.parent.name
    short = run.name.split("-")[2] if run.name.count("-") >= 2 else run.name
    return f"{name} ({short}){suffix}"


def resolve_members(refs: list[str], output_root: Path, tracking_uri: str | None = None) -> list[Member]:
    """The ensemble's members, each with its recipe and its training rows."""
    from dlrun.compare import resolve_run

    if not refs:
        raise UsageError("name a K-fold run (its folds are the members) or several runs to ensemble")
    paths = [resolve_run(ref, output_root, tracking_uri) for ref in refs]
    recipes: dict[Path, tuple[Any, dict, Path]] = {}

    def read_recipe(run: Path) -> tuple[Any, dict, Path]:  # each run's recipe.yaml read once, not once a fold
        if run not in recipes:
            recipes[run] = _recipe(run)
        return recipes[run]

    members: list[Member] = []
    for path in paths:
        folds = path / "folds"
        if folds.is_dir() and (len(paths) == 1 or not (path / "final" / MODEL_FILE).is_file()):
            if len(paths) > 1:
                raise UsageError(f"{path} is a K-fold run without a refit model (final/{MODEL_FILE}): name it "
                                 "alone to ensemble its folds, or name its folds (RUN/folds/fold_N)")
            resolved = read_recipe(path)[1]
            for fold in sorted((p for p in folds.iterdir() if p.is_dir()), key=_fold_order):
                members.append(_member(fold, _label(path, resolved, f" {fold.name}"), read_recipe))
            if len(members) < 2:
                raise UsageError(f"{path} has {len(members)} fold model(s); an ensemble needs two or more")
        elif folds.is_dir():
            members.append(_member(path / "final", _label(path, read_recipe(path)[1], " final"), read_recipe))
        else:
            run = _top_run(path)
            suffix = f" {path.name}" if path != run else ""
            members.append(_member(path, _label(run, read_recipe(run)[1], suffix), read_recipe))
    if len(members) < 2:
        raise UsageError("an ensemble needs two or more models: name a K-fold run, or several runs")
    if len({m.model_path for m in members}) < len(members):
        raise UsageError("the same model is named twice")
    check_same_data(members)
    return members


def _fold_order(path: Path) -> tuple:
    digits = "".join(c if c.isdigit() else " " for c in path.name).split()
    return tuple(int(d) for d in digits), path.name


def _data_section(member: Member) -> dict:
    """What fixes the data and its test split: the data section (its validation part aside)."""
    data = copy.deepcopy(member.resolved.get("data") or {})
    (data.get("split") or {}).pop("validation", None)
    return data


def check_same_data(members: list[Member]) -> None:
    """Every member must have been trained on the same data and tested on the same rows."""
    from dlrun.training.resume import recipe_diff

    first = members[0]
    for member in members[1:]:
        diff = recipe_diff(_data_section(first), _data_section(member))
        if diff:
            raise UsageError(f"members trained on different data: '{first.label}' and '{member.label}' have "
                             f"different data sections:\n{diff}")
        if first.recipe.compile.loss_names != member.recipe.compile.loss_names:
            raise UsageError(f"members trained with different losses: '{first.label}' "
                             f"{first.recipe.compile.loss_names}, '{member.label}' {member.recipe.compile.loss_names}")

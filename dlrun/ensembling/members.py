"""Which saved models an ensemble is made of, and the data each one was trained on.

Runs are named as ``dlrun compare`` names them (directory, run id, recipe file or name; its
resolver is reused). One K-fold run named alone stands for its fold models; with other runs,
for its refit model (``final/``). ``RUN/folds/fold_2`` or ``RUN/final`` name one model.
TensorFlow is not imported here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import UsageError
from dlrun.track.runs import MODEL_FILE, RunReader, resolve_run


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
    job: RunReader | None = None  # the job directory read back (its fitted preprocessing)


def _member(job: RunReader, label: str) -> Member:
    """One saved model: a hold-out run, a fold directory or a refit (``final``) directory."""
    run = job.top
    model_path = job.model_path
    job.require_finished("dlrun ensemble")
    train, validation = job.training_rows()
    return Member(label, model_path, run.path, run.recipe, run.resolved, run.base_dir,
                  None if train is None else np.asarray(train, dtype=int),
                  None if validation is None else np.asarray(validation, dtype=int), job.run_id, job)


def _label(run: RunReader, suffix: str = "") -> str:
    name = run.name
    short = run.path.name.split("-")[2] if run.path.name.count("-") >= 2 else run.path.name
    return f"{name} ({short}){suffix}"


def resolve_members(refs: list[str], output_root: Path, tracking_uri: str | None = None) -> list[Member]:
    """The ensemble's members, each with its recipe and its training rows."""
    if not refs:
        raise UsageError("name a K-fold run (its folds are the members) or several runs to ensemble")
    # One reader per run: each run's recipe.yaml is read once, not once per model.
    tops: dict[Path, RunReader] = {}

    def top_of(job: RunReader) -> RunReader:
        return tops.setdefault(job.top.path, job.top)

    members: list[Member] = []
    jobs = [RunReader(resolve_run(ref, output_root, tracking_uri)) for ref in refs]
    for job in jobs:
        run = top_of(job)
        job = run if job.path == run.path else RunReader(job.path, run)
        folds = run.folds() if job.path == run.path else []
        final = run.final() if folds else None
        has_refit = final is not None and (final.path / MODEL_FILE).is_file()
        if folds and (len(jobs) == 1 or not has_refit):
            if len(jobs) > 1:
                raise UsageError(f"{job.path} is a K-fold run without a refit model (final/{MODEL_FILE}): name it "
                                 "alone to ensemble its folds, or name its folds (RUN/folds/fold_N)")
            for fold in folds:
                members.append(_member(fold, _label(run, f" {fold.path.name}")))
            if len(members) < 2:
                raise UsageError(f"{job.path} has {len(members)} fold model(s); an ensemble needs two or more")
        elif folds:
            members.append(_member(final, _label(run, " final")))
        else:
            suffix = f" {job.path.name}" if job.path != run.path else ""
            members.append(_member(job, _label(run, suffix)))
    if len(members) < 2:
        raise UsageError("an ensemble needs two or more models: name a K-fold run, or several runs")
    if len({m.model_path for m in members}) < len(members):
        raise UsageError("the same model is named twice")
    check_same_data(members)
    return members


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

"""``dlrun train --resume RUN``: find the run, check it may be resumed, and get its recipe.

A run may be resumed when it did not finish (KILLED, FAILED, or RUNNING in a process that
died: preempted, out of memory) and no live process holds it. Its recipe is read again from
the file it was started from, with the same ``--set`` overrides; if the result differs from
the recipe the run saved, resuming is refused with the difference unless forced.
"""

from __future__ import annotations

import difflib
import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from dlrun.errors import ResumeError
from dlrun.recipe.loading import LoadedRecipe, load_recipe

LOCK_FILE = ".lock"


@dataclass
class ResumeTarget:
    run_dir: Path
    status: dict  # run.json as it was before resuming
    loaded: LoadedRecipe
    changed: bool  # the recipe differs from the saved one (resumed with --force)


def find_run(run: str, output_root: Path) -> Path:
    """The run to resume: its directory (a fold's names its run), or its MLflow run id, a prefix of
    it or its folder's hex, looked up under ``output_root`` (and in the store) by the run reader."""
    from dlrun.errors import UsageError
    from dlrun.track.runs import RunReader, is_run_dir, run_by_id, runs_root

    path = Path(run).expanduser()
    try:
        found = path if is_run_dir(path) else run_by_id(run, output_root)
        if found is not None:
            try:
                return RunReader(found).top.path.resolve()
            except UsageError:  # no saved recipe above it: prepare_resume says what is missing
                return Path(found).resolve()
    except UsageError as exc:  # an ambiguous id, a store pointing at a missing folder
        raise ResumeError(f"--resume {run}: {exc}") from None
    raise ResumeError(f"--resume {run}: no run directory (with a run.json) there, and no run with that MLflow "
                      f"run id under {runs_root(output_root)}")


@contextmanager
def locked_run(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock (the system drops it if the process dies); fails at once
    when another process holds it."""
    fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _still_running(run_dir, fd) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def check_not_running(run_dir: Path) -> None:
    """Refuse at once, before any work, a run that another live process holds."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _still_running(run_dir, fd) from None
    finally:
        os.close(fd)  # closing drops a lock taken here


def _still_running(run_dir: Path, fd: int) -> ResumeError:
    try:
        holder = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        holder = ""
    process = f"another process (pid {holder})" if holder.isdigit() else "another process"
    return ResumeError(f"run {run_dir} is still running in {process}; wait for it or stop it first")


def recheck_resume(target: ResumeTarget) -> None:
    """Under the run's lock: the run is still as :func:`prepare_resume` found it. Another
    ``--resume`` of it may have held the lock meanwhile and finished the run (then there is
    nothing to resume) or left it in another state (then its checkpoint and recipe must be
    checked again: resume once more)."""
    status = _read_status(target.run_dir)
    if status == target.status:
        return
    if status.get("status") == "FINISHED":
        raise ResumeError(f"run {target.run_dir} finished in another process while this one was getting ready; "
                          "there is nothing to resume")
    raise ResumeError(f"run {target.run_dir} was run by another process while this one was getting ready (it is "
                      f"{status.get('status')} now); resume it again to continue from where that one stopped")


def _read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise ResumeError(f"--resume: cannot read {run_dir / 'run.json'}: {exc}") from None


def prepare_resume(run: str, output_root: Path, recipe: Path | None, overrides: list[str], force: bool
                   ) -> ResumeTarget:
    run_dir = find_run(run, output_root)
    check_not_running(run_dir)
    status = _read_status(run_dir)
    if status.get("status") == "FINISHED":
        raise ResumeError(f"run {run_dir} finished; there is nothing to resume (train it again to start a new run)")
    if recipe is None:
        if not status.get("recipe_file"):
            raise ResumeError(f"run {run_dir} does not record its recipe file: give it, "
                              f"dlrun train RECIPE --resume {run}")
        recipe = Path(status["recipe_file"])
        if not recipe.is_file():
            raise ResumeError(f"the run's recipe {recipe} is gone: give the recipe, dlrun train RECIPE --resume {run}")
    loaded = load_recipe(recipe, [*status.get("overrides", []), *overrides])
    if not loaded.recipe.fit.checkpoint:
        raise ResumeError(f"run {run_dir} saved no training state (fit.checkpoint: false): train it again instead")
    before = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    diff = recipe_diff(before, loaded.resolved)
    if diff and not force:
        raise ResumeError(f"the recipe changed since run {run_dir} started; resume with --force to continue "
                          f"with the new one:\n{diff}")
    _check_checkpoints(run_dir, loaded.recipe.fit.batch_size)
    return ResumeTarget(run_dir, status, loaded, bool(diff))


def load_for_run(recipe: Path | None, overrides: list[str], output_root: Path, resume: str | None = None,
                 force: bool = False) -> tuple[LoadedRecipe, ResumeTarget | None]:
    """What ``dlrun train`` (CLI or API) runs: the recipe, or the resumed run's (and the run)."""
    if resume is not None:
        target = prepare_resume(resume, output_root, recipe, overrides, force)
        return target.loaded, target
    if recipe is None:
        from dlrun.errors import UsageError

        raise UsageError("give a recipe file, or --resume RUN to continue a run")
    return load_recipe(recipe, overrides), None


def _check_checkpoints(run_dir: Path, batch_size: int) -> None:
    """Each job's checkpoint (the hold-out job's, or any fold's) can be resumed from, before the run
    is touched: it is readable, and one saved inside an epoch counts batches of its batch size,
    which a forced resume may not change."""
    from dlrun.training.checkpoints import CHECKPOINT_DIR, checkpoint_problem, load_checkpoint

    for folder in [run_dir, *sorted(run_dir.glob("folds/*"))]:
        problem = checkpoint_problem(folder)
        if problem:
            raise ResumeError(
                f"{folder / CHECKPOINT_DIR} is damaged ({problem}), so the run cannot continue from it: remove "
                f"that folder to train this job again from its first epoch, or train the recipe as a new run")
        saved = load_checkpoint(folder) if (folder / CHECKPOINT_DIR).is_dir() else None
        if saved is not None and saved.batch and saved.batch_size not in (None, batch_size):
            raise ResumeError(
                f"{folder}: its checkpoint was saved after {saved.batch} batches of {saved.batch_size} in epoch "
                f"{saved.epoch + 1}; fit.batch_size is now {batch_size}, so those batches cannot be skipped. "
                f"Put batch_size back to {saved.batch_size} to resume this run")


def recipe_diff(before: dict, after: dict) -> str:
    """A unified diff of two resolved recipes ('' when equal)."""
    if before == after:
        return ""
    a = yaml.safe_dump(before, sort_keys=False).splitlines(keepends=True)
    b = yaml.safe_dump(after, sort_keys=False).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, "recipe.yaml (run)", "recipe (now)"))


def relog_missing_epochs(tracked, history: dict[str, list[float]]) -> int:
    """Log epochs kept in the run directory that MLflow lacks (a crash between the checkpoint
    and the MLflow write); returns how many. MLflow never has an epoch the checkpoint lacks."""
    if tracked is None or not getattr(tracked, "run_id", None) or not history:
        return 0
    key = next(iter(history))
    try:
        logged = {m.step for m in tracked.client.get_metric_history(tracked.run_id, key)}
    except Exception:  # noqa: BLE001 - the store may be offline: sync uploads it later
        return 0
    missing = [epoch for epoch in range(1, len(history[key]) + 1) if epoch not in logged]
    for epoch in missing:
        tracked.log_epoch({k: v[epoch - 1] for k, v in history.items() if epoch <= len(v)}, step=epoch)
    return len(missing)

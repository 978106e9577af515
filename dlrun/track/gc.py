"""``dlrun gc``: free the disk that old runs take, keeping what they recorded.

A run's heavy files are its jobs' resume state (``checkpoint/``), their trained models
(``model.keras``) and the recipe's ModelCheckpoint saves (``checkpoints/``); in MLflow, the
models it logged and — in runs an older dlrun uploaded — copies of those files among its
artifacts. Pruning a run removes them and keeps its records: run.json (which notes what was
removed), the recipe, history, metrics, splits, preprocessing, plots, and its MLflow run with
params, metrics and the other artifacts.

Which runs: in each experiment the ``keep`` newest runs and the ``keep`` newest FINISHED runs
(what ``dlrun predict RECIPE`` uses) are left whole, and so is every run recorded RUNNING — a
stale one too, ``--resume`` continues it — or held by a live process. With ``older_than``
(seconds) only runs that ended longer ago are pruned. A logged model that a registered model
version uses stays. mlflow is imported only to prune a store.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from dlrun.errors import UsageError, did_you_mean
from dlrun.track.rundir import (CHECKPOINT_DIR, MODEL_FILE, RunDir, folder_size, job_dirs, utc_now)
from dlrun.track.runs import RunReader, all_run_dirs, lock_if_free, runs_root

SAVES_DIR = "checkpoints"  # ModelCheckpoint's default folder (dlrun.training.callbacks)
HEAVY = (CHECKPOINT_DIR, MODEL_FILE, SAVES_DIR)
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` → seconds."""
    match = _AGE.match(text)
    if not match:
        raise UsageError(f"--older-than {text}: give a number and a unit, e.g. 12h, 7d or 2w (s, m, h, d, w)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


@dataclass
class PrunedRun:
    run_dir: str
    experiment: str
    status: str
    files: list[str] = field(default_factory=list)  # relative to the run directory
    bytes: int = 0
    mlflow_models: list[str] = field(default_factory=list)  # logged model ids
    mlflow_files: list[str] = field(default_factory=list)  # artifact paths of old copies
    mlflow_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GcResult:
    dry_run: bool
    pruned: list[PrunedRun] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)  # {run_dir, why}
    warnings: list[str] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(p.bytes + p.mlflow_bytes for p in self.pruned)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "freed_bytes": self.freed, "pruned": [p.to_dict() for p in self.pruned],
                "kept": self.kept, "warnings": self.warnings}

    def lines(self) -> list[str]:
        verb = "would free" if self.dry_run else "freed"
        out = []
        for run in self.pruned:
            mlflow = f", MLflow {_mb(run.mlflow_bytes)} ({len(run.mlflow_models)} logged models)" \
                if run.mlflow_models or run.mlflow_files else ""
            out.append(f"{run.run_dir} ({run.status}): {_mb(run.bytes)} in {len(run.files)} files{mlflow}")
        runs = len(self.pruned)
        out.append(f"{verb} {_mb(self.freed)} from {runs} run{'s' if runs != 1 else ''}; "
                   f"{len(self.kept)} left whole" + (" (dry run: nothing removed)" if self.dry_run else ""))
        return out


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def collect_garbage(output_root: Path | str, *, keep: int = 1, older_than: float | None = None,
                    experiment: str | None = None, dry_run: bool = False) -> GcResult:
    """Prune the heavy files of the runs under ``output_root`` that the rules above do not keep."""
    if keep < 0:
        raise UsageError("--keep must be 0 or more")
    root = Path(output_root).expanduser().absolute()
    dirs = all_run_dirs(root)
    if experiment is not None:
        known = sorted({p.parent.name for p in dirs})
        if experiment not in known:
            raise UsageError(f"--experiment {experiment}: no runs of it under {runs_root(root)}"
                             f"{did_you_mean(experiment, known)}")
        dirs = [p for p in dirs if p.parent.name == experiment]
    result = GcResult(dry_run)
    for path, why in _decisions(dirs, keep, older_than):
        if why is not None:
            result.kept.append({"run_dir": str(path), "why": why})
            continue
        with lock_if_free(path) as locked:
            if not locked:  # started by --resume since it was looked at
                result.kept.append({"run_dir": str(path), "why": "held by a live process"})
                continue
            pruned = _prune(RunReader(path), dry_run, result.warnings)
        if pruned.files or pruned.mlflow_models or pruned.mlflow_files:
            result.pruned.append(pruned)
    return result


def _decisions(dirs: list[Path], keep: int, older_than: float | None):
    """``(run directory, why it is kept or None)``, newest first in each experiment."""
    by_experiment: dict[Path, list[Path]] = {}
    for path in dirs:
        by_experiment.setdefault(path.parent, []).append(path)
    now = utc_now()
    for runs in by_experiment.values():
        runs = sorted(runs, key=lambda p: p.name, reverse=True)  # folder names sort by UTC start time
        finished = [p for p in runs if RunReader(p).state == "FINISHED"][:keep]
        for index, path in enumerate(runs):
            run = RunReader(path)
            if run.state is None:
                yield path, "no run.json: not a run dlrun can judge"
            elif run.state == "RUNNING":
                yield path, "stale: RUNNING, no live process (--resume continues it)" if run.stale else "running"
            elif run.holder() is not None:
                yield path, "held by a live process"
            elif index < keep:
                yield path, f"one of the {keep} newest runs of its experiment"
            elif path in finished:
                yield path, f"one of the {keep} newest finished runs of its experiment"
            elif older_than is not None and _age(run, now) < older_than:
                yield path, "newer than --older-than"
            else:
                yield path, None


def _age(run: RunReader, now: datetime) -> float:
    stamp = run.status.get("end_time") or run.status.get("start_time")
    try:
        moment = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        moment = datetime.fromtimestamp(run.path.stat().st_mtime, timezone.utc)
    return (now - moment).total_seconds()


def _prune(run: RunReader, dry_run: bool, warnings: list[str]) -> PrunedRun:
    pruned = PrunedRun(str(run.path), run.path.parent.name, str(run.state))
    for job in job_dirs(run.path):
        for name in HEAVY:
            target = job / name
            if target.exists() and not target.is_symlink():
                pruned.files.append(target.relative_to(run.path).as_posix())
                pruned.bytes += folder_size(target)
                if not dry_run:
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
    _prune_mlflow(run, pruned, dry_run, warnings)
    if not dry_run and (pruned.files or pruned.mlflow_models or pruned.mlflow_files):
        earlier = run.status.get("pruned") or []
        record = {"at": utc_now().isoformat(timespec="seconds"), "files": pruned.files,
                  "mlflow_models": pruned.mlflow_models, "bytes": pruned.bytes + pruned.mlflow_bytes}
        RunDir(run.path).write_status(str(run.state), pruned=[*earlier, record])
    return pruned


def _prune_mlflow(run: RunReader, pruned: PrunedRun, dry_run: bool, warnings: list[str]) -> None:
    """The run's (and its folds') logged models, and old copies of heavy files among their artifacts."""
    uri = run.status.get("tracking_uri")
    run_ids = [i for i in (RunReader(job).run_id for job in job_dirs(run.path)) if i]
    if not uri or not run_ids:
        return
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        for run_id in dict.fromkeys(run_ids):
            _prune_mlflow_run(client, run_id, pruned, dry_run)
    except Exception as exc:  # noqa: BLE001 - the run directory is pruned all the same
        warnings.append(f"{run.path}: its MLflow store {uri} was left as it is ({type(exc).__name__}: {exc})")


def _prune_mlflow_run(client, run_id: str, pruned: PrunedRun, dry_run: bool) -> None:
    from mlflow.exceptions import MlflowException

    from dlrun.track._outage import use_short_http_retries

    use_short_http_retries()
    tracked = client.get_run(run_id)
    registered = {getattr(v, "model_id", None) for v in client.search_model_versions(f"run_id = '{run_id}'")}
    for output in tracked.outputs.model_outputs if tracked.outputs else []:
        try:
            model = client.get_logged_model(output.model_id)
        except MlflowException:
            continue  # deleted before (an earlier gc)
        if model.model_id in registered:
            continue
        local = _local_path(model.artifact_location)
        pruned.mlflow_models.append(model.model_id)
        pruned.mlflow_bytes += folder_size(local) if local else 0
        if not dry_run:
            client.delete_logged_model(model.model_id)
            if local and local.exists():
                shutil.rmtree(local.parent if local.name == "artifacts" else local, ignore_errors=True)
    folder = _local_path(tracked.info.artifact_uri)  # copies an older dlrun uploaded
    if folder is None or not folder.is_dir():
        return
    found: list[Path] = []
    for target in sorted(p for p in folder.rglob("*") if p.name in HEAVY):
        if any(target.is_relative_to(f) for f in found):
            continue  # inside a folder already counted
        found.append(target)
        pruned.mlflow_files.append(target.relative_to(folder).as_posix())
        pruned.mlflow_bytes += folder_size(target)
        if not dry_run:
            shutil.rmtree(target) if target.is_dir() else target.unlink()


def _local_path(uri: str | None) -> Path | None:
    """A ``file://`` artifact location as a path; None for a server's."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(uri) if parsed.scheme == "" else None

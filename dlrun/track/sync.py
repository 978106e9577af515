"""``dlrun sync RUN``: upload a run directory kept while the tracking store was away.

What goes up is what the runner would have logged:

- the run: continued when ``run.json`` names a run the store has, else created — and its id
  written into ``run.json`` at once, so a sync cut short continues the same run next time;
- params: the flattened resolved recipe (``recipe.yaml``), those the run lacks;
- the per-epoch history (``history.csv``) with ``step=epoch``, only the steps the store lacks
  (syncing again never duplicates a point); a K-fold parent's fold-averaged curves too;
- final metrics (``summary.json``, else ``metrics.json``) not already there with that value;
- the ``dlrun.*`` tags and ``dlrun.synced``;
- artifacts: the run directory's files, each uploaded unless the store has that path at that
  size (``folds/`` go to their own runs);
- K-fold folds (``folds/<name>/``) as nested child runs, the same way;
- the final status and end time recorded in ``run.json``.

Then ``run.json`` records ``"tracking": "synced"`` with the run id, URI and time. The store is
used strictly: unreachable → :class:`SyncError` (exit 1) and a later sync picks up from there.
mlflow is imported inside the functions only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dlrun.errors import DlrunError, UsageError
from dlrun.track._mlflow_common import (
    MAX_METRICS_PER_BATCH,
    RUN_STATUSES,
    TAG_ERROR,
    _metric_value,
    _safe_key,
    flatten_params,
    resolve_tracking_uri,
)
from dlrun.track._outage import TRACKING_FILE, is_outage_error, short_reason, utc_iso
from dlrun.track.mlflow_ui import show_main_metrics, split_summary
from dlrun.track.rundir import HISTORY_FILE, NOT_ARTIFACTS, STATUS_FILE, RunDir

TAG_SYNCED = "dlrun.synced"


class SyncError(DlrunError):
    """The store could not be reached or refused the upload (exit code 1)."""


@dataclass
class SyncResult:
    run_dir: str
    run_id: str
    tracking_uri: str
    created: bool
    status: str
    params: int = 0
    metric_points: int = 0
    artifacts: int = 0
    folds: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verb = "created" if self.created else "continued"
        folds = f", {len(self.folds)} fold runs" if self.folds else ""
        points = self.metric_points + sum(f["metric_points"] for f in self.folds)
        return (f"synced {self.run_dir} → run {self.run_id} ({verb}, {self.status}) at {self.tracking_uri}: "
                f"{self.params} params, {points} metric points, "
                f"{self.artifacts + sum(f['artifacts'] for f in self.folds)} files uploaded{folds}")


def sync_run(run_dir: str | Path, *, tracking_uri: str | None = None, output_root: str | Path | None = None
             ) -> SyncResult:
    """Upload one run directory (see the module doc). ``tracking_uri`` defaults to the URI the
    run recorded, then ``$MLFLOW_TRACKING_URI``, then the embedded store of ``output_root``
    (default: the output root the run directory sits in)."""
    from dlrun.track.mlflow_store import Tracker

    path = Path(run_dir).expanduser().absolute()
    info, recipe = _read_run(path)
    experiment = (recipe.get("tracking") or {}).get("experiment") or recipe.get("name") or path.parent.name
    root = Path(output_root).expanduser().absolute() if output_root else _output_root_of(path)
    uri = tracking_uri or info.get("tracking_uri") or resolve_tracking_uri(None, root)
    try:
        tracker = Tracker(uri, str(experiment), root / "mlartifacts", strict=True)
        return _sync_one(tracker, RunDir(path), info, recipe)
    except DlrunError:
        raise
    except Exception as exc:
        if is_outage_error(exc):
            raise SyncError(
                f"cannot reach the MLflow store at {uri} ({short_reason(exc)}); {path} is not (fully) "
                f"uploaded — run 'dlrun sync {path}' again when the store is up: it continues where it stopped"
            ) from exc
        raise SyncError(f"uploading {path} to {uri} failed: {type(exc).__name__}: {short_reason(exc)}") from exc


# --------------------------------------------------------------------------- reading the run


def _read_run(path: Path) -> tuple[dict, dict]:
    import yaml

    hint = "pass a run folder like <output-root>/runs/<experiment>/<run>"
    if not path.is_dir():
        raise UsageError(f"'{path}' is not a run directory: no such folder — {hint}")
    if not (path / STATUS_FILE).is_file():
        raise UsageError(f"'{path}' is not a dlrun run directory (it has no {STATUS_FILE}) — {hint}")
    if not (path / "recipe.yaml").is_file():
        if path.parent.name == "folds":
            raise UsageError(f"'{path}' is one fold of the run '{path.parent.parent}': sync that run")
        raise UsageError(f"'{path}' is not a complete run directory (it has no recipe.yaml) — {hint}")
    try:
        info = json.loads((path / STATUS_FILE).read_text(encoding="utf-8"))
        recipe = yaml.safe_load((path / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"'{path}': cannot read {STATUS_FILE} or recipe.yaml: {exc}") from exc
    if not isinstance(info, dict) or not isinstance(recipe, dict):
        raise UsageError(f"'{path}': {STATUS_FILE} or recipe.yaml is not a mapping")
    return info, recipe


def _output_root_of(path: Path) -> Path:
    """``<root>/runs/<experiment>/<run>`` → ``<root>``."""
    return path.parents[2] if len(path.parents) > 2 and path.parent.parent.name == "runs" else path.parent


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _ms(iso: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def history_points(rd: RunDir) -> dict[str, dict[int, float]]:
    """``{metric: {epoch: value}}`` from ``history.csv``; empty cells (a metric that began
    later) are left out, ``nan`` cells are kept as NaN like the runner logged them."""
    path = rd.path / HISTORY_FILE
    if not path.exists() or RunDir._read_header(path) is None:
        return {}
    points: dict[str, dict[int, float]] = {}
    for row in RunDir._read_rows(path):
        epoch = _metric_value(row.get("epoch"))
        if epoch is None:
            continue
        for key, cell in row.items():
            value = _metric_value(cell) if key != "epoch" and cell.strip() else None
            if value is not None:
                points.setdefault(_safe_key(key), {})[int(epoch)] = value
    return points


# --------------------------------------------------------------------------- uploading


def _sync_one(tracker, rd: RunDir, info: dict, recipe: dict, parent=None, fold: str | None = None) -> SyncResult:
    run, existing, created = _open_run(tracker, rd, info, recipe, parent, fold)
    result = SyncResult(str(rd.path), run.run_id, tracker.uri, created, str(info.get("status", "RUNNING")))
    if fold is None:
        result.params = _sync_params(run, existing, recipe, result.warnings)
    run.set_tags(_tags(rd, recipe, fold))
    points = history_points(rd)
    curves = _read_json(rd.path / "kfold_curves.json") if fold is None else None
    for key, values in ((curves or {}).get("mean") or {}).items():  # K-fold: the folds' mean, as the run logs it
        points[_safe_key(key)] = {i + 1: v for i, v in enumerate(values)}
    result.metric_points = _sync_history(tracker, run.run_id, points)
    finals = _final_metrics(rd, points, fold)
    result.metric_points += _sync_finals(run, existing, finals)
    if fold is None:
        show_main_metrics(tracker, finals)
    skip = NOT_ARTIFACTS | ({"folds"} if fold is None else set())
    result.artifacts = _sync_artifacts(tracker, run.run_id, rd, skip=skip)
    if fold is None:
        for fold_dir in sorted(p for p in (rd.path / "folds").glob("*") if (p / STATUS_FILE).is_file()):
            fold_info = _read_json(fold_dir / STATUS_FILE) or {}
            child = _sync_one(tracker, RunDir(fold_dir), fold_info, recipe, run, fold_dir.name)
            result.folds.append(child.to_dict())
    status = result.status
    if status in RUN_STATUSES:
        if info.get("error") and status != "FINISHED":
            run.set_tags({TAG_ERROR: str(info["error"])})
        tracker._call(tracker.client.set_terminated, run.run_id, status, _ms(info.get("end_time")))
    else:
        result.warnings.append(f"{rd.path} says {status}: its MLflow run stays RUNNING — sync again when it ends")
    _record(rd, tracking="synced", mlflow_run_id=run.run_id, tracking_uri=tracker.uri, synced_at=utc_iso())
    return result


def _open_run(tracker, rd: RunDir, info: dict, recipe: dict, parent, fold: str | None):
    """The run ``run.json`` names when the store has it (not deleted), else a new one."""
    from mlflow.exceptions import MlflowException

    from dlrun.track.mlflow_store import TrackedRun

    run_id = info.get("mlflow_run_id")
    if run_id:
        try:
            got = tracker._call(tracker.client.get_run, run_id)
        except MlflowException as exc:
            if is_outage_error(exc):
                raise
            got = None  # not in this store
        if got is not None and got.info.lifecycle_stage != "deleted":
            return TrackedRun(tracker, run_id, got.info.run_name), got, False
    name = (recipe.get("tracking") or {}).get("run_name")
    base = str(recipe.get("name") or "run")
    if fold is not None:
        name = f"{base}-{fold}"
    elif not name:
        name = f"{base}-{rd.path.name.rsplit('-', 1)[-1]}"  # as the runner names it
    tags = {"dlrun.fold": fold} if fold is not None else {}
    run = tracker.start_run(name, tags, parent=parent, start_time=_ms(info.get("start_time")))
    extra = {"previous_mlflow_run_id": run_id} if run_id else {}
    _record(rd, mlflow_run_id=run.run_id, tracking_uri=tracker.uri, tracking="syncing", **extra)
    return run, tracker._call(tracker.client.get_run, run.run_id), True


def _sync_params(run, existing, recipe: dict, warnings: list[str]) -> int:
    have = dict(existing.data.params)
    flat = flatten_params(recipe)
    differ = sorted(k for k, v in flat.items() if k in have and have[k] != v)
    if differ:
        warnings.append(f"{len(differ)} param(s) differ in the store and were kept there: {', '.join(differ[:5])}")
    new = {k: v for k, v in flat.items() if k not in have}
    run.log_params(new)
    return len(new)


def _tags(rd: RunDir, recipe: dict, fold: str | None) -> dict[str, str]:
    tags = {
        "dlrun.recipe": str(recipe.get("name")),
        "dlrun.protocol": str((recipe.get("evaluation") or {}).get("protocol", "holdout")),
        "dlrun.run_dir": str(rd.path),
        **{str(k): str(v) for k, v in ((recipe.get("tracking") or {}).get("tags") or {}).items()},
        TAG_SYNCED: utc_iso(),
    }
    command = (rd.path / "command.txt").read_text(encoding="utf-8").split() if (rd.path / "command.txt").exists() else []
    if len(command) > 2 and command[1] in ("train", "kfold"):
        tags["dlrun.recipe_file"] = command[2]
    if fold is not None:
        tags["dlrun.fold"] = fold
    else:
        folds = [p for p in (rd.path / "folds").glob("*") if p.is_dir()]
        if folds:
            tags["dlrun.folds"] = str(len(folds))
    facts = _read_json(rd.path / "model_facts.json") or {}
    tags.update({f"dlrun.model.{k}": str(v) for k, v in facts.items()})
    return tags


def _sync_history(tracker, run_id: str, points: dict[str, dict[int, float]]) -> int:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    missing = []
    for key, by_step in points.items():
        have = {m.step for m in tracker._call(tracker.client.get_metric_history, run_id, key)}
        missing += [Metric(key, value, now, step) for step, value in sorted(by_step.items()) if step not in have]
    for i in range(0, len(missing), MAX_METRICS_PER_BATCH):
        tracker._call(tracker.client.log_batch, run_id, metrics=missing[i : i + MAX_METRICS_PER_BATCH])
    return len(missing)


def _final_metrics(rd: RunDir, points: dict, fold: str | None) -> dict[str, float]:
    """What the protocol logged at the end: the run's summary, else the job's metrics with
    ``final_`` before a name that also has a per-epoch curve."""
    summary = _read_json(rd.path / "summary.json") if fold is None else None
    if not isinstance(summary, dict):
        metrics = _read_json(rd.path / "metrics.json") or {}
        summary = {f"final_{k}" if _safe_key(k) in points else k: v for k, v in metrics.items()}
    return {_safe_key(str(k)): n for k, v in summary.items() if (n := _metric_value(v)) is not None}


def _sync_finals(run, existing, finals: dict[str, float]) -> int:
    have = existing.data.metrics

    def same(a: float, b: float) -> bool:
        return a == b or (math.isnan(a) and math.isnan(b))

    metrics, tags = split_summary(finals)  # bookkeeping (best_epoch, ...) goes to tags, as a run logs it
    new = {k: v for k, v in metrics.items() if not (k in have and same(have[k], v))}
    run.log_metrics(new)
    run.set_tags(tags)
    return len(new)


def _sync_artifacts(tracker, run_id: str, rd: RunDir, skip: set[str]) -> int:
    """Upload each file unless the store holds that path at that size already."""
    have = _listed(tracker, run_id, None)
    uploaded = 0
    for file in sorted(p for p in rd.path.rglob("*") if p.is_file()):
        rel = file.relative_to(rd.path)
        if rel.parts[0] in skip or any(part.startswith(".") or part in NOT_ARTIFACTS for part in rel.parts):
            continue  # fold runs carry their own files; .tmp files are half-written; no job's checkpoint
        if have.get(rel.as_posix()) == file.stat().st_size:
            continue
        folder = rel.parent.as_posix()
        tracker._call(tracker.client.log_artifact, run_id, str(file), None if folder == "." else folder)
        uploaded += 1
    return uploaded


def _listed(tracker, run_id: str, path: str | None) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for entry in tracker._call(tracker.client.list_artifacts, run_id, path) or []:
        if entry.is_dir:
            out.update(_listed(tracker, run_id, entry.path))
        else:
            out[entry.path] = entry.file_size
    return out


def _record(rd: RunDir, **fields: Any) -> None:
    """Merge ``fields`` into ``run.json`` (and ``tracking.json`` when the run has one)
    without touching the status or times."""
    info = _read_json(rd.path / STATUS_FILE) or {}
    info.update(fields)
    rd.write_json(STATUS_FILE, info)
    tracking = _read_json(rd.path / TRACKING_FILE)
    if isinstance(tracking, dict) and "tracking" in fields:
        tracking.update({k: v for k, v in fields.items() if k in ("tracking", "synced_at", "mlflow_run_id")})
        rd.write_json(TRACKING_FILE, tracking)

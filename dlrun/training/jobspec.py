"""A job as a small serializable spec: what one process needs to run one fold, refit or
tuning worker from its directory alone, and what it reports back.

The spec lives beside the protocols that write it (training/ never imports execution/);
executors (``dlrun.execution``) move specs to processes, hosts or Slurm nodes, and the
worker (``python -m dlrun.execution.worker <job dir>/job.json``) runs one. Results never
travel back as objects: the parent reads the job's directory (``run.json`` FINISHED,
``metrics.json``, ``history.csv``) through :class:`dlrun.track.runs.RunReader`.

Example ``job.json`` of a fold::

    {"kind": "fold", "name": "fold_2", "job_dir": "/runs/boston/20260101-1200-ab12/folds/fold_2",
     "recipe": {...the resolved recipe...}, "base_dir": "/work/recipes", "overrides": [],
     "output_root": "/work/artifacts", "tracking_uri": "sqlite:////work/artifacts/mlflow.db",
     "experiment": "boston_housing", "run_id": "…", "parent_run_id": "…", "seed": 0,
     "devices": {"gpus": ["1"], "cpu_threads": 1}, "resume": false}

The fold's rows are read from ``splits.json`` of the run (by the job directory's name), so the
spec stays small; a refit (``final/``) trains on every training row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

JOB_FILE = "job.json"
KINDS = ("fold", "refit", "tune-worker")  # the worker maps each to its function (execution.worker.JOB_KINDS)


@dataclass
class JobSpec:
    kind: str  # one of KINDS
    name: str  # fold_1, r2_fold_3, final, worker_1
    job_dir: str  # absolute; the job writes here and nowhere else (besides MLflow)
    recipe: dict[str, Any]  # the resolved recipe, as the run saved it
    base_dir: str | None  # the recipe's folder: where its relative paths point
    output_root: str
    tracking_uri: str | None
    experiment: str
    seed: int
    recipe_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    run_id: str | None = None  # the job's MLflow run, created by the parent before any worker starts
    parent_run_id: str | None = None
    epochs: int | None = None  # a refit's: the best fold-averaged epoch
    evaluate_test: bool = False
    resume: bool = False  # continue from the job directory's checkpoint
    devices: dict[str, Any] = field(default_factory=dict)  # {"gpus": [...] or None, "cpu_threads": n}
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific (a tuning worker's study, budget)

    @property
    def path(self) -> Path:
        return Path(self.job_dir) / JOB_FILE

    def write(self) -> Path:
        """Write ``<job dir>/job.json`` (atomically: a worker never reads half a spec)."""
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{JOB_FILE}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, default=str), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: str | Path) -> "JobSpec":
        from dlrun.errors import UsageError

        path = Path(path)
        if path.is_dir():
            path = path / JOB_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the job spec {path}: {exc}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or data.get("kind") not in KINDS:
            raise UsageError(f"{path} is not a job spec this dlrun runs (kind {data.get('kind')!r}"
                             + (f", unknown keys {', '.join(unknown)}" if unknown else "") + ")")
        return cls(**data)


@dataclass
class JobOutcome:
    """How a job ended, as its executor saw it: ``status`` FINISHED, FAILED or KILLED, and
    ``error`` the cause seen from outside (``worker killed by SIGKILL``) when the job could
    not record its own. Its results are in ``job_dir``."""

    name: str
    job_dir: str
    status: str
    error: str | None = None


def signal_cause(returncode: int | None) -> str:
    """What a worker's exit status says about how it ended (``worker killed by SIGKILL``)."""
    import signal

    if returncode is None:
        return "worker lost (no exit status)"
    if returncode < 0:
        try:
            return f"worker killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"worker killed by signal {-returncode}"
    if returncode > 128:  # a shell or launcher reports a signal as 128 + n
        try:
            return f"worker killed by {signal.Signals(returncode - 128).name}"
        except ValueError:
            pass
    return f"worker exited with code {returncode}"

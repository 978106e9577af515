"""MLflow tracking through an explicit ``MlflowClient``: no global tracking URI, experiment or
active run is read or changed, so one process can drive a parent run and its fold runs.

- Store: ``--tracking-uri`` > ``MLFLOW_TRACKING_URI`` > ``sqlite:///<abs output_root>/mlflow.db``.
- Experiments on a local store (sqlite, file, other databases) get an absolute
  ``artifact_location`` under ``artifact_root``; otherwise MLflow would put artifacts in
  ``./mlruns`` relative to the current directory. On a tracking server the server decides.
- Per-epoch metrics (:meth:`TrackedRun.log_epoch`) go through one background thread; every
  other write is synchronous. All writes retry on SQLite's "database is locked".
- Non-finite metric values are logged as MLflow stores them: NaN stays NaN (a diverged loss is
  worth seeing), ±inf is stored by SQL stores as ±1.797e308. Values that are not numbers at all
  are skipped.

mlflow is imported inside the functions only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from dlrun.track._writes import BackgroundWriter, retry_locked

log = logging.getLogger("dlrun.track")

# MLflow's limits (mlflow.utils.validation, 3.17); a test keeps them in sync.
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_ENTITY_KEY_LENGTH = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

TAG_PARENT = "mlflow.parentRunId"
TAG_ERROR = "dlrun.error"
TAG_WRITE_ERRORS = "dlrun.tracking_write_errors"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
_REMOTE_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")


def resolve_tracking_uri(cli_uri: str | None, output_root: Path) -> str:
    """``cli_uri`` > env ``MLFLOW_TRACKING_URI`` > ``sqlite:///<abs output_root>/mlflow.db``.

    For the embedded default the output folder is created.
    """
    if cli_uri:
        return cli_uri
    env_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env_uri:
        return env_uri
    root = Path(output_root).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def is_remote_uri(uri: str) -> bool:
    """True for tracking servers, which choose artifact locations themselves."""
    scheme = uri.split(":", 1)[0].lower() if "://" in uri or ":" in uri else ""
    return scheme in _REMOTE_SCHEMES or uri in ("databricks",)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _safe_key(key: str) -> str:
    if len(key) <= MAX_ENTITY_KEY_LENGTH:
        return key
    import hashlib

    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return f"{key[: MAX_ENTITY_KEY_LENGTH - 9]}~{digest}"


def flatten_params(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts/lists as dotted keys with string values, cut to MLflow's length limits.

    ``{"model": {"layers": [{"Dense": {"units": 16}}]}}`` → ``{"model.layers.0.Dense.units": "16"}``.
    Empty containers are kept as ``{}``/``[]``; pydantic models are dumped first; a bare
    scalar without a prefix is returned under the key ``value``.
    """
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        items: Iterable[tuple[Any, Any]] = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        out[_safe_key(prefix or "value")] = _truncate(str(obj), MAX_PARAM_VAL_LENGTH)
        return out
    empty = True
    for key, value in items:
        empty = False
        out.update(flatten_params(value, f"{prefix}.{key}" if prefix else str(key)))
    if empty and prefix:
        out[_safe_key(prefix)] = "{}" if isinstance(obj, Mapping) else "[]"
    return out


def _metric_value(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Tracker:
    """One experiment on one tracking store. Create runs with :meth:`start_run`."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path):
        """``artifact_root`` holds one folder per experiment (``<artifact_root>/<experiment>``),
        used as the artifact location of experiments this tracker creates on a local store."""
        from mlflow import MlflowClient

        self.uri = uri
        self.experiment = experiment
        self.artifact_root = Path(artifact_root).expanduser().absolute()
        self.client = MlflowClient(tracking_uri=uri)
        self._writer = BackgroundWriter()
        self.experiment_id = self._get_or_create_experiment()

    @classmethod
    def from_output_root(
        cls, output_root: Path, experiment: str, cli_uri: str | None = None
    ) -> "Tracker":
        """The usual wiring: :func:`resolve_tracking_uri`, artifacts in ``<output_root>/mlartifacts``."""
        root = Path(output_root).expanduser().absolute()
        return cls(resolve_tracking_uri(cli_uri, root), experiment, root / "mlartifacts")

    def _artifact_location(self) -> str | None:
        if is_remote_uri(self.uri):
            return None
        from dlrun.track.rundir import safe_name

        location = self.artifact_root / safe_name(self.experiment, "experiment")
        return location.as_uri()

    def _get_or_create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        from dlrun.errors import UsageError

        exp = retry_locked(self.client.get_experiment_by_name, self.experiment)
        if exp is None:
            try:
                return retry_locked(
                    self.client.create_experiment,
                    self.experiment,
                    artifact_location=self._artifact_location(),
                )
            except MlflowException as exc:  # created meanwhile by another process?
                exp = retry_locked(self.client.get_experiment_by_name, self.experiment)
                if exp is None:
                    raise UsageError(
                        f"cannot create MLflow experiment '{self.experiment}' at {self.uri}: {exc}"
                    ) from exc
        if exp.lifecycle_stage == "deleted":
            raise UsageError(
                f"MLflow experiment '{self.experiment}' (id {exp.experiment_id}) is deleted at "
                f"{self.uri}: restore it (mlflow experiments restore --experiment-id "
                f"{exp.experiment_id}) or choose another experiment name"
            )
        return exp.experiment_id

    def start_run(
        self,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent: "TrackedRun | None" = None,
    ) -> "TrackedRun":
        """A new RUNNING run; with ``parent`` a nested run (tag ``mlflow.parentRunId``)."""
        all_tags = _context_tags()
        all_tags.update({str(k): _truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in (tags or {}).items()})
        if parent is not None:
            all_tags[TAG_PARENT] = parent.run_id
        run = retry_locked(
            self.client.create_run, self.experiment_id, tags=all_tags, run_name=run_name
        )
        return TrackedRun(self, run.info.run_id, run.info.run_name)


def _context_tags() -> dict[str, str]:
    """The tags ``mlflow.start_run`` adds (user, source name/type, git commit)."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return {k: str(v) for k, v in resolve_tags({}).items()}
    except Exception:  # noqa: BLE001 - context tags are a nicety
        import getpass

        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001
            user = "unknown"
        return {"mlflow.user": user, "mlflow.source.type": "LOCAL"}


class TrackedRun:
    """One MLflow run. End it with :meth:`end`, or use it as a context manager
    (FINISHED; FAILED on an exception; KILLED on KeyboardInterrupt/SystemExit)."""

    def __init__(self, tracker: Tracker, run_id: str, run_name: str | None = None):
        self.tracker = tracker
        self.client = tracker.client
        self.run_id = run_id
        self.run_name = run_name
        self.experiment_id = tracker.experiment_id
        self.status = "RUNNING"
        self._buffer: list = []
        self._buffer_lock = threading.Lock()
        self._drain_queued = False

    def __repr__(self) -> str:
        return f"TrackedRun(run_id={self.run_id!r}, status={self.status!r})"

    def __enter__(self) -> "TrackedRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.status != "RUNNING":
            return
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            self.end("FINISHED")
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self.end("KILLED", error=f"{exc_type.__name__}: {exc}".rstrip(": "))
        else:
            self.end("FAILED", error=f"{exc_type.__name__}: {exc}")

    # ------------------------------------------------------------------ params, tags

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params (nested values flattened to dotted keys), in batches of 100."""
        from mlflow.entities import Param

        flat = flatten_params(params)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            batch = items[i : i + MAX_PARAMS_TAGS_PER_BATCH]
            retry_locked(self.client.log_batch, self.run_id, params=batch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [
            RunTag(_safe_key(str(k)), _truncate(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()
        ]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            batch = items[i : i + MAX_PARAMS_TAGS_PER_BATCH]
            retry_locked(self.client.log_batch, self.run_id, tags=batch)

    # ------------------------------------------------------------------ metrics

    def _metrics(self, metrics: Mapping[str, Any], step: int | None) -> list:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        out = []
        for key, value in metrics.items():
            number = _metric_value(value)
            if number is None:
                log.debug("metric %s=%r is not a number; not logged", key, value)
                continue
            out.append(Metric(_safe_key(str(key)), number, now, int(step or 0)))
        return out

    def log_epoch(self, metrics: Mapping[str, Any], step: int) -> None:
        """Queue one epoch's metrics with ``step=step``; returns at once (background thread).

        The timestamp is taken now, not when the write happens. :meth:`end` (or
        :meth:`flush`) waits for the writes.
        """
        batch = self._metrics(metrics, step)
        if not batch:
            return
        with self._buffer_lock:
            self._buffer.extend(batch)
            if self._drain_queued:
                return  # the queued drain will take these too
            self._drain_queued = True
        self.tracker._writer.submit(self.run_id, self._drain)

    def _drain(self) -> None:
        """Write everything buffered so far: when the store is slower than the epochs,
        several epochs go out in one ``log_batch`` instead of piling up."""
        with self._buffer_lock:
            batch, self._buffer = self._buffer, []
            self._drain_queued = False
        for i in range(0, len(batch), MAX_METRICS_PER_BATCH):
            retry_locked(self.client.log_batch, self.run_id, metrics=batch[i : i + MAX_METRICS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics now (synchronously); ``step=None`` is MLflow's step 0."""
        batch = self._metrics(metrics, step)
        for i in range(0, len(batch), MAX_METRICS_PER_BATCH):
            retry_locked(self.client.log_batch, self.run_id, metrics=batch[i : i + MAX_METRICS_PER_BATCH])

    def flush(self) -> list[BaseException]:
        """Wait until this run's queued epoch metrics are written; return write errors."""
        return self.tracker._writer.flush(self.run_id)

    # ------------------------------------------------------------------ artifacts, model

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        retry_locked(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | os.PathLike, artifact_path: str | None = None) -> None:
        retry_locked(self.client.log_artifacts, self.run_id, str(directory), artifact_path)

    def artifact_uri(self) -> str:
        return retry_locked(self.client.get_run, self.run_id).info.artifact_uri

    def log_keras_model(self, model: Any, name: str = "model", **kwargs: Any) -> str:
        """Log ``model`` with the ``mlflow.keras`` flavor as a LoggedModel of this run.

        Returns the model URI (``models:/<model_id>``); ``runs:/<run_id>/<name>`` loads it too.
        See :func:`dlrun.track._keras_model.log_keras_model` for the keyword arguments.
        """
        from dlrun.track._keras_model import log_keras_model

        return log_keras_model(self.client, self.experiment_id, self.run_id, model, name, **kwargs)

    # ------------------------------------------------------------------ end

    def end(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Flush queued metrics, record ``error`` as tag ``dlrun.error``, set the final status.

        Calling it again after the run has ended does nothing.
        """
        status = status.upper()
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; expected one of {', '.join(RUN_STATUSES)}")
        if self.status != "RUNNING":
            return
        failures = self.flush()
        tags: dict[str, str] = {}
        if error:
            tags[TAG_ERROR] = str(error)
        if failures:
            tags[TAG_WRITE_ERRORS] = f"{len(failures)} metric batch(es) lost: {failures[0]}"
        if tags:
            try:
                self.set_tags(tags)
            except Exception as exc:  # noqa: BLE001 - still try to set the status
                log.warning("could not record the error of run %s: %s", self.run_id, exc)
        retry_locked(self.client.set_terminated, self.run_id, status)
        self.status = status

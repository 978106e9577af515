"""MLflow tracking through an explicit ``MlflowClient``: no global tracking URI, experiment or
active run is read or changed, so one process can drive a parent run and its fold runs.

- Store: ``--tracking-uri`` > ``MLFLOW_TRACKING_URI`` > ``sqlite:///<abs output_root>/mlflow.db``.
- Experiments on a local store (sqlite, file, other databases) get an absolute
  ``artifact_location`` under ``artifact_root``; otherwise MLflow would put artifacts in
  ``./mlruns`` relative to the current directory. On a tracking server the server decides.
- Per-epoch metrics (:meth:`TrackedRun.log_epoch`) go through one background thread; every
  other write is synchronous. All writes retry on SQLite's "database is locked".
- Fail-soft: when the store cannot be reached (refused, timed out, 5xx after MLflow's short
  retries — see :mod:`._outage`), at start or mid-run, the tracker goes *offline* for good:
  every later call is a no-op, :meth:`Tracker.start_run` returns a run whose ``run_id`` is
  None, nothing raises into training, and ``on_outage`` is called once (else one warning is
  logged). The run directory keeps everything; ``dlrun sync`` uploads it later.
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
from typing import Any, Callable, Mapping

from dlrun.track._mlflow_common import (  # noqa: F401 - re-exported, part of this module's API
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
    RUN_STATUSES,
    TAG_ERROR,
    TAG_LOCK_RETRIES,
    TAG_PARENT,
    TAG_WRITE_ERRORS,
    _context_tags,
    _metric_value,
    _safe_key,
    _truncate,
    flatten_params,
    is_remote_uri,
    resolve_tracking_uri,
)
from dlrun.track._outage import (
    is_outage_error,
    offline_message,
    offline_notice,
    short_reason,
    store_init_lock,
    use_short_http_retries,
    utc_iso,
)
from dlrun.track._store_config import (
    UNKNOWN_ORIGIN,
    StoreOrigin,
    check_local_store,
    open_experiment,
    open_failure,
    open_failure_is_outage,
    uri_origin,
)
from dlrun.track._store_template import seed_new_store
from dlrun.track._writes import BackgroundWriter, retries_so_far, retry_locked

log = logging.getLogger("dlrun.track")

__all__ = ["Tracker", "TrackedRun", "flatten_params", "offline_notice", "resolve_tracking_uri"]


class Tracker:
    """One experiment on one tracking store. Create runs with :meth:`start_run`.

    ``on_outage(info)`` is called once, from whichever thread first finds the store gone, with
    ``{"since", "uri", "reason", "epoch"}`` (``epoch``: the last step queued when it happened);
    :func:`~dlrun.track._outage.offline_notice` makes one for a run directory. ``strict=True``
    (used by ``dlrun sync``) raises connectivity errors instead of going offline.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_root: Path,
        *,
        on_outage: Callable[[dict], None] | None = None,
        strict: bool = False,
        origin: StoreOrigin = UNKNOWN_ORIGIN,
    ):
        """``artifact_root`` holds one folder per experiment (``<artifact_root>/<experiment>``),
        used as the artifact location of experiments this tracker creates on a local store.
        ``origin`` says where ``uri`` came from, for the message when the store cannot work."""
        from mlflow import MlflowClient

        from dlrun.errors import UsageError

        use_short_http_retries()
        self.uri = uri
        self.experiment = experiment
        self.artifact_root = Path(artifact_root).expanduser().absolute()
        self.on_outage = on_outage
        self.strict = strict
        self.origin = origin
        self.outage: dict[str, Any] | None = None
        self._outage_lock = threading.Lock()
        self._writer = BackgroundWriter()
        self.client = None
        self.experiment_id: str | None = None
        try:
            with store_init_lock(uri):
                check_local_store(uri, origin)  # under the lock: another process may be creating it
                seed_new_store(uri)  # a new SQLite store from the cached empty one: no migrations
                self.client = MlflowClient(tracking_uri=uri)
                self.experiment_id = open_experiment(self.client, experiment, uri, origin, self._artifact_location())
        except UsageError:
            raise
        except Exception as exc:
            if strict and is_outage_error(exc):
                raise  # dlrun sync says the store is away, and to try again
            if not strict and open_failure_is_outage(uri, exc):
                self._go_offline(exc)
                return
            raise open_failure(uri, origin, exc) from exc

    @classmethod
    def from_output_root(
        cls,
        output_root: Path,
        experiment: str,
        cli_uri: str | None = None,
        on_outage: Callable[[dict], None] | None = None,
        origin: StoreOrigin | None = None,
    ) -> "Tracker":
        """The usual wiring: :func:`resolve_tracking_uri`, artifacts in ``<output_root>/mlartifacts``.

        Never raises for an unreachable store: the tracker is then offline. A store that can
        never work raises :class:`~dlrun.errors.UsageError` naming ``origin`` (default: where
        :func:`resolve_tracking_uri` found the URI).
        """
        root = Path(output_root).expanduser().absolute()
        return cls(resolve_tracking_uri(cli_uri, root), experiment, root / "mlartifacts", on_outage=on_outage,
                   origin=origin or uri_origin(cli_uri, root))

    def notify_outage(self, hook: Callable[[dict], None]) -> None:
        """From now on tell ``hook`` about an outage — at once if the store was already away
        when it was opened (a run opens its store before its run directory exists)."""
        with self._outage_lock:
            self.on_outage, info = hook, (dict(self.outage) if self.outage is not None else None)
        if info is not None:
            hook(info)

    # ------------------------------------------------------------------ outage

    @property
    def offline(self) -> bool:
        return self.outage is not None

    def _go_offline(self, exc: BaseException, run: "TrackedRun | None" = None) -> None:
        with self._outage_lock:
            if self.outage is not None:
                return
            self.outage = {
                "since": utc_iso(),
                "uri": self.uri,
                "reason": short_reason(exc),
                "epoch": getattr(run, "last_step", None),
            }
            info, hook = dict(self.outage), self.on_outage
        if hook is None:
            log.warning("%s", offline_message(info))
            return
        try:
            hook(info)
        except Exception as hook_exc:  # noqa: BLE001 - a broken hook must not stop training
            log.warning("%s (outage hook failed: %s)", offline_message(info), hook_exc)

    def _call(
        self, method: str | Callable[..., Any], *args: Any, run: "TrackedRun | None" = None, **kwargs: Any
    ) -> Any:
        """The client method named ``method`` (or a callable) through :func:`retry_locked`;
        None (and offline from now on) when the store is unreachable. Other errors propagate.

        A name is looked up on :attr:`client` only once the tracker is known to be online: a
        tracker that went offline while opening the store has no client (None)."""
        if self.outage is not None:
            return None
        fn = getattr(self.client, method) if isinstance(method, str) else method
        return self._guard(retry_locked, fn, *args, run=run, **kwargs)

    def _guard(self, fn: Callable[..., Any], *args: Any, run: "TrackedRun | None" = None, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` once, not retried: None (and offline from now on) when the
        store is unreachable. Other errors propagate. For writes that retry their own steps
        (:meth:`TrackedRun.log_keras_model`)."""
        if self.outage is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if self.strict or not is_outage_error(exc):
                raise
            self._go_offline(exc, run)
            return None

    # ------------------------------------------------------------------ experiment, runs

    def _artifact_location(self) -> str | None:
        if is_remote_uri(self.uri):
            return None
        from dlrun.track.rundir import safe_name

        location = self.artifact_root / safe_name(self.experiment, "experiment")
        return location.as_uri()

    def start_run(
        self,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent: "TrackedRun | None" = None,
        start_time: int | None = None,
    ) -> "TrackedRun":
        """A new RUNNING run; with ``parent`` a nested run (tag ``mlflow.parentRunId``).

        Offline, the run has ``run_id`` None and all its methods do nothing.
        """
        if self.outage is not None:
            return TrackedRun(self, None, run_name)
        all_tags = _context_tags()
        all_tags.update({str(k): _truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in (tags or {}).items()})
        if parent is not None and parent.run_id is not None:
            all_tags[TAG_PARENT] = parent.run_id
        run = self._call(
            "create_run", self.experiment_id, tags=all_tags, run_name=run_name, start_time=start_time
        )
        if run is None:
            return TrackedRun(self, None, run_name)
        return TrackedRun(self, run.info.run_id, run.info.run_name)

    def reopen_run(self, run_id: str | None) -> "TrackedRun":
        """An existing run set RUNNING again (``dlrun train --resume``); a run that never reached
        the store (``run_id`` None, or offline) stays offline: ``dlrun sync`` uploads it later."""
        if run_id is None or self.outage is not None:
            return TrackedRun(self, None)
        run = self._call("get_run", run_id)
        if run is None:
            return TrackedRun(self, None)
        self._call("update_run", run_id, status="RUNNING")
        return TrackedRun(self, run_id, run.info.run_name)


class TrackedRun:
    """One MLflow run. End it with :meth:`end`, or use it as a context manager
    (FINISHED; FAILED on an exception; KILLED on KeyboardInterrupt/SystemExit).

    When the tracker is offline (or the run was started offline, ``run_id`` None) every
    method does nothing and returns None.
    """

    def __init__(self, tracker: Tracker, run_id: str | None, run_name: str | None = None):
        self.tracker = tracker
        self.client = tracker.client
        self.run_id = run_id
        self.run_name = run_name
        self.experiment_id = tracker.experiment_id
        self.status = "RUNNING"
        self.last_step: int | None = None
        self.logged_model: str | None = None  # the URI of the model logged with log_keras_model
        self._buffer: list = []
        self._buffer_lock = threading.Lock()
        self._drain_queued = False

    def __repr__(self) -> str:
        return f"TrackedRun(run_id={self.run_id!r}, status={self.status!r})"

    @property
    def offline(self) -> bool:
        return self.run_id is None or self.tracker.offline

    def _call(self, method: str | Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """:meth:`Tracker._call` for this run: pass the client method's *name*, so that an
        offline run (whose tracker may have no client) never touches the client."""
        if self.offline:
            return None
        return self.tracker._call(method, *args, run=self, **kwargs)

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
        if self.offline:
            return
        from mlflow.entities import Param

        flat = flatten_params(params)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._call("log_batch", self.run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.offline:
            return
        from mlflow.entities import RunTag

        items = [
            RunTag(_safe_key(str(k)), _truncate(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()
        ]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._call("log_batch", self.run_id, tags=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

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
        self.last_step = int(step)
        if self.offline:
            return
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
            self._call("log_batch", self.run_id, metrics=batch[i : i + MAX_METRICS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics now (synchronously); ``step=None`` is MLflow's step 0."""
        if self.offline:
            return
        batch = self._metrics(metrics, step)
        for i in range(0, len(batch), MAX_METRICS_PER_BATCH):
            self._call("log_batch", self.run_id, metrics=batch[i : i + MAX_METRICS_PER_BATCH])

    def flush(self) -> list[BaseException]:
        """Wait until this run's queued epoch metrics are written; return write errors."""
        if self.run_id is None:
            return []
        return self.tracker._writer.flush(self.run_id)

    # ------------------------------------------------------------------ artifacts, model

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._call("log_artifact", self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._call("log_artifacts", self.run_id, str(directory), artifact_path)

    def artifact_uri(self) -> str | None:
        run = self._call("get_run", self.run_id)
        return None if run is None else run.info.artifact_uri

    def log_keras_model(self, model: Any, name: str = "model", **kwargs: Any) -> str | None:
        """Log ``model`` with the ``mlflow.keras`` flavor as a LoggedModel of this run.

        Returns the model URI (``models:/<model_id>``); ``runs:/<run_id>/<name>`` loads it too.
        None when offline. See :func:`dlrun.track._keras_model.log_keras_model` for the
        keyword arguments.
        """
        if self.offline:
            return None
        from dlrun.track._keras_model import log_keras_model

        # Not through _call: log_keras_model retries each of its steps on a locked store
        # itself, and every attempt of the whole would create another LoggedModel.
        uri = self.tracker._guard(
            log_keras_model, self.tracker.client, self.experiment_id, self.run_id, model, name, run=self, **kwargs
        )
        self.logged_model = uri or self.logged_model
        return uri

    # ------------------------------------------------------------------ end

    def end(self, status: str = "FINISHED", error: str | None = None, end_time: int | None = None) -> None:
        """Flush queued metrics, record ``error`` as tag ``dlrun.error``, set the final status
        (``end_time`` in ms since the epoch; default now).

        Calling it again after the run has ended does nothing. Offline it only waits for
        queued writes and remembers the status.
        """
        status = status.upper()
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; expected one of {', '.join(RUN_STATUSES)}")
        if self.status != "RUNNING":
            return
        failures = self.flush()
        if self.offline:
            self.status = status
            return
        tags: dict[str, str] = {}
        if error:
            tags[TAG_ERROR] = str(error)
        if failures:
            tags[TAG_WRITE_ERRORS] = f"{len(failures)} metric batch(es) lost: {failures[0]}"
        if retries_so_far():
            tags[TAG_LOCK_RETRIES] = str(retries_so_far())
        if tags:
            try:
                self.set_tags(tags)
            except Exception as exc:  # noqa: BLE001 - still try to set the status
                log.warning("could not record the error of run %s: %s", self.run_id, exc)
        self._call("set_terminated", self.run_id, status, end_time)
        self.status = status

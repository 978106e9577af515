"""A tracking store that can never work, told apart from one that is away now.

A run opens its store before anything is created. A store that *cannot* work — an unknown
URI scheme, a ``mlflow.db`` that is a folder, not a database or not writable, a deleted
experiment — is a usage error (exit 2) naming where the URI came from: ``--tracking-uri``,
``MLFLOW_TRACKING_URI``, dlrun's embedded default under the output root, or the URI a resumed
run recorded. A store that is *away* (a server that refuses or times out, a SQLite file
locked past every retry) sends the run offline instead (:mod:`._outage`).

No mlflow import here.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dlrun.errors import UsageError
from dlrun.track._outage import is_outage_error, short_reason, sqlite_path
from dlrun.track._writes import is_locked_error, retry_locked
from dlrun.track.mlflow_ui import EXPERIMENT_KIND_TAG, MODEL_TRAINING

_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class StoreOrigin:
    """Where a tracking URI came from, in the user's words, and what to change to fix it."""

    text: str
    fix: str

    def error(self, uri: str, reason: str) -> UsageError:
        where = f" ({self.text})" if self.text else ""
        return UsageError(f"cannot use the MLflow tracking store {uri}{where}: {reason} — {self.fix}")


def uri_origin(cli_uri: str | None, output_root: Path) -> StoreOrigin:
    """The origin of what :func:`~dlrun.track._mlflow_common.resolve_tracking_uri` returns."""
    if cli_uri:
        return StoreOrigin("given by --tracking-uri", "check --tracking-uri")
    if os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return StoreOrigin("from the environment variable MLFLOW_TRACKING_URI",
                           "check MLFLOW_TRACKING_URI, or give --tracking-uri")
    return StoreOrigin(f"dlrun's embedded store under the output root {Path(output_root).absolute()}; neither "
                       "--tracking-uri nor MLFLOW_TRACKING_URI is set",
                       "move that file aside, or choose another --output-root or --tracking-uri")


def recorded_origin(run_dir: Path) -> StoreOrigin:
    """The store a resumed run recorded in its ``run.json``."""
    return StoreOrigin(f"recorded in {Path(run_dir) / 'run.json'}",
                       "give --tracking-uri to track the resumed run in another store")


UNKNOWN_ORIGIN = StoreOrigin("", "check the tracking URI")


def check_local_store(uri: str, origin: StoreOrigin) -> None:
    """Refuse a SQLite store file that cannot work, before MLflow tries it (MLflow retries
    opening a bad file for about 100 s before it gives up)."""
    path = sqlite_path(uri)
    if path is None:
        return
    path = path.expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists():
        if path.is_dir():
            raise origin.error(uri, f"{path} is a folder, not a database file")
        if not stat.S_ISREG(path.stat().st_mode):
            raise origin.error(uri, f"{path} is not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise origin.error(uri, f"{path} cannot be read and written by this user (permissions)")
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
        if head and head != _SQLITE_MAGIC:
            raise origin.error(uri, f"{path} is not an SQLite database (it does not begin with the SQLite header)")
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise origin.error(uri, f"{existing} is a file, so the folder {folder} cannot be made")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise origin.error(uri, f"the folder {existing} cannot be written by this user (SQLite writes its journal "
                                "beside the database)")


def open_failure_is_outage(uri: str, exc: BaseException) -> bool:
    """Whether a failure to open the store (or to get its experiment) means "away now".

    A local SQLite file is never away: only a lock held past every retry is. A server or a
    remote database is away when it refuses, times out or answers 5xx."""
    if sqlite_path(uri) is not None:
        return is_locked_error(exc)
    return is_outage_error(exc)


def open_failure(uri: str, origin: StoreOrigin, exc: BaseException) -> UsageError:
    """The usage error for a store that failed to open for a reason other than an outage
    (MLflow's own words: its cause is often a bare key such as 'htp')."""
    text = " ".join(str(exc).split())
    return origin.error(uri, (text[:297] + "...") if len(text) > 300 else text or short_reason(exc))


def open_experiment(client, name: str, uri: str, origin: StoreOrigin, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created if missing (as a model-training experiment, see
    :mod:`dlrun.track.mlflow_ui`); a deleted one is a usage error."""
    from mlflow.exceptions import MlflowException

    exp = retry_locked(client.get_experiment_by_name, name)
    if exp is None:
        try:
            return retry_locked(client.create_experiment, name, artifact_location=artifact_location,
                                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except MlflowException as exc:  # created meanwhile by another process?
            if is_outage_error(exc):
                raise
            exp = retry_locked(client.get_experiment_by_name, name)
            if exp is None:
                raise origin.error(uri, f"cannot create the experiment '{name}': {short_reason(exc)}") from exc
    if exp.lifecycle_stage == "deleted":
        raise UsageError(
            f"MLflow experiment '{name}' (id {exp.experiment_id}) is deleted in the store {uri}"
            f"{f' ({origin.text})' if origin.text else ''}: restore it (mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}), or name another experiment (tracking.experiment in the "
            "recipe; default: the recipe's name)"
        )
    if EXPERIMENT_KIND_TAG not in exp.tags:  # made before dlrun set it, or by hand; a chosen kind stays
        try:
            retry_locked(client.set_experiment_tag, exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        except MlflowException as exc:  # allowed to log runs, not to tag the experiment: runs still go in
            if is_outage_error(exc):
                raise
    return exp.experiment_id

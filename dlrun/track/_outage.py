"""When the tracking store is away: short HTTP retries, telling a connectivity failure from
other errors, the once-only offline notice, and a file lock around creating a SQLite store.

MLflow's REST client retries a refused connection 7 times with backoff factor 2 and waits
120 s for an answer (about 4 minutes per call); a training job should not stall that long on
a missing server, so dlrun's process gets short settings unless the user chose their own.

No mlflow import here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from dlrun.report import warning_line
from dlrun.track._writes import exception_chain

try:  # POSIX; elsewhere store creation is not serialized (MLflow's own risk)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

# A refused connection costs ~1.5 s (retries after 0 s and ~1 s); a silent host 3 × 15 s, once.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    # MLflow prints "View run … at: <url>" on stdout when a run on a server ends; stdout is
    # ours (batch logs, --json), and the run directory already says where the run is.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

TRACKING_FILE = "tracking.json"

# Exception classes (matched by name anywhere in the cause chain, so nothing is imported)
# and message fragments that mean "the store cannot be reached", not "the request was wrong".
_OUTAGE_TYPES = {
    "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "RetryError", "MaxRetryError",
    "NewConnectionError", "ProtocolError", "RemoteDisconnected", "ConnectionRefusedError",
    "ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError", "TimeoutError",
}
_OUTAGE_MARKERS = (
    "max retries exceeded", "connection refused", "failed to establish a new connection",
    "connection aborted", "remote end closed", "read timed out", "timed out", "too many 50",
    "unable to open database file", "disk i/o error", "temporary failure in name resolution",
    "name or service not known", "database is locked",  # locked even after retry_locked's retries
)


def use_short_http_retries() -> None:
    """Set :data:`HTTP_DEFAULTS` in this process's environment where the user set nothing
    (os.environ: MLflow reads these at every request)."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_outage_error(exc: BaseException | None) -> bool:
    """True when ``exc`` (or anything it wraps) says the store is unreachable or down."""
    for e in exception_chain(exc):
        if {c.__name__ for c in type(e).__mro__} & _OUTAGE_TYPES:
            return True
        if any(marker in str(e).lower() for marker in _OUTAGE_MARKERS):
            return True
    return False


def short_reason(exc: BaseException) -> str:
    """One line: the innermost cause usually names the real problem (refused, timed out)."""
    *_, root = exception_chain(exc, limit=11)
    text = " ".join(str(root).split()) or type(root).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def utc_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None (server, other database, memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


@contextlib.contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` while a SQLite store is opened and the
    experiment looked up or created: on a fresh file MLflow runs its alembic migrations, and
    several processes doing that at once collide ("table already exists", "locked")."""
    path = sqlite_path(uri)
    if path is None or fcntl is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path.with_name(path.name + ".lock"), "a")
    except OSError:  # the store's folder cannot be made or written: opening the store says why
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def offline_text(info: dict[str, Any], run_dir: str | os.PathLike | None = None) -> str:
    """What to tell the user when tracking went offline (without a ``warning:`` prefix)."""
    where = f" in {run_dir}" if run_dir else " in the run directory"
    sync = f"dlrun sync {run_dir}" if run_dir else "dlrun sync <run dir>"
    return (
        f"MLflow tracking is offline ({info.get('uri')}: {info.get('reason')}). "
        f"Training goes on; everything is kept{where}. Upload it later with: {sync}"
    )


def offline_message(info: dict[str, Any], run_dir: str | os.PathLike | None = None) -> str:
    """:func:`offline_text` as a log line of its own: ``warning: ...``."""
    return "warning: " + offline_text(info, run_dir)


def offline_notice(run_dir: Any, warn: Callable[[str], None] | None = None) -> Callable[[dict], None]:
    """A ``Tracker(on_outage=...)`` hook for a run: writes ``tracking.json`` in the run
    directory and says once that tracking is offline, through ``warn`` (a reporter's
    :meth:`~dlrun.report.Reporter.warn`, which speaks even under ``--quiet``), else as one
    ``dlrun: warning: ...`` line on stderr.

    ``tracking.json`` is a file of its own, not a field of ``run.json``: the hook may run on the
    metric writer's thread while the main thread rewrites ``run.json``.
    """
    path = Path(getattr(run_dir, "path", run_dir))

    def notice(info: dict[str, Any]) -> None:
        record = {"tracking": "offline", **info, "sync": f"dlrun sync {path}"}
        tmp = path / f".{TRACKING_FILE}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, path / TRACKING_FILE)
        except OSError:
            pass  # the warning below still tells the user
        text = offline_text(info, path)
        if warn is not None:
            warn(text)
        else:
            print(warning_line(text), file=sys.stderr, flush=True)

    return notice

"""A new embedded SQLite store made from a cached empty one.

MLflow makes a new SQLite store by running every alembic migration of its schema: 1.5 s on an
idle machine, 8 s on a loaded one — the largest fixed cost of a first run under a new output
root. The empty schema depends only on the MLflow version, so dlrun keeps one empty store (its
tables at the head revision, no rows) per version in its cache folder and copies it. MLflow then
finds its tables up to date and only adds its Default experiment, as it always does.

The cache folder: ``$DLRUN_CACHE_DIR``, else ``$XDG_CACHE_HOME/dlrun``, else ``~/.cache/dlrun``.
Whatever goes wrong here (no cache folder, a read-only home), MLflow makes the store itself.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from dlrun.track._outage import sqlite_path

log = logging.getLogger("dlrun.track")


def cache_dir() -> Path:
    if os.environ.get("DLRUN_CACHE_DIR"):
        return Path(os.environ["DLRUN_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "dlrun"


def seed_new_store(uri: str) -> None:
    """Copy the empty store to ``uri``'s file when that file does not exist yet (call it under
    the store's init lock)."""
    path = sqlite_path(uri)
    if path is None or path.exists():
        return
    try:
        template = _empty_store()
        if template is not None:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            shutil.copyfile(template, tmp)
            os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - MLflow makes the store itself
        log.debug("no store copied from the cache: %s", exc)


def _empty_store() -> Path | None:
    """The cached empty store of the installed MLflow, made on first use (atomically: several
    processes may make it at once, and the last one's copy wins whole)."""
    import mlflow
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine_with_retry

    template = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    engine = create_sqlalchemy_engine_with_retry(f"sqlite:///{tmp}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    os.replace(tmp, template)
    return template

"""Run statuses as a tracking store records them, read (and a stale run ended) without
creating anything: a SQLite store that is not there is reported, not made."""

from __future__ import annotations

from pathlib import Path


def _missing_sqlite(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_absolute():
            path = Path("/") / path if uri.startswith("sqlite:////") else path
        if not path.is_file():
            return f"the store {path} is not there"
    return None


def statuses(uri: str, run_ids: list[str]) -> tuple[dict[str, str], str | None]:
    """``{run_id: status}`` for the runs the store has, and an error when it cannot be read."""
    missing = _missing_sqlite(uri)
    if missing:
        return {}, missing
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    found: dict[str, str] = {}
    try:
        for run_id in run_ids:
            try:
                found[run_id] = client.get_run(run_id).info.status
            except MlflowException as exc:
                if "RESOURCE_DOES_NOT_EXIST" not in str(getattr(exc, "error_code", "")) and \
                        "not found" not in str(exc).lower():
                    raise
    except Exception as exc:  # noqa: BLE001 - an unreadable store is reported, the listing still shown
        return found, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return found, None


def end_run(uri: str, run_id: str, status: str) -> bool:
    """Set a run's final status in the store; False when the store cannot be reached."""
    if _missing_sqlite(uri):
        return False
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).set_terminated(run_id, status=status)
    except Exception:  # noqa: BLE001 - the run directory is marked either way
        return False
    return True

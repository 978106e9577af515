"""Values shared by the MLflow modules: MLflow's size limits, the tracking URI resolution,
recipe → flat params, context tags. mlflow is imported inside the functions only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

# MLflow's limits (mlflow.utils.validation, 3.17); a test keeps them in sync.
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_ENTITY_KEY_LENGTH = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

TAG_PARENT = "mlflow.parentRunId"
TAG_ERROR = "dlrun.error"
TAG_WRITE_ERRORS = "dlrun.tracking_write_errors"
TAG_LOCK_RETRIES = "dlrun.store_lock_retries"
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

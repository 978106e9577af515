"""Log a Keras model with the ``mlflow.keras`` flavor under an explicit run id.

``mlflow.keras.log_model`` (MLflow 3.17) takes no ``run_id`` and no client: it reads the global
tracking URI (``mlflow.get_tracking_uri()``) and the active run, and when no run is active it
puts the LoggedModel in the active/default experiment — whose artifact location on an SQLite
store is ``./mlruns`` relative to the cwd. Setting the global URI temporarily would also
overwrite ``MLFLOW_TRACKING_URI`` in ``os.environ`` (``set_tracking_uri`` exports it). So we do
what ``mlflow.models.Model.log`` does, with public client calls on our own client:
create the LoggedModel, ``mlflow.keras.save_model`` to a temporary folder, upload it, link it
to the run as an output, mark it READY.

The result is the same as ``log_model`` inside ``mlflow.start_run(run_id)``: the model is listed
on the run, its files sit in ``<experiment artifact location>/models/<model_id>/artifacts``, and
both ``models:/<model_id>`` and ``runs:/<run_id>/<name>`` load it.

Explicit pip requirements (keras and tensorflow pinned to the installed versions) skip MLflow's
requirement inference, which reloads the model in a subprocess (~6 s here even for a tiny
model, versus ~0.05 s for the whole log once TF is warm).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from dlrun.track._writes import retry_locked

MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # mlflow.utils.mlflow_tags.MLFLOW_MODEL_VERSIONS


def default_pip_requirements() -> list[str]:
    from importlib import metadata

    reqs = []
    for dist in ("keras", "tensorflow"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def keras_signature(model: Any):
    """A tensor-based ModelSignature from the model's symbolic inputs/outputs, or None."""
    try:
        import numpy as np
        from mlflow.models.signature import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        def schema(tensors) -> Schema:
            tensors = list(tensors)
            named = len(tensors) > 1
            return Schema([
                TensorSpec(
                    np.dtype(object) if str(t.dtype) == "string" else np.dtype(str(t.dtype)),
                    tuple(-1 if d is None else int(d) for d in t.shape),
                    getattr(t, "name", None) if named else None,
                )
                for t in tensors
            ])

        return ModelSignature(inputs=schema(model.inputs), outputs=schema(model.outputs))
    except Exception:  # noqa: BLE001 - unbuilt or exotic models are logged without one
        return None


def log_keras_model(
    client: Any,
    experiment_id: str,
    run_id: str,
    model: Any,
    name: str = "model",
    *,
    step: int = 0,
    pip_requirements: list[str] | None = None,
    signature: Any = "infer",
    input_example: Any = None,
    metadata: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Log ``model`` as a LoggedModel named ``name`` of run ``run_id``; return ``models:/<id>``.

    ``pip_requirements=None`` pins the installed keras and tensorflow; ``signature="infer"``
    derives a tensor signature from ``model.inputs``/``model.outputs``; ``metadata`` goes into
    the MLmodel file.
    """
    import mlflow.keras
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    pinned_here = pip_requirements is None
    if pinned_here:
        pip_requirements = default_pip_requirements()
    if isinstance(signature, str) and signature == "infer":
        signature = keras_signature(model)

    logged = retry_locked(
        client.create_logged_model,
        experiment_id=experiment_id,
        name=name,
        source_run_id=run_id,
        tags=tags,
    )
    try:
        retry_locked(
            client.log_outputs, run_id, [LoggedModelOutput(logged.model_id, step=step)]
        )
        with tempfile.TemporaryDirectory(prefix="dlrun-model-") as tmp:
            local = Path(tmp) / "model"
            local.mkdir()  # save_model writes the input example before it creates the folder
            mlflow_model = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run_id,
                model_id=logged.model_id,
            )
            with _no_requirement_check() if pinned_here else contextlib.nullcontext():
                mlflow.keras.save_model(
                    model,
                    str(local),
                    mlflow_model=mlflow_model,
                    pip_requirements=pip_requirements,
                    signature=signature,
                    input_example=input_example,
                    metadata=metadata,
                )
            for pycache in local.rglob("__pycache__"):
                shutil.rmtree(pycache, ignore_errors=True)
            retry_locked(client.log_model_artifacts, logged.model_id, str(local))
    except BaseException:
        with contextlib.suppress(Exception):
            retry_locked(client.finalize_logged_model, logged.model_id, LoggedModelStatus.FAILED)
        raise
    retry_locked(client.finalize_logged_model, logged.model_id, LoggedModelStatus.READY)
    return f"models:/{logged.model_id}"


_CHECK_SWAP = threading.Lock()


@contextlib.contextmanager
def _no_requirement_check():
    """Without MLflow's check that the model's pip requirements are installed: it maps every
    installed distribution's files to modules first, 0.9 s of each process that logs a model, and
    the requirements pinned here are the installed versions, read from the same metadata."""
    from mlflow.utils import environment

    name = "warn_dependency_requirement_mismatches"  # looked up in that module when called
    with _CHECK_SWAP:  # one swap at a time: two threads must not keep each other's stand-in
        check = getattr(environment, name, None)
        if check is None:  # a later MLflow without it
            yield
            return
        setattr(environment, name, lambda requirements: None)
        try:
            yield
        finally:
            setattr(environment, name, check)


def run_logged_model(client: Any, run_id: str) -> str | None:
    """The id of the newest READY model logged as an output of run ``run_id``, else None."""
    outputs = getattr(retry_locked(client.get_run, run_id).outputs, "model_outputs", None) or []
    models = [retry_locked(client.get_logged_model, o.model_id) for o in outputs]
    ready = [m for m in models if str(m.status).endswith("READY")]
    return max(ready, key=lambda m: m.creation_timestamp).model_id if ready else None


def register_logged_model(client: Any, name: str, model_id: str, run_id: str,
                          tags: dict[str, str] | None = None) -> dict[str, Any]:
    """A new version of registered model ``name`` (created if new) for logged model ``model_id``."""
    from mlflow.exceptions import MlflowException

    try:
        retry_locked(client.create_registered_model, name)
    except MlflowException as exc:
        if "ALREADY_EXISTS" not in str(exc.error_code):
            raise
    # The artifact location, not models:/<id>: a SQL registry resolves that through the global
    # tracking URI, not this client's. The logged model lists its versions in a tag, as
    # mlflow.register_model records them.
    logged = retry_locked(client.get_logged_model, model_id)
    version = retry_locked(client.create_model_version, name, logged.artifact_location, run_id=run_id, tags=tags,
                           model_id=model_id)
    versions = json.loads(logged.tags.get(MODEL_VERSIONS_TAG, "[]"))
    versions.append({"name": name, "version": str(version.version)})
    retry_locked(client.set_logged_model_tags, model_id, {MODEL_VERSIONS_TAG: json.dumps(versions)})
    return {"name": name, "version": int(version.version), "model_uri": f"models:/{name}/{version.version}",
            "model_id": model_id, "run_id": run_id}

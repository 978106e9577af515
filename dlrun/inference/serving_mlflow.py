"""The model a job logs to MLflow, and registering it.

The logged model is the job's *serving* model — the one ``dlrun export --format keras`` writes:
the run's fitted preprocessing as Keras layers in front of the trained model (see
:mod:`dlrun.inference.export_plan`). So it is an ordinary ``mlflow.keras`` model: servable
with ``mlflow models serve`` and loadable with ``mlflow.pyfunc.load_model`` wherever keras and
tensorflow are installed, without dlrun, and it takes raw inputs. Where a step has no layer
(``pad_sequences``, ragged ``multi_hot``, a series' windows) it takes the rows after that step,
and its metadata (``dlrun.preprocessing.caller_applies``) and the ``dlrun.caller_applies`` tag
say so. The model is stored once in MLflow: this *is* the run's model there, not a second copy
next to a bare one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dlrun.errors import DlrunError, UsageError
from dlrun.inference.export_plan import example_inputs

log = logging.getLogger("dlrun.track")


def log_serving_model(tracked, job_dir: Path, model) -> str | None:
    """Log the job's serving model as ``tracked``'s model ``model``; return its URI.

    A serving model that cannot be made (a run directory from an older dlrun) must not fail a
    finished training: the bare model is logged instead, with a warning."""
    from dlrun.track.runs import RunReader

    if tracked.offline:
        return None
    job = RunReader(job_dir)  # one reader: the saved recipe is read and validated once
    if not takes_the_data(job):
        return tracked.log_keras_model(model, name="model")
    try:
        plan, trained = serving_plan(job, model)
    except Exception as exc:  # noqa: BLE001 - the training is done; log what we can
        log.warning("the logged model has no preprocessing inside (%s: %s); it takes the model's own inputs",
                    type(exc).__name__, exc)
        return tracked.log_keras_model(model, name="model")
    summary = plan.summary()
    metadata = {"dlrun": {"preprocessing": summary, **outputs_meaning(trained, model)}}
    outside = ", ".join(f"{s['step']} ({s['where']})" for s in summary["caller_applies"]) or "none"
    return tracked.log_keras_model(plan.model, name="model", input_example=example_inputs(plan.model),
                                   metadata=metadata, tags={"dlrun.caller_applies": outside})


# Sources whose model takes what the source makes of the data, with no layer for it: a character
# model's one-hot windows of its vocabulary (dlrun generate makes them).
_NO_SERVING_SOURCES = ("text_chars",)


def takes_the_data(job) -> bool:
    """Whether the job's model takes the run's data (then its preprocessing goes in front): not a
    VAE, GAN or plugin model (subclassed; a GAN takes latent points), nor a character model
    (one-hot windows in)."""
    from dlrun.model.kinds import KINDS

    recipe = job.top.recipe
    return KINDS[recipe.model.type].serves_data and recipe.data.source not in _NO_SERVING_SOURCES


def serving_plan(job, model):
    """The serving plan of ``job`` (a :class:`~dlrun.track.runs.RunReader`) around its (in-memory)
    ``model``, built from what the run directory recorded: its recipe, preprocessing.json and
    data.json (no data is loaded)."""
    from dlrun.inference.export_plan import plan_images, plan_in_memory, plan_timeseries
    from dlrun.inference.trained import TrainedModel

    trained = TrainedModel(job)
    data = trained.recipe.data
    if data.source == "image_directory":
        return plan_images(model, data), trained
    if data.source == "timeseries_csv":
        return plan_timeseries(model, data, trained.source_stats), trained
    sample = _stand_in_rows(trained.run.data_info(), trained.recipe)
    return plan_in_memory(model, trained.pipeline, sample, "keras"), trained


def outputs_meaning(trained, model) -> dict:
    """What the model's outputs mean: per output its kind (classes or values), the class names."""
    names = list(getattr(model, "output_names", None) or [])
    names = names if len(names) > 1 else ["prediction"]
    kinds = {n: vars(trained.output_kind(n if len(names) > 1 else None)) for n in names}
    return {"output_kind": kinds, "class_names": trained.class_names}


def _stand_in_rows(info: dict, recipe) -> Any:
    """Two rows in the raw data's form (shape, dtype, ragged or not) as data.json describes it:
    enough for the steps to show the shapes they give."""
    shape, dtype = info.get("x_sample_shape"), info.get("x_dtype")
    if shape is None or dtype is None:
        if "x" in info:
            return None  # named inputs: no preprocessing applies to them
        raise DlrunError("data.json does not describe the raw inputs (x_sample_shape, x_dtype)")
    steps = [s for s in recipe.preprocessing if s.apply_to == "x"]
    texts = bool(steps) and steps[0].transform == "text_vectorization"
    if shape == "ragged":
        rows = np.empty(2, dtype=object)
        rows[:] = ["a text", "another text"] if texts else [np.array([1, 2, 3]), np.array([4])]
        return rows
    if texts or np.dtype(dtype).kind in "OUS":
        return np.full((2, *shape), "a text", dtype=object)
    return np.zeros((2, *shape), dtype=dtype)


# --------------------------------------------------------------------------- registry


def registrar(job, name: str, output_root: Path, tracking_uri: str | None) -> Callable[[str], dict]:
    """Find the MLflow model ``job`` logged (a run's, a fold's, a refit's) now; register it later
    as a version of ``name`` with the returned call (its argument is recorded as ``dlrun.export``)."""
    from mlflow import MlflowClient

    from dlrun.track._keras_model import register_logged_model, run_logged_model
    from dlrun.track.mlflow_store import resolve_tracking_uri

    run_id = job.status.get("mlflow_run_id") or job.top.run_id
    uri = tracking_uri or job.top.status.get("tracking_uri") or resolve_tracking_uri(None, output_root)
    if not run_id:
        raise UsageError(f"--register: {job.path} has no MLflow run (it was kept offline), so no model to register")
    client = MlflowClient(tracking_uri=uri)
    model_id = run_logged_model(client, run_id)
    if model_id is None:
        raise UsageError(f"--register: MLflow run {run_id} at {uri} has no logged model (tracking.log_model: false, "
                         "or a run uploaded by dlrun sync, which uploads the model file as an artifact only)")
    return lambda export: register_logged_model(client, name, model_id, run_id, {"dlrun.export": export})


def register_run_model(run_id: str | None, tracking_uri: str | None, name: str) -> dict:
    """Register the model run ``run_id`` logged (a K-fold run's: its refit's) as a version of ``name``."""
    from mlflow import MlflowClient

    from dlrun.track._keras_model import register_logged_model, run_logged_model

    if not run_id or not tracking_uri:
        raise DlrunError(f"--register {name}: the run was kept offline (the store was unreachable), so no model "
                         "was logged: nothing was registered")
    client = MlflowClient(tracking_uri=tracking_uri)
    model_id = run_logged_model(client, run_id)
    if model_id is None:
        raise DlrunError(f"--register {name}: MLflow run {run_id} logged no model; nothing was registered")
    return register_logged_model(client, name, model_id, run_id)


def describe_registered(registered: dict) -> str:
    return f"registered {registered['name']} version {registered['version']} ({registered['model_uri']})"

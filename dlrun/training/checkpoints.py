"""Training state saved after every epoch, so an interrupted job resumes where it stopped.

``<job dir>/checkpoint/``:

- ``weights-<epoch>[-<batch>].weights.h5``: the model's and the optimizer's variables
  (learning rate, moments, iteration count), as Keras' ``save_weights`` writes them;
- ``metrics-<epoch>-<batch>.npz`` (a checkpoint inside an epoch, ``fit.checkpoint_steps``):
  the epoch's metric accumulators so far, so the resumed epoch reports whole-epoch values;
- ``state.json``: the epoch, the training stage (fine-tuning is stage 2), the random
  seed-generator states of dropout/augmentation layers (``save_weights`` leaves them out),
  the recipe callbacks' state (early-stopping patience and best value…), Python's and
  NumPy's RNG states, and, inside an epoch, how many of its batches are done. Written last
  and atomically: it names the files it goes with, so a crash while saving leaves the
  previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.track.rundir import CHECKPOINT_DIR

STATE_FILE = "state.json"
# Callback attributes that make up their state between epochs (Keras resets them in on_train_begin).
_CALLBACK_STATE = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")


@dataclass
class Checkpoint:
    """A saved training state: resume after ``epoch`` (1-based, completed) and ``batch``
    batches of the next one, in ``stage``, which ends at epoch ``stage_end``."""

    path: Path
    epoch: int
    stage: int
    stage_end: int
    weights: str
    stage_epochs: int = 0  # the stage's length in the recipe it was saved with
    seed_states: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)
    rng: dict = field(default_factory=dict)
    batch: int = 0  # batches of epoch + 1 already trained (a checkpoint inside an epoch)
    batch_size: int | None = None
    metrics: str | None = None  # the file of that epoch's metric accumulators


def _seed_variables(model) -> list:
    return [v for v in model.variables if "seed_generator_state" in v.path]


def callback_state(callback) -> dict[str, Any]:
    state = {}
    for name in _CALLBACK_STATE:
        value = getattr(callback, name, None)
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            state[name] = float(value) if isinstance(value, (float, np.floating)) else int(value)
    return state


def save_checkpoint(job_dir: Path, model, epoch: int, stage: int, stage_end: int, callbacks: list,
                    stage_epochs: int = 0, batch: int = 0, batch_size: int | None = None) -> bool:
    """Save the state after ``epoch`` completed epochs and ``batch`` batches of the next one;
    best weights of early stopping too. Inside an epoch, a state whose metrics are no longer
    finite (a NaN loss the guard has not stopped yet) is not saved: returns False."""
    folder = Path(job_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    at = f"{epoch}-{batch}" if batch else f"{epoch}"
    metrics = None
    if batch:
        accumulators = [np.asarray(v.numpy()) for v in model.metrics_variables]
        if not all(np.isfinite(a).all() for a in accumulators):
            return False
        metrics = f"metrics-{at}.npz"
        np.savez(folder / metrics, *accumulators)
    weights = f"weights-{at}.weights.h5"
    model.save_weights(folder / weights)
    best = {}  # callback index → its saved best weights (EarlyStopping(restore_best_weights))
    for i, cb in enumerate(callbacks):
        if getattr(cb, "best_weights", None):
            # They change only when an epoch ends: the saves inside the next epoch reuse this file.
            best[i] = f"best-{epoch}-{i}.npz"
            if not (folder / best[i]).is_file():
                _save_arrays(folder / best[i], cb.best_weights)
    state = {
        "epoch": epoch,
        "batch": batch,
        "batch_size": batch_size,
        "metrics": metrics,
        "stage": stage,
        "stage_end": stage_end,
        "stage_epochs": stage_epochs,
        "weights": weights,
        "seed_states": [np.asarray(v.numpy()).tolist() for v in _seed_variables(model)],
        "callbacks": [{**callback_state(cb), "best_weights": best.get(i)} for i, cb in enumerate(callbacks)],
        "rng": {"python": _jsonable(random.getstate()), "numpy": _jsonable(np.random.get_state())},
    }
    tmp = folder / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, folder / STATE_FILE)
    keep = {weights, metrics, STATE_FILE, *best.values()}
    for old in folder.iterdir():  # earlier epochs' files, now superseded
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return True


def _save_arrays(path: Path, arrays: list) -> None:
    """An .npz written whole or not at all (a later save may reuse it as it finds it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, *arrays)
    os.replace(tmp, path)


def load_checkpoint(job_dir: Path) -> Checkpoint | None:
    """The last complete checkpoint of a job directory, or None."""
    folder = Path(job_dir) / CHECKPOINT_DIR
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not (folder / state["weights"]).is_file():
        return None
    return Checkpoint(folder, int(state["epoch"]), int(state["stage"]), int(state["stage_end"]), state["weights"],
                      int(state.get("stage_epochs", 0)), state.get("seed_states", []), state.get("callbacks", []),
                      state.get("rng", {}), int(state.get("batch", 0)), state.get("batch_size"), state.get("metrics"))


def checkpoint_problem(job_dir: Path) -> str | None:
    """Why the checkpoint a job directory holds cannot be resumed from (its state unreadable, its
    weights file missing or not HDF5), or None: none saved yet, or a sound one."""
    import h5py

    folder = Path(job_dir) / CHECKPOINT_DIR
    if not (folder / STATE_FILE).exists():
        return None
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        weights = folder / state["weights"]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return f"{STATE_FILE} cannot be read: {type(exc).__name__}: {exc}"
    if not weights.is_file():
        return f"its weights file {weights.name} is missing"
    if not h5py.is_hdf5(weights):
        return f"its weights file {weights.name} is not a weights file (HDF5)"
    return None


def restore_model(model, checkpoint: Checkpoint) -> None:
    """Load weights, optimizer variables and seed-generator states into a compiled model. The
    optimizers' variables must exist before their values are loaded: a model with several (a GAN,
    whose ``model.optimizer`` is None) creates them in ``build_optimizers()``."""
    build_optimizers = getattr(model, "build_optimizers", None)
    if callable(build_optimizers):
        build_optimizers()
    elif model.optimizer is not None:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(checkpoint.path / checkpoint.weights)
    for variable, value in zip(_seed_variables(model), checkpoint.seed_states):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    if checkpoint.rng.get("python"):
        random.setstate(_tuples(checkpoint.rng["python"]))
    if checkpoint.rng.get("numpy"):
        kind, keys, pos, has_gauss, gauss = checkpoint.rng["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def restore_metrics(model, checkpoint: Checkpoint) -> None:
    """Give the interrupted epoch's metric accumulators back (after Keras reset them; the
    compiled metrics must be built, see ``build_metrics``)."""
    if checkpoint.metrics is None:
        return
    variables = model.metrics_variables
    with np.load(checkpoint.path / checkpoint.metrics) as saved:
        if len(saved.files) != len(variables):
            from dlrun.errors import ResumeError

            raise ResumeError(f"the checkpoint inside epoch {checkpoint.epoch + 1} holds {len(saved.files)} metric "
                              f"values, the model has {len(variables)}: put compile.metrics back as they were to "
                              f"resume this run")
        for i, variable in enumerate(variables):
            variable.assign(saved[f"arr_{i}"])


def build_metrics(model, x, y) -> None:
    """Keras builds the compiled metrics in the first train step, after the epoch began; one
    evaluation of a few rows builds them now (inference: no weight, no seed state changes)."""
    model.evaluate(x, y, verbose=0)


def saved_callback_states(checkpoint: Checkpoint) -> list[dict]:
    """The recipe callbacks' states in ``checkpoint``, best weights read from their files."""
    states = []
    for state in checkpoint.callbacks:
        state = dict(state)
        if state.get("best_weights"):
            with np.load(checkpoint.path / state["best_weights"]) as saved:
                state["best_weights"] = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        states.append(state)
    return states


def current_callback_states(callbacks: list) -> list[dict]:
    """The callbacks' states now, to carry them over into another ``fit`` call."""
    return [{**callback_state(cb), "best_weights": getattr(cb, "best_weights", None)} for cb in callbacks]


def state_restorer(callbacks: list, states: list[dict]):
    """A callback, placed after ``callbacks``, that gives them back ``states`` once Keras'
    ``on_train_begin`` has reset them."""
    import keras

    class RestoreCallbackState(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            for callback, state in zip(callbacks, states):
                for name in _CALLBACK_STATE:
                    if name in state:
                        setattr(callback, name, state[name])
                if state.get("best_weights") is not None:
                    callback.best_weights = state["best_weights"]

    return RestoreCallbackState()


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value

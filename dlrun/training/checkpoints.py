"""Training state saved after every epoch, so an interrupted job resumes where it stopped.

``<job dir>/checkpoint/``:

- ``weights-<epoch>.weights.h5``: the model's and the optimizer's variables (learning rate,
  moments, iteration count), as Keras' ``save_weights`` writes them;
- ``state.json``: the epoch, the training stage (fine-tuning is stage 2), the random
  seed-generator states of dropout/augmentation layers (``save_weights`` leaves them out),
  the recipe callbacks' state (early-stopping patience and best value…), Python's and
  NumPy's RNG states. Written last and atomically: it names the weights file it goes with,
  so a crash while saving leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
# Callback attributes that make up their state between epochs (Keras resets them in on_train_begin).
_CALLBACK_STATE = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")


@dataclass
class Checkpoint:
    """A saved training state: resume after ``epoch`` (1-based, completed) in ``stage``,
    which ends at epoch ``stage_end``."""

    path: Path
    epoch: int
    stage: int
    stage_end: int
    weights: str
    stage_epochs: int = 0  # the stage's length in the recipe it was saved with
    seed_states: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)
    rng: dict = field(default_factory=dict)


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
                    stage_epochs: int = 0) -> None:
    """Save the state after ``epoch`` completed epochs; best weights of early stopping too."""
    folder = Path(job_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights = f"weights-{epoch}.weights.h5"
    model.save_weights(folder / weights)
    best = {}  # callback index → its saved best weights (EarlyStopping(restore_best_weights))
    for i, cb in enumerate(callbacks):
        if getattr(cb, "best_weights", None):
            best[i] = f"best-{epoch}-{i}.npz"
            np.savez(folder / best[i], *cb.best_weights)
    state = {
        "epoch": epoch,
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
    keep = {weights, STATE_FILE, *best.values()}
    for old in folder.iterdir():  # earlier epochs' files, now superseded
        if old.name not in keep:
            old.unlink(missing_ok=True)


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
                      state.get("rng", {}))


def restore_model(model, checkpoint: Checkpoint) -> None:
    """Load weights, optimizer variables and seed-generator states into a compiled model."""
    model.optimizer.build(model.trainable_variables)  # its variables exist before they are loaded
    model.load_weights(checkpoint.path / checkpoint.weights)
    for variable, value in zip(_seed_variables(model), checkpoint.seed_states):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    if checkpoint.rng.get("python"):
        random.setstate(_tuples(checkpoint.rng["python"]))
    if checkpoint.rng.get("numpy"):
        kind, keys, pos, has_gauss, gauss = checkpoint.rng["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def state_restorer(callbacks: list, checkpoint: Checkpoint):
    """A callback, placed after ``callbacks``, that gives them back their saved state once
    Keras' ``on_train_begin`` has reset it."""
    import keras

    class RestoreCallbackState(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            for callback, state in zip(callbacks, checkpoint.callbacks):
                for name in _CALLBACK_STATE:
                    if name in state:
                        setattr(callback, name, state[name])
                if state.get("best_weights"):
                    with np.load(checkpoint.path / state["best_weights"]) as saved:
                        callback.best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]

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

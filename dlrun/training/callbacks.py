"""Keras callbacks: the recipe's own, and the one that records every epoch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dlrun.errors import ModelBuildError
from dlrun.recipe.schema import KerasObject

# Where dlrun puts a callback's output when the recipe leaves the path out.
_DEFAULT_PATHS = {
    "ModelCheckpoint": ("filepath", "checkpoints/best.keras"),
    "TensorBoard": ("log_dir", "tensorboard"),
    "CSVLogger": ("filename", "keras_log.csv"),
    "BackupAndRestore": ("backup_dir", "backup"),
}


# Callbacks that watch a metric (val_loss unless told otherwise).
_MONITORING = {"EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau"}


def build_callbacks(
    specs: list[KerasObject], run_dir: Path, *, has_validation: bool = True, note=lambda text: None
) -> list:
    """Instantiate the recipe's callbacks; output paths default to, and stay inside, the run dir.
    Without validation data (a refit on all data), callbacks watching a val_ metric are left out."""
    import keras

    callbacks = []
    for index, spec in enumerate(specs):
        args = dict(spec.args)
        monitor = str(args.get("monitor", "val_loss"))
        if spec.name in _MONITORING and monitor.startswith("val_") and not has_validation:
            note(f"fit.callbacks[{index}] ({spec.name}) watches {monitor}, and this job has no validation data: left out")
            continue
        if spec.name in _DEFAULT_PATHS:
            key, default = _DEFAULT_PATHS[spec.name]
            if spec.name == "ModelCheckpoint" and args.get("save_weights_only"):
                default = "checkpoints/best.weights.h5"  # Keras insists on this suffix for weights
            target = (run_dir / str(args.get(key, default))).resolve()
            if not target.is_relative_to(run_dir.resolve()):
                raise ModelBuildError(f"fit.callbacks[{index}] ({spec.name}): {key} must stay inside the run directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            args[key] = str(target)
        try:
            callbacks.append(getattr(keras.callbacks, spec.name)(**args))
        except Exception as exc:  # noqa: BLE001
            raise ModelBuildError(f"fit.callbacks[{index}] ({spec.name}): {exc}") from exc
    return callbacks


def epoch_recorder(job: str, epochs: int, on_epoch: Any):
    """A callback calling ``on_epoch(job, epoch, epochs, logs, seconds)`` (epochs 1-based)."""
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            from dlrun.training.interrupts import pending

            if pending():  # cut short by Ctrl-C/SIGTERM: not a whole epoch, not recorded
                return
            values = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
            on_epoch(job, epoch + 1, epochs, values, time.perf_counter() - self._start)

    return EpochRecorder()


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


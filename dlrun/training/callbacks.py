"""Keras callbacks: the recipe's own, and the one that records every epoch."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from dlrun.errors import ModelBuildError
from dlrun.recipe.safe_paths import CALLBACK_PATH_ARGS, FORMATTED_ARGS, path_problem
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
    specs: list[KerasObject], run_dir: Path, *, has_validation: bool = True, note=lambda text: None, model=None,
    cut_short=lambda: False,
) -> list:
    """Instantiate the recipe's callbacks; output paths default to, and stay inside, the run dir.
    Without validation data (a refit on all data), callbacks watching a val_ metric are left out.
    ``model``: the compiled model, before any checkpoint is restored into it (a named
    learning-rate schedule starts from its optimizer's rate). ``cut_short()``: whether the
    epoch that ends was stopped mid-way by dlrun (a NaN loss); such an epoch reaches no callback."""
    import keras

    from dlrun.model import plugins

    callbacks = []
    for index, spec in enumerate(specs):
        where = f"fit.callbacks[{index}] ({spec.name})"
        plugins.import_plugins(spec.plugins)
        args = dict(spec.args)
        monitor = str(args.get("monitor", "val_loss"))
        if spec.name in _MONITORING and monitor.startswith("val_") and not has_validation:
            note(f"fit.callbacks[{index}] ({spec.name}) watches {monitor}, and this job has no validation data: left out")
            continue
        if spec.name in CALLBACK_PATH_ARGS:
            key, default = _DEFAULT_PATHS.get(spec.name, (CALLBACK_PATH_ARGS[spec.name], spec.name.lower()))
            if spec.name == "ModelCheckpoint" and args.get("save_weights_only"):
                default = "checkpoints/best.weights.h5"  # Keras insists on this suffix for weights
            text = str(args.get(key, default))
            problem = path_problem(text, formatted=(spec.name, key) in FORMATTED_ARGS)
            target = (run_dir / text).resolve()  # follows symlinks: a link inside pointing out is refused
            if problem or not target.is_relative_to(run_dir.resolve()):
                raise ModelBuildError(f"{where}: {key} must stay inside the run directory ({problem or 'it leads out'})")
            target.parent.mkdir(parents=True, exist_ok=True)
            args[key] = str(target)
        if spec.name == "LearningRateScheduler":  # a named schedule (dlrun.training.schedules)
            callbacks.append(_scheduler(args, model, where))
            continue
        cls = plugins.keras_class("callback", spec.name)
        if cls is None:  # a custom callback, from the recipe's plugins
            callbacks.append(plugins.make("callback", spec.name, args, spec.plugins, where))
            continue
        try:
            callbacks.append(cls(**args))
        except Exception as exc:  # noqa: BLE001
            raise ModelBuildError(f"{where}: {exc}") from exc
    for callback in callbacks:
        _whole_epochs_only(callback, cut_short)
    return callbacks


def _whole_epochs_only(callback, cut_short) -> None:
    """An epoch cut short by Ctrl-C/SIGTERM is trained again on --resume, and one cut short by
    a NaN loss fails the run: the callback must not act on either (a TensorBoard step logged
    twice, a 'best' .keras saved from half an epoch, a CSV row too many, patience spent)."""
    from dlrun.training.interrupts import pending

    whole_epoch = callback.on_epoch_end

    def on_epoch_end(epoch, logs=None):
        if not pending() and not cut_short():
            whole_epoch(epoch, logs)

    callback.on_epoch_end = on_epoch_end


def _scheduler(args: dict, model, where: str):
    """Keras' LearningRateScheduler with a function dlrun builds from the schedule's name."""
    import keras

    from dlrun.training.schedules import BASE_ARG, keras_args, learning_rate_function, schedule_problems

    problems = schedule_problems(args)
    if problems:  # the recipe validator reports these first, located
        raise ModelBuildError(f"{where}: {problems[0][1]}")
    optimizer = getattr(model, "optimizer", None)
    if isinstance(getattr(optimizer, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule):
        raise ModelBuildError(f"{where}: the optimizer's learning_rate is already a schedule; use one or the other")
    if BASE_ARG in args:
        base = float(args[BASE_ARG])
    elif optimizer is not None:  # read before a resumed run's checkpoint changes it
        base = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    else:
        raise ModelBuildError(f"{where}: give the schedule an {BASE_ARG}")
    rate = learning_rate_function(args, base)
    return keras.callbacks.LearningRateScheduler(lambda epoch, current: rate(epoch), **keras_args(args))


def nonfinite_guard():
    """A callback that stops training at the first batch whose loss is NaN or infinite and
    remembers where (``tripped``: epoch, batch, value; 1-based), so the job can fail clearly
    instead of training on (Keras' TerminateOnNaN, with the place kept)."""
    import keras

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        tripped: tuple[int, int, float] | None = None
        batch_offset = 0  # batches trained before this fit call (an epoch resumed mid-way)
        # Keras may then run the batch-end check on its worker thread instead of stopping the
        # loop at every batch (≈13 % of a small model's epoch); it only sets flags, and Keras
        # waits for these checks before the epoch ends.
        async_safe = True

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)) and self.tripped is None:
                self.tripped = (self._epoch, self.batch_offset + batch + 1, float(loss))
                self.model.stop_training = True

    return StopOnNonFiniteLoss()


def step_checkpointer(every: int | None, save, resumed: tuple[int, int, Any] | None = None):
    """A callback calling ``save(epochs_done, batches_done)`` every ``every`` training batches
    inside an epoch, and at the batch where a noted Ctrl-C/SIGTERM stops it (``every`` None:
    neither). ``resumed`` (epoch, batches, restore): that epoch starts after that many batches
    already trained, and ``restore()`` gives back their metric totals once Keras reset them.

    It saves at a batch's *start*, from the main thread: the state then holds exactly the
    batches before it, and Keras' async batch-end dispatch stays on (an overriding batch-end
    hook would turn it off)."""
    import keras

    from dlrun.training.interrupts import pending

    class StepCheckpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._offset, self._stop_saved = epoch, 0, False
            if resumed is not None and resumed[0] == epoch:
                _, self._offset, restore = resumed
                restore()

        def on_train_batch_begin(self, batch, logs=None):
            done = self._offset + batch
            if not done or every is None:
                return
            if pending():  # Keras still runs this batch, then stops: the state before it is kept
                if not self._stop_saved:
                    self._stop_saved = save(self._epoch, done)
            elif done % every == 0:
                save(self._epoch, done)

    return StepCheckpoint()


def epoch_recorder(job: str, epochs: int, on_epoch: Any, cut_short=lambda: False):
    """A callback calling ``on_epoch(job, epoch, epochs, logs, seconds)`` (epochs 1-based);
    an epoch for which ``cut_short()`` is true (stopped mid-way) is not recorded."""
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            from dlrun.training.interrupts import pending

            if pending() or cut_short():  # Ctrl-C/SIGTERM or a NaN loss: not a whole epoch
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


"""Keras callbacks: the recipe's own, and the one that records every epoch."""

from __future__ import annotations

import math
import os
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


# What Keras fills into a ModelCheckpoint filepath besides the logged metrics.
_EPOCH_FIELDS = {"epoch"}
_BATCH_FIELDS = {"epoch", "batch"}  # saving every N batches (save_freq: N)
# Callbacks that add the optimizer's rate to the epoch's logs.
_LOGS_LEARNING_RATE = {"ReduceLROnPlateau", "LearningRateScheduler"}
# Callbacks that never change the weights (EarlyStopping too, unless it restores its best epoch's).
_LEAVE_WEIGHTS = {"ModelCheckpoint", "CSVLogger", "ReduceLROnPlateau", "LearningRateScheduler", "TensorBoard",
                  "TerminateOnNaN"}


def _watches(spec: KerasObject) -> str | None:
    """The metric a Keras callback watches (``monitor``, val_loss unless told otherwise), or None."""
    from dlrun.recipe.catalog import catalog

    entry = catalog()["callbacks"].get(spec.name)
    if entry is None or "monitor" not in entry["args"]:
        return None
    return str(spec.args.get("monitor", "val_loss"))


def keep_last_weights(specs: list[KerasObject]) -> bool:
    """Whether the weights after training are the last epoch's: no callback restores earlier ones
    (EarlyStopping's best) or may change them (a plugin's, one not known here)."""
    return all(spec.name in _LEAVE_WEIGHTS
               or (spec.name == "EarlyStopping" and not spec.args.get("restore_best_weights")) for spec in specs)


def build_callbacks(
    specs: list[KerasObject], run_dir: Path, *, has_validation: bool = True, note=lambda text: None, model=None,
    cut_short=lambda: False, extra: list = (),
) -> list:
    """Instantiate the recipe's callbacks; output paths default to, and stay inside, the run dir.
    Without validation data (a refit on all data), callbacks watching a val_ metric are left out.
    ``model``: the compiled model, before any checkpoint is restored into it (a named
    learning-rate schedule starts from its optimizer's rate). ``cut_short()``: whether the
    epoch that ends was stopped mid-way by dlrun (a NaN loss); such an epoch reaches no callback.
    ``extra``: dlrun's own callbacks that act per epoch as the recipe's do (the sample writers)."""
    callbacks = [build_callback(index, spec, run_dir, has_validation=has_validation, note=note, model=model)
                 for index, spec in enumerate(specs)]
    callbacks = [callback for callback in callbacks if callback is not None] + list(extra)
    for callback in callbacks:
        _whole_epochs_only(callback, cut_short)
    return callbacks


def build_callback(index: int, spec: KerasObject, run_dir: Path, *, has_validation: bool = True,
                   note=lambda text: None, model=None):
    """One recipe callback (None when it watches a val_ metric and the job has no validation)."""
    from dlrun.model import plugins
    from dlrun.model.keras_args import resolve_read_args
    from dlrun.recipe.permissions import network_problem

    where = f"fit.callbacks[{index}] ({spec.name})"
    if network_problem(spec.name):  # the recipe loader refuses it first, located
        raise ModelBuildError(f"{where}: {network_problem(spec.name)}")
    plugins.import_plugins(spec.plugins)
    args = dict(spec.args)
    monitor = _watches(spec)
    if monitor and monitor.startswith("val_") and not has_validation:
        note(f"fit.callbacks[{index}] ({spec.name}) watches {monitor}, and this job has no validation data: left out")
        return None
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
        return _scheduler(args, model, where)
    cls = plugins.keras_class("callback", spec.name)
    if cls is None:  # a custom callback, from the recipe's plugins
        return plugins.make("callback", spec.name, resolve_read_args(spec.name, args, spec.base_dir), spec.plugins,
                            where)
    try:
        return cls(**args)
    except Exception as exc:  # noqa: BLE001
        from dlrun.model.builder import first_line

        raise ModelBuildError(f"{where}: {first_line(exc)}") from exc


def check_callbacks(recipe, model, logged: list[str], has_validation: bool) -> None:
    """The preflight's look at the recipe's callbacks, before a run exists: every ``monitor``
    names a metric the compiled model logs, every field of a ModelCheckpoint ``filepath`` is one
    Keras fills in, and Keras accepts every callback's arguments — each is built once, into a
    folder thrown away. Raises a located RecipeError listing every problem."""
    import tempfile

    from dlrun.errors import RecipeError

    issues = []
    with tempfile.TemporaryDirectory(prefix="dlrun-preflight-") as scratch:
        for index, spec in enumerate(recipe.fit.callbacks):
            place = ("fit", "callbacks", index)
            found = [(place + (spec.name,) + sub if sub and spec.args else place, message)
                     for sub, message in _name_problems(recipe, spec, logged, has_validation)]
            if not found:
                try:
                    _try_callback(index, spec, Path(scratch), model, has_validation)
                except ModelBuildError as exc:  # in the recipe's terms: its own paths, not the scratch folder's
                    text = str(exc).removeprefix(f"fit.callbacks[{index}] ({spec.name}): ")
                    found = [(place, text.replace(str(Path(scratch).resolve()) + os.sep, ""))]
            issues += [recipe.issue(where, message) for where, message in found]
    if issues:
        raise RecipeError(issues)


def _try_callback(index: int, spec: KerasObject, scratch: Path, model, has_validation: bool) -> None:
    """Build one callback as a job would, and let a watching one decide, as Keras does when
    training begins, whether its metric should go up or down (``mode: auto`` on a metric whose
    direction Keras cannot tell fails there, after the run started)."""
    callback = build_callback(index, spec, scratch, has_validation=has_validation, model=model)
    decide = getattr(callback, "_set_monitor_op", None)  # Keras' MonitorCallback (3.x)
    if decide is None:
        return
    try:
        callback.set_model(model)
        decide()
    except Exception as exc:  # noqa: BLE001 - Keras' own refusal, in its words
        from dlrun.model.builder import first_line

        raise ModelBuildError(first_line(exc)) from exc


def _name_problems(recipe, spec: KerasObject, logged: list[str], has_validation: bool):
    """``(argument path, problem)`` for names inside the callback's strings that the model never logs."""
    from dlrun.errors import did_you_mean

    monitor = _watches(spec)
    if monitor is None or (monitor.startswith("val_") and not has_validation):
        return  # not a watching callback, or one this job leaves out
    curves = [*logged, *(f"val_{name}" for name in logged if has_validation)]
    if any(other.name in _LOGS_LEARNING_RATE for other in recipe.fit.callbacks):
        curves.append("learning_rate")
    if monitor not in curves:
        yield ("monitor",), (f"{spec.name} monitor '{monitor}' is not a metric this model logs"
                             f"{did_you_mean(monitor, curves)} (it logs: {', '.join(curves)})")
    path_key = CALLBACK_PATH_ARGS.get(spec.name)
    if (spec.name, path_key) in FORMATTED_ARGS and isinstance(spec.args.get(path_key), str):
        by_batch = isinstance(spec.args.get("save_freq"), int)  # batch logs: no val_ metrics
        fields = _BATCH_FIELDS | set(logged) if by_batch else _EPOCH_FIELDS | set(curves)
        for field in _format_fields(spec.args[path_key]):
            if field not in fields:
                yield (path_key,), (f"{spec.name} {path_key} has the field '{{{field}}}', which Keras cannot fill in"
                                    f"{did_you_mean(field, fields)} (it fills in: {', '.join(sorted(fields))})")


def _format_fields(text: str) -> list[str]:
    import string

    try:
        return [field for _, field, _, _ in string.Formatter().parse(text) if field]
    except ValueError:  # the recipe validator reports a malformed format string
        return []


def _whole_epochs_only(callback, cut_short) -> None:
    """An epoch cut short by Ctrl-C/SIGTERM is trained again on --resume, and one cut short by
    a NaN loss fails the run: the callback must not act on either (a TensorBoard step logged
    twice, a 'best' .keras saved from half an epoch, a CSV row too many, patience spent)."""
    from dlrun.training.interrupts import epoch_cut

    whole_epoch = callback.on_epoch_end

    def on_epoch_end(epoch, logs=None):
        if not epoch_cut() and not cut_short():
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
    remembers where (``tripped``: epoch, batch, value; 1-based; ``loss_name``: which loss), so the
    job can fail clearly instead of training on (Keras' TerminateOnNaN, with the place kept).
    Every loss a model logs is watched: ``loss``, and ``*_loss`` (a GAN's d_loss and g_loss)."""
    import keras

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        tripped: tuple[int, int, float] | None = None
        loss_name = "loss"
        batch_offset = 0  # batches trained before this fit call (an epoch resumed mid-way)
        # Keras may then run the batch-end check on its worker thread instead of stopping the
        # loop at every batch (≈13 % of a small model's epoch); it only sets flags, and Keras
        # waits for these checks before the epoch ends.
        async_safe = True

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            if self.tripped is not None:
                return
            for name, value in (logs or {}).items():
                if (name == "loss" or name.endswith("_loss")) and not math.isfinite(float(value)):
                    last = _last_batch(self, batch)
                    self.tripped, self.loss_name = (self._epoch, self.batch_offset + last, float(value)), name
                    # With steps_per_execution N, Keras reports once per N batches: any of them.
                    self.first_batch = self.batch_offset + batch + 2 - getattr(self.model, "steps_per_execution", 1)
                    self.model.stop_training = True
                    return

    return StopOnNonFiniteLoss()


def _last_batch(callback, batch: int) -> int:
    """The 1-based count of batches done at ``on_train_batch_end(batch)``: with steps_per_execution N,
    Keras passes the last index of an N-batch call, past the epoch's end for its last, shorter call."""
    steps = (callback.params or {}).get("steps")  # params: set by fit (not by a callback used alone)
    return min(batch + 1, steps) if steps else batch + 1


def step_checkpointer(every: int | None, save, stopped, resumed: tuple[int, int, Any] | None = None):
    """A callback calling ``save(epochs_done, batches_done)`` every ``every`` training batches
    inside an epoch (None: never), and ``stopped(epochs_done, batches_done)`` at the batch where a
    noted Ctrl-C/SIGTERM stops training. ``resumed`` (epoch, batches, restore): that epoch starts
    after that many batches already trained, and ``restore()`` gives back their metric totals
    once Keras reset them.

    It acts at a batch's *start*, from the main thread: the state then holds exactly the
    batches before it, and Keras' async batch-end dispatch stays on (an overriding batch-end
    hook would turn it off)."""
    import keras

    from dlrun.training.interrupts import pending

    class StepCheckpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._offset, self._stop_seen = epoch, 0, False
            if resumed is not None and resumed[0] == epoch:
                _, self._offset, restore = resumed
                restore()

        def on_train_batch_begin(self, batch, logs=None):
            done = self._offset + batch
            if pending():  # Keras still runs this batch, then stops: the state before it is kept
                if not self._stop_seen:
                    self._stop_seen = True
                    stopped(self._epoch, done)
            elif every is not None and done and done % every == 0:
                save(self._epoch, done)

    return StepCheckpoint()


def batch_progress(job: str, report, skipped: int = 0):
    """A callback calling ``report(job, epoch, batches_done, batches, logs)`` (epochs 1-based) after
    every training batch: a progress bar inside long epochs. ``skipped``: batches of the epoch
    trained before (a job resumed inside an epoch finishes that one epoch in a fit call of its own)."""
    import keras

    class BatchProgress(keras.callbacks.Callback):
        # It only hands numbers to the reporter (whose bars take a lock): Keras may call it on its
        # worker thread and keep dispatching batches without waiting for it.
        async_safe = True

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            steps = self.params.get("steps")
            report(job, self._epoch, skipped + _last_batch(self, batch), skipped + steps if steps else None,
                   dict(logs or {}))

    return BatchProgress()


def epoch_recorder(job: str, epochs: int, on_epoch: Any, cut_short=lambda: False):
    """A callback calling ``on_epoch(job, epoch, epochs, logs, seconds)`` (epochs 1-based);
    an epoch for which ``cut_short()`` is true (stopped mid-way) is not recorded."""
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            from dlrun.training.interrupts import epoch_cut

            if epoch_cut() or cut_short():  # Ctrl-C/SIGTERM or a NaN loss: not a whole epoch
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


"""The ``fit`` calls of one job: stage one, then the fine-tuning stage if the recipe has one,
each epoch recorded (history, checkpoint, MLflow, progress) as it ends; resumed from the
job's checkpoint when asked; stopped with a clear error when the loss stops being finite.
"""

from __future__ import annotations

from typing import Any

from dlrun.errors import TrainingDiverged


def train_stages(ctx, model, data, job: str, epochs: int, stop, checkpoint=None) -> dict[str, list]:
    """Train ``model`` for ``epochs`` (and the fine-tuning stage); return the history of the
    epochs trained now, after those restored from ``checkpoint`` (a resumed job's)."""
    from dlrun.training.callbacks import build_callbacks, nonfinite_guard
    from dlrun.training.checkpoints import restore_model
    from dlrun.training.interrupts import pending
    from dlrun.training.samples import sample_callbacks

    recipe = ctx.recipe
    guard = nonfinite_guard()
    # One set for both stages: a checkpoint keeps its best value, a CSV log its rows.
    own = build_callbacks(recipe.fit.callbacks, ctx.run_dir.path, has_validation=data.validation is not None,
                          note=ctx.reporter.note, model=model, cut_short=lambda: guard.tripped is not None,
                          extra=sample_callbacks(ctx, model, data))
    fine_tune = recipe.fit.fine_tune
    total = epochs + (fine_tune.epochs if fine_tune else 0)
    stage, start, end = 1, 0, epochs
    if checkpoint is not None:
        if checkpoint.stage == 2:  # the fine-tuning stage's layers and optimizer, then its state
            record_model_facts(ctx, start_fine_tuning(model, recipe))
        restore_model(model, checkpoint)
        stage, start = checkpoint.stage, checkpoint.epoch
        # The recipe decides where a stage ends (a forced resume may have changed its epochs).
        end = epochs if stage == 1 else checkpoint.stage_end - checkpoint.stage_epochs + fine_tune.epochs
        _append_logs(own)
        where = f" and {checkpoint.batch} batches of epoch {start + 1}" if checkpoint.batch else ""
        ctx.reporter.note(f"{job}: resumed after epoch {start}{where} (stage {stage})")

    fitting = _Fitting(ctx, model, data, job, own, stop, guard,
                       save_policy(ctx, (checkpoint.epoch, checkpoint.batch) if checkpoint is not None else None))
    history: dict[str, list] = {}
    if stage == 1:
        history = fitting.fit(start, end, total, 1, checkpoint) if start < end else {}
        checkpoint = None
        if fine_tune is None or pending():
            return history
        done = start + len(next(iter(history.values()), []))  # stage one may have stopped early
        record_model_facts(ctx, start_fine_tuning(model, recipe))
        ctx.reporter.note(f"fine-tuning {fine_tune.layer} from {fine_tune.unfreeze_from} on for "
                          f"{fine_tune.epochs} epochs")
        stage, start, end = 2, done, done + fine_tune.epochs
        _append_logs(own)
        if recipe.fit.checkpoint:  # a resume from here starts stage two, not stage one again
            from dlrun.training.checkpoints import save_checkpoint

            save_checkpoint(ctx.run_dir.path, model, start, 2, end, own, fine_tune.epochs)
    return joined(history, fitting.fit(start, end, total, 2, checkpoint))


def save_policy(ctx, resumed_at: tuple[int, int] | None):
    """The job's checkpoint saves (``fit.checkpoint_every``), its epochs going to MLflow with them."""
    from dlrun.training.checkpoint_policy import SavePolicy

    fit, tracked = ctx.recipe.fit, ctx.tracked

    def log(epoch: int, logs: dict) -> None:
        if tracked is not None:
            tracked.log_epoch(logs, step=epoch)

    return SavePolicy(fit.checkpoint_every if fit.checkpoint else None, log, resumed_at)


def joined(first: dict[str, list], then: dict[str, list]) -> dict[str, list]:
    """Two stretches of a history, one after the other, key by key."""
    return {k: first.get(k, []) + then.get(k, []) for k in {*first, *then}}


def start_fine_tuning(model, recipe) -> dict:
    """Unfreeze the named base from the named layer on and recompile with the fine-tune optimizer."""
    from dlrun.model.builder import compile_model
    from dlrun.model.finetune import unfreeze
    from dlrun.training.compute import model_scope

    spec = recipe.fit.fine_tune
    facts = unfreeze(model, spec)
    with model_scope(recipe):  # the new optimizer's variables on the job's devices
        compile_model(model, recipe.compile.model_copy(update={"optimizer": spec.optimizer}), recipe.model.type,
                      model.steps_per_execution)
    return facts


def record_model_facts(ctx, facts: dict) -> None:
    """What recipe layers found (GloVe coverage, a base's trainable layers): run dir, MLflow, a note."""
    if not facts:
        return
    ctx.run_dir.write_json("model_facts.json", {**_read_facts(ctx.run_dir), **facts})
    if ctx.tracked is not None:
        ctx.tracked.set_tags({f"dlrun.model.{k}": str(v) for k, v in facts.items()})
    ctx.reporter.note("model: " + ", ".join(f"{k} {v}" for k, v in facts.items()))


def _read_facts(run_dir) -> dict:
    return run_dir.read_json("model_facts.json") if run_dir.file("model_facts.json").exists() else {}


def _append_logs(callbacks: list) -> None:
    """CSVLogger continues its file in a later stage or a resumed run instead of starting it over."""
    for callback in callbacks:
        if hasattr(callback, "append") and hasattr(callback, "filename"):
            callback.append = True


class _Fitting:
    """The ``model.fit`` calls of one job, with the recipe's callbacks ``own`` and dlrun's:
    each epoch recorded as it ends, checkpoints saved, a NaN loss turned into a clear error."""

    def __init__(self, ctx, model, data, job: str, own: list, stop, guard, policy):
        self.ctx, self.model, self.data, self.job, self.own, self.stop, self.guard = \
            ctx, model, data, job, own, stop, guard
        self.steps = model.steps_per_execution  # the job's; a resumed epoch's rest may need fewer
        self.policy = policy

    def fit(self, start: int, end: int, total: int, stage: int, checkpoint) -> dict[str, list]:
        """Epochs ``start`` to ``end`` of ``total`` in ``stage``. A ``checkpoint`` saved inside
        epoch ``start + 1`` first finishes that epoch in a ``fit`` call of its own: Keras has
        one length for every epoch of a call."""
        from dlrun.training.checkpoints import (build_metrics, current_callback_states, restore_metrics,
                                                saved_callback_states)
        from dlrun.training.interrupts import pending

        model = self.model
        states = saved_callback_states(checkpoint) if checkpoint is not None else None
        history: dict[str, list] = {}
        if checkpoint is not None and checkpoint.batch:
            build_metrics(model, *self.data.few())
            history = self._run((start, start + 1, end, total, stage), states, skip=checkpoint.batch,
                                restore=lambda: restore_metrics(model, checkpoint))
            if pending() or model.stop_training or start + 1 >= end:  # interrupted, stopped early, or done
                return history
            start, states = start + 1, current_callback_states(self.own)  # the next fit resets them
        return joined(history, self._run((start, end, end, total, stage), states))

    def _run(self, epochs: tuple[int, int, int, int, int], states, skip: int = 0, restore=None) -> dict[str, list]:
        """One ``model.fit`` from epoch ``start`` to ``stop_at`` (the stage ends at ``end``), after
        ``skip`` batches of its first epoch, whose metric totals ``restore()`` gives back."""
        from dlrun.model.builder import set_steps_per_execution
        from dlrun.training.compute import steps_for_call

        start, stop_at = epochs[:2]
        data, recipe = self.data, self.ctx.recipe
        callbacks = self._callbacks(epochs, states, (start, skip, restore) if skip else None)
        self.guard.batch_offset = skip
        inputs = _inputs(recipe, data, start, skip)
        per_call = steps_for_call(self.steps, inputs.get("steps_per_epoch"))
        if per_call != self.model.steps_per_execution:
            set_steps_per_execution(self.model, per_call)
        try:
            history = self.model.fit(**inputs, epochs=stop_at,
                                     initial_epoch=start, validation_data=data.validation, callbacks=callbacks,
                                     verbose=0).history
        finally:
            self.guard.batch_offset = 0
        self._raise_if_diverged()
        return history

    def _callbacks(self, epochs: tuple[int, int, int, int, int], states, resumed=None) -> list:
        """dlrun's callbacks after the recipe's; ``resumed``: (epoch, batches done, metric restore)."""
        from dlrun.training.callbacks import batch_progress, epoch_recorder, step_checkpointer
        from dlrun.training.checkpoints import save_checkpoint, state_restorer
        from dlrun.training.interrupts import pending

        ctx, model, own, recipe, run_dir = self.ctx, self.model, self.own, self.ctx.recipe, self.ctx.run_dir
        policy = self.policy
        _, _, end, total, stage = epochs
        stage_epochs = recipe.fit.fine_tune.epochs if stage == 2 else end

        def save(epoch: int, batch: int = 0) -> bool:
            return save_checkpoint(run_dir.path, model, epoch, stage, end, own, stage_epochs, batch,
                                   recipe.fit.batch_size)

        policy.write = save

        def on_epoch(job, epoch, total, logs, seconds):
            run_dir.append_history(epoch, logs)
            # Saved when due, with MLflow after it: a resumed run never logs an epoch twice.
            policy.epoch_ended(epoch, logs, last=epoch >= end or bool(model.stop_training), stopping=bool(pending()))
            ctx.reporter.epoch(job, epoch, total, logs, seconds)

        callbacks = list(own)
        if states is not None:
            callbacks.append(state_restorer(own, states))
        callbacks += [self.stop, self.guard]
        if policy.enabled or resumed:
            callbacks.append(step_checkpointer(recipe.fit.checkpoint_steps if policy.enabled else None, policy.save,
                                               policy.stopped_at, resumed))
        if ctx.reporter.wants_batches:  # a bar inside the epoch (a terminal)
            callbacks.append(batch_progress(self.job, ctx.reporter.batch, resumed[1] if resumed else 0))
        # Last, so it sees what other callbacks add to the logs (ReduceLROnPlateau's learning_rate).
        callbacks.append(epoch_recorder(self.job, total, on_epoch, cut_short=lambda: self.guard.tripped is not None))
        return callbacks

    def _raise_if_diverged(self) -> None:
        if self.guard.tripped is None:
            return
        from dlrun.training.checkpoints import load_checkpoint

        run_dir = self.ctx.run_dir
        epoch, batch, value = self.guard.tripped
        first = max(1, getattr(self.guard, "first_batch", batch))
        batches = f"batch {batch}" if first >= batch else f"one of batches {first}–{batch}"
        last = load_checkpoint(run_dir.path) if self.ctx.recipe.fit.checkpoint else None
        if last is not None and (last.epoch or last.batch):
            after = f"epoch {last.epoch}" + (f" and {last.batch} batches of epoch {last.epoch + 1}" if last.batch else "")
            kept = f"the last good checkpoint (after {after}) is kept in {last.path}"
        else:
            kept = f"the epochs before are kept in {run_dir.path}"
        raise TrainingDiverged(
            f"{self.job}: {_loss_words(self.guard.loss_name)} became {value} at epoch {epoch}, {batches}; "
            f"training stopped and {kept}. "
            f"Lower the learning rate, look for NaN/inf in the data, or clip gradients "
            f"(compile.optimizer: {{Adam: {{clipnorm: 1.0}}}})")


def _loss_words(name: str) -> str:
    return "the loss" if name == "loss" else name


def _inputs(recipe, data, start: int, skip: int = 0) -> dict[str, Any]:
    """What ``fit`` trains on from epoch ``start`` on, ``skip`` batches of that epoch already trained."""
    stream = data.stream if data.streamed else _array_stream(recipe, data, skip)
    # Arrays to validate on go in fit.batch_size batches, also where the training part is a stream.
    more = {"validation_steps": recipe.fit.validation_steps} if data.streamed \
        else {"validation_batch_size": recipe.fit.batch_size}
    if stream is not None:  # batch k of the job's seeded stream, wherever the job stopped
        steps = (recipe.fit.steps_per_epoch if data.streamed else None) or stream.batches_per_pass
        return {"x": stream.dataset(start * steps + skip), "steps_per_epoch": steps - skip, "shuffle": False, **more}
    if data.streamed:  # an image folder in tf.data's order, which starts over in a new process:
        steps = recipe.fit.steps_per_epoch  # skipping keeps the epoch's length, not its exact batches
        return {"x": data.train.skip(skip) if skip else data.train, "steps_per_epoch": steps - skip if steps else None,
                "shuffle": False, **more}
    x, y = data.train
    return {"x": x, "y": y, "batch_size": recipe.fit.batch_size, "shuffle": recipe.fit.shuffle}


def reads_repeating(recipe, data) -> bool:
    """Whether fit reads a dataset that does not end with each epoch (``steps_per_epoch`` ends it)."""
    return (data.stream is not None or bool(recipe.fit.steps_per_epoch)) if data.streamed \
        else _streams_arrays(recipe, 0)


def _streams_arrays(recipe, skip: int) -> bool:
    return bool(skip or (recipe.fit.shuffle and (recipe.deterministic or recipe.fit.checkpoint_steps)))


def _array_stream(recipe, data, skip: int):
    """In-memory arrays go through a seeded stream where a resume must see the same batches."""
    if not _streams_arrays(recipe, skip):
        return None
    from dlrun.data.streams import array_stream

    x, y = data.train
    return array_stream(x, y, recipe.fit.batch_size, recipe.seed if recipe.fit.shuffle else None)

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
    from dlrun.training.callbacks import build_callbacks
    from dlrun.training.checkpoints import restore_model
    from dlrun.training.interrupts import pending

    recipe = ctx.recipe
    # One set for both stages: a checkpoint keeps its best value, a CSV log its rows.
    own = build_callbacks(recipe.fit.callbacks, ctx.run_dir.path, has_validation=data.validation is not None,
                          note=ctx.reporter.note, model=model)
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
        ctx.reporter.note(f"{job}: resumed after epoch {start} (stage {stage})")

    history: dict[str, list] = {}
    if stage == 1:
        history = _fit(ctx, model, data, job, own, (start, end, total, 1), stop, checkpoint) if start < end else {}
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
    more = _fit(ctx, model, data, job, own, (start, end, total, 2), stop, checkpoint)
    return {k: history.get(k, []) + more.get(k, []) for k in {*history, *more}}


def start_fine_tuning(model, recipe) -> dict:
    """Unfreeze the named base from the named layer on and recompile with the fine-tune optimizer."""
    from dlrun.model.builder import compile_model
    from dlrun.model.finetune import unfreeze

    spec = recipe.fit.fine_tune
    facts = unfreeze(model, spec)
    compile_model(model, recipe.compile.model_copy(update={"optimizer": spec.optimizer}))
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


def _fit(ctx, model, data, job: str, own: list, epochs: tuple[int, int, int, int], stop, checkpoint
         ) -> dict[str, list]:
    """``model.fit`` from epoch ``start`` to ``end`` of ``total``, in ``stage``, with the recipe's
    callbacks ``own``, recording each epoch as it ends."""
    from dlrun.training.callbacks import epoch_recorder, nonfinite_guard
    from dlrun.training.checkpoints import save_checkpoint, state_restorer

    recipe, run_dir = ctx.recipe, ctx.run_dir
    start, end, total, stage = epochs
    stage_epochs = recipe.fit.fine_tune.epochs if stage == 2 else end
    callbacks = list(own)

    def on_epoch(job, epoch, total, logs, seconds):
        run_dir.append_history(epoch, logs)
        if recipe.fit.checkpoint:  # before MLflow: a resumed run never logs an epoch twice
            save_checkpoint(run_dir.path, model, epoch, stage, end, own, stage_epochs)
        if ctx.tracked is not None:
            ctx.tracked.log_epoch(logs, step=epoch)
        ctx.reporter.epoch(job, epoch, total, logs, seconds)

    guard = nonfinite_guard()
    if checkpoint is not None:
        callbacks.append(state_restorer(own, checkpoint))
    # Last, so it sees what other callbacks add to the logs (ReduceLROnPlateau's learning_rate).
    callbacks += [stop, guard, epoch_recorder(job, total, on_epoch, cut_short=lambda: guard.tripped is not None)]
    history = model.fit(**_inputs(recipe, data, start, end), epochs=end, initial_epoch=start,
                        validation_data=data.validation, callbacks=callbacks, verbose=0).history
    if guard.tripped is not None:
        epoch, batch, value = guard.tripped
        kept = f"the last good checkpoint (epoch {epoch - 1}) is kept in {run_dir.path / 'checkpoint'}" \
            if recipe.fit.checkpoint and epoch > 1 else f"the epochs before are kept in {run_dir.path}"
        raise TrainingDiverged(
            f"{job}: the loss became {value} at epoch {epoch}, batch {batch}; training stopped and {kept}. "
            f"Lower the learning rate, look for NaN/inf in the data, or clip gradients "
            f"(compile.optimizer: {{Adam: {{clipnorm: 1.0}}}})")
    return history


def _inputs(recipe, data, start: int, end: int) -> dict[str, Any]:
    if data.streamed:
        return {"x": data.train, "steps_per_epoch": recipe.fit.steps_per_epoch,
                "validation_steps": recipe.fit.validation_steps, "shuffle": False}  # the source shuffles
    x, y = data.train
    if recipe.deterministic and recipe.fit.shuffle:
        from dlrun.training.feeding import seeded_epochs

        dataset, steps = seeded_epochs(x, y, recipe.fit.batch_size, recipe.seed, start, end)
        return {"x": dataset, "steps_per_epoch": steps, "shuffle": False}  # ordered by (seed, epoch)
    return {"x": x, "y": y, "batch_size": recipe.fit.batch_size, "shuffle": recipe.fit.shuffle}

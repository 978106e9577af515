"""``samples:`` — what a generative run writes while it trains, and after.

The model's kind gives its image samplers (a GAN's or VAE's grid every N epochs) and what it
draws when training ends (a VAE's latent grid and scatter); a source gives its own (a
``text_chars`` source: text at the book's temperatures). Everything lands in ``samples/`` of the
job directory and, as it is written, among the MLflow run's artifacts; a text sample's share of
real words is logged as a metric per temperature.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = "samples"


def _kind(recipe):
    from dlrun.model.kinds import KINDS

    return KINDS[recipe.model.type]


def check_samples(recipe, model) -> None:
    """The preflight's look: the model can draw what ``samples:`` asks for."""
    kind = _kind(recipe)
    if recipe.samples is not None and kind.check_samples is not None and kind.samplers is not None:
        kind.check_samples(model)


def _on_file(ctx):
    def log(path: Path) -> None:
        if ctx.tracked is not None:
            ctx.tracked.log_artifact(path, FOLDER)
    return log


def _log_text(ctx):
    def log(entry: dict) -> None:
        if ctx.tracked is not None and entry.get("word_fraction") is not None:
            name = f"sample_word_fraction_t{entry['temperature']:g}"
            ctx.tracked.log_metrics({name: entry["word_fraction"]}, step=entry["epoch"])
    return log


def sample_callbacks(ctx, model, data) -> list:
    """The callbacks that write the job's samples (none without ``samples:``)."""
    spec = ctx.recipe.samples
    if spec is None:
        return []
    folder = ctx.run_dir.path / FOLDER
    kind = _kind(ctx.recipe)
    callbacks = []
    source_samplers = getattr(ctx.dataset, "samplers", None)
    if source_samplers is not None:  # the data's own: text from a character model
        callbacks += source_samplers(spec, folder, _on_file(ctx), _log_text(ctx))
    elif kind.samplers is not None:
        callbacks += kind.samplers(model, spec, folder, _on_file(ctx))
    return callbacks


def finish_samples(ctx, model, data) -> list[Path]:
    """What the kind draws once training is done (a VAE's latent grid and scatter)."""
    spec = ctx.recipe.samples
    kind = _kind(ctx.recipe)
    if spec is None or kind.finish is None:
        return []
    return kind.finish(model, spec, data, ctx.run_dir.path / FOLDER, _on_file(ctx))

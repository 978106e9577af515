"""What a model kind or a task cannot do, refused on the raw recipe with positions.

Yields ``(path, message, at_key)`` like :func:`dlrun.recipe.catalog.check_recipe_objects`, which
calls it: a VAE or GAN under K-fold, ``compile.loss`` or ``metrics`` given to a kind that has its
own losses, a learning-rate callback for a GAN (it has two optimizers and no ``model.optimizer``),
``samples:`` where nothing generates, a task recipe with training sections, a plugin model whose
module is not listed under ``plugins``. Malformed sections are left to the schema.

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

from typing import Annotated, Any, Iterator

from dlrun.recipe.yaml_source import Path_

# The layer lists of each kind's parts (model.<part>: [layers]).
PART_LISTS = {"vae": ("encoder", "decoder"), "gan": ("generator", "discriminator")}
# Kinds that compute their own losses and log them; Keras' loss and metrics do not apply.
OWN_LOSSES = {
    "vae": "its loss is the reconstruction loss plus kl_weight × the KL divergence (set model.reconstruction and "
           "model.kl_weight); it logs loss, reconstruction_loss and kl_loss itself",
    "gan": "it trains with binary cross-entropy on its discriminator's outputs and logs d_loss and g_loss itself",
}
KIND_NAMES = {"vae": "a VAE", "gan": "a GAN"}
# Kinds whose compile needs no loss (a plugin may compute its own); the others' compile.loss is required.
LOSS_OPTIONAL_KINDS = ("vae", "gan", "plugin")
# Kinds with a generator (compile.generator_optimizer); a plugin receives it as generator_optimizer=.
GENERATOR_KINDS = ("gan", "plugin")
# Kinds whose samples are generated images (a plugin needs latent_dim and generate(z)).
IMAGE_SAMPLE_KINDS = ("vae", "gan", "plugin")
TEXT_SAMPLE_SOURCE = "text_chars"
_TEXT_SAMPLE_KEYS = ("length", "temperatures", "seed_text")
_IMAGE_SAMPLE_KEYS = ("images", "latent_grid")
# Sources whose rows are not images: the generative kinds learn from images.
_NOT_IMAGES = ("text_chars", "timeseries_csv", "text_directory")
# Callbacks that change model.optimizer's learning rate.
LEARNING_RATE_CALLBACKS = ("ReduceLROnPlateau", "LearningRateScheduler")
# The sections a task recipe does not have: it trains nothing.
TRAINING_SECTIONS = ("data", "preprocessing", "model", "compile", "fit", "evaluation", "samples", "search")


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def model_kind(raw: dict) -> str | None:
    model = raw.get("model")
    kind = model.get("type", "sequential") if isinstance(model, dict) else None
    return kind if isinstance(kind, str) else None  # a wrong type (a list…) is the schema's to locate


def part_layers(raw: dict) -> Iterator[tuple[Path_, Any]]:
    """``(path, layer)`` of every layer in a kind's part lists (a VAE's encoder, a GAN's generator…)."""
    model = _mapping(raw.get("model"))
    for part in PART_LISTS.get(model_kind(raw), ()):
        layers = model.get(part)
        for i, layer in enumerate(layers if isinstance(layers, list) else []):
            yield ("model", part, i), layer


def _name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    return next(iter(value)) if isinstance(value, dict) and len(value) == 1 else None


def kind_issues(raw: dict) -> Iterator[tuple[Path_, str, bool]]:
    """Every refusal of the raw recipe's model kind, task and samples."""
    task = raw.get("task")
    if isinstance(task, dict):
        kind = task.get("kind", "the task")
        for key in TRAINING_SECTIONS:
            if key in raw and not _as_default(key, raw[key]):
                yield (key,), (f"a task recipe ({kind}) trains nothing: leave out '{key}' (the task names its "
                               f"network under task.base or task.run, and its images)"), True
        return
    kind = model_kind(raw)
    comp, fit, data = _mapping(raw.get("compile")), _mapping(raw.get("fit")), _mapping(raw.get("data"))
    if kind is not None and kind not in LOSS_OPTIONAL_KINDS and isinstance(raw.get("compile"), dict) \
            and "loss" not in comp:
        yield ("compile",), "missing required key 'loss'", False
    if "generator_optimizer" in comp and kind not in GENERATOR_KINDS:
        yield ("compile", "generator_optimizer"), (f"only a GAN (model.type: gan) or a plugin model has a generator; "
                                                   f"a {kind or 'recipe without a'} model trains with "
                                                   f"compile.optimizer alone"), True
    if kind in OWN_LOSSES:
        yield from _own_loss_issues(raw, kind, comp, fit, data)
    if kind == "plugin":
        yield from _plugin_issues(raw)
    yield from _samples_issues(raw, kind, data)


def _as_default(key: str, value: Any) -> bool:
    """A section written as the recipe would be without it (a saved, resolved recipe holds them all)."""
    if value is None or value == []:
        return True
    from pydantic import TypeAdapter, ValidationError

    from dlrun.recipe.schema import Recipe  # the schema imports this module's neighbours: late

    field = Recipe.model_fields[key]
    section = TypeAdapter(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)
    try:  # keys left out take their defaults
        given = section.validate_python(value)
    except ValidationError:
        return True  # malformed: the schema says so
    default = field.get_default(call_default_factory=True)
    return section.dump_python(given, mode="json") == section.dump_python(default, mode="json")


def _own_loss_issues(raw: dict, kind: str, comp: dict, fit: dict, data: dict) -> Iterator[tuple[Path_, str, bool]]:
    who = KIND_NAMES[kind]
    for key in ("loss", "loss_weights", "metrics"):
        if comp.get(key):
            yield ("compile", key), f"{who} takes no compile.{key}: {OWN_LOSSES[kind]}", True
    protocol = _mapping(raw.get("evaluation")).get("protocol")
    if protocol in ("kfold", "baseline"):
        yield ("evaluation", "protocol"), (f"{who} runs under protocol holdout only: it learns from images alone, and "
                                           f"its losses do not pick a best epoch across folds"), False
    if "fine_tune" in fit and fit["fine_tune"] is not None:
        yield ("fit", "fine_tune"), f"{who} has no fine-tuning stage (it unfreezes a base and recompiles a " \
                                    f"loss-based model)", True
    if data.get("source") in _NOT_IMAGES:
        yield ("data", "source"), f"{who} learns from images: data.source {data['source']} gives no images", False
    callbacks = fit.get("callbacks")
    for i, callback in enumerate(callbacks if isinstance(callbacks, list) else []):
        if kind == "gan" and _name(callback) in LEARNING_RATE_CALLBACKS:
            yield ("fit", "callbacks", i), (f"{_name(callback)} changes model.optimizer's learning rate, and a GAN has "
                                            f"two optimizers: give each a schedule instead (compile.optimizer and "
                                            f"compile.generator_optimizer: {{RMSprop: {{learning_rate: "
                                            f"{{ExponentialDecay: {{...}}}}}}}})"), False


def _plugin_issues(raw: dict) -> Iterator[tuple[Path_, str, bool]]:
    model = _mapping(raw.get("model"))
    cls = model.get("class")
    plugins = raw.get("plugins") if isinstance(raw.get("plugins"), list) else []
    if isinstance(cls, str) and ":" in cls:
        module = cls.split(":", 1)[0]
        if module not in plugins:
            listed = f" (it lists: {', '.join(map(str, plugins))})" if plugins else ""
            yield ("model", "class"), (f"module '{module}' is not listed under plugins{listed}: a recipe imports "
                                       f"only the modules it lists — add it to plugins"), False


def _samples_issues(raw: dict, kind: str | None, data: dict) -> Iterator[tuple[Path_, str, bool]]:
    samples = raw.get("samples")
    if not isinstance(samples, dict):
        return
    text = data.get("source") == TEXT_SAMPLE_SOURCE
    if not text and kind not in IMAGE_SAMPLE_KINDS:
        yield ("samples",), (f"nothing here generates samples: a model.type vae, gan or plugin writes image grids, "
                             f"a data.source {TEXT_SAMPLE_SOURCE} model writes text"), True
        return
    from dlrun.recipe.kinds_schema import SamplesSpec

    def given(key: str) -> bool:  # a resolved recipe holds every key at its default
        return key in samples and samples[key] != SamplesSpec.model_fields[key].get_default(call_default_factory=True)

    wrong = _IMAGE_SAMPLE_KEYS if text else _TEXT_SAMPLE_KEYS
    for key in wrong:
        if given(key):
            what = "generated images (vae, gan, plugin)" if text else f"text (data.source {TEXT_SAMPLE_SOURCE})"
            yield ("samples", key), f"samples.{key} applies to {what} only", True
    if given("latent_grid") and kind != "vae" and not text:
        yield ("samples", "latent_grid"), "samples.latent_grid is a VAE's decoded latent grid (model.type: vae)", True

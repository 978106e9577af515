"""Model kinds: how each ``model.type`` of a recipe is built, compiled, sample-checked before a
run, and what it adds to training — one registry, :data:`KINDS`.

- ``sequential``, ``graph``: layers trained by ``fit`` on ``(x, y)`` (:mod:`dlrun.model.builder`,
  :mod:`dlrun.model.graph`);
- ``vae``, ``gan``: the book's chapter 8 models, ``keras.Model`` subclasses with their own
  training step, still trained by ``fit`` (callbacks, progress, checkpoints and ``--resume`` keep
  working): :mod:`.vae` (8.4), :mod:`.gan` (8.5), wired to recipes by :mod:`.generative`;
- ``plugin``: a ``keras.Model`` subclass from a module the recipe lists (:mod:`.plugin_kind`).

:mod:`.samples` draws what generative kinds learned (image grids, the VAE's latent grid and
scatter); :mod:`.book` holds the book's 8.4/8.5 architectures.

Checkpoints need nothing per kind: ``save_weights`` holds every optimizer the model tracks, and a
model with several optimizers (the GAN, a plugin's) creates their variables in
``build_optimizers()`` before they are loaded (:func:`dlrun.training.checkpoints.restore_model`).
A saved ``.keras`` of a kind loads through :func:`dlrun.model.saved.load_keras_model`, which
imports :data:`MODULES`. Nothing heavy is imported here: the hooks import Keras when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from dlrun.model import builder, graph
from dlrun.model.kinds import generative, plugin_kind

MODULES = ("dlrun.model.kinds.vae", "dlrun.model.kinds.gan")


@dataclass(frozen=True)
class Kind:
    """One ``model.type``.

    Args:
        build: ``(spec, input_shape, name, input_dtype, context) -> keras.Model``.
        compile: ``(model, compile_spec) -> None``.
        check: ``(model, x, y) -> names it logs``: a few rows through the compiled model before a
            run exists; a misfit is raised in the recipe's terms.
        samplers: ``(model, samples_spec, folder, on_file) -> callbacks`` writing samples while it
            trains (None: it generates nothing).
        finish: ``(model, samples_spec, data, folder, on_file) -> paths`` written after training.
        check_samples: ``(model) -> None`` raises when ``samples:`` cannot be drawn from this model.
        serves_data: its logged MLflow model takes the run's raw data, the fitted preprocessing in front
            (a subclassed model — a VAE, a GAN taking latent points, a plugin's — is logged as it is).
    """

    build: Callable[..., Any]
    compile: Callable[[Any, Any], None]
    check: Callable[..., list]
    samplers: Callable[..., list] | None = None
    finish: Callable[..., list] | None = None
    check_samples: Callable[[Any], None] | None = None
    serves_data: bool = False


KINDS: dict[str, Kind] = {
    "sequential": Kind(builder.build_sequential, builder.compile_layers, builder.check_data_fits, serves_data=True),
    "graph": Kind(graph.build_graph, builder.compile_layers, builder.check_data_fits, serves_data=True),
    "vae": Kind(generative.build_vae, generative.compile_vae, generative.check_vae, generative.image_samplers,
                generative.finish_vae),
    "gan": Kind(generative.build_gan, generative.compile_gan, generative.check_gan, generative.image_samplers),
    "plugin": Kind(plugin_kind.build_plugin, plugin_kind.compile_plugin, plugin_kind.check_plugin,
                   generative.image_samplers, check_samples=plugin_kind.check_generates),
}


def register_kinds() -> None:
    """Import the kinds' Keras classes, so saved models of those kinds deserialize."""
    import importlib

    for name in MODULES:
        importlib.import_module(name)

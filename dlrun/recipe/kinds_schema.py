"""``model.type`` kinds with their own training step (the book's chapter 8), and ``samples:``.

    model:                                  model:
      type: vae                               type: gan
      latent_dim: 2                           latent_dim: 32
      kl_weight: 0.392                        label_noise: 0.05
      encoder: [{Conv2D: {...}}, ...]         generator: [{Dense: {...}}, ...]
      decoder: [{Dense: {...}}, ...]          discriminator: [{Conv2D: {...}}, ...]

    model:
      type: plugin
      class: my_pkg.models:MyGAN              # a keras.Model subclass of a module under plugins:
      args: {latent_dim: 64}

What each kind cannot do (K-fold, ``compile.loss`` for a VAE, metrics on a GAN…) is refused,
located, by :mod:`dlrun.recipe.kinds_check`. This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field

from dlrun.recipe.schema_base import Strict

if TYPE_CHECKING:  # schema.py defines it and binds it here (bind_keras_object): no import cycle
    from dlrun.recipe.schema import KerasObject

BOOK_TEMPERATURES = (0.2, 0.5, 1.0, 1.2)  # 8.1's sampling temperatures
# A plugin model class: ``package.module:ClassName``.
PLUGIN_CLASS = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class VaeModel(Strict):
    """A variational autoencoder (8.4): the ``encoder`` layers end in a flat vector, to which
    dlrun adds the ``z_mean``/``z_log_var`` heads; the ``decoder`` layers take ``(latent_dim,)``
    and must give back the image shape. Trained on the images alone (labels are ignored, and
    colour the latent scatter); its loss is reconstruction + ``kl_weight`` × KL."""

    type: Literal["vae"]
    input_shape: list[int] | None = Field(default=None, description="the image shape; default: the data's")
    latent_dim: int = Field(strict=True, default=2, ge=1, lt=2**31)
    kl_weight: float = Field(default=1.0, ge=0, description="weight of the KL term (sums over pixels and "
                             "latent dims: the book's balance at 28×28, latent 2, is 0.392)")
    reconstruction: Literal["binary_crossentropy", "mse"] = Field(
        default="binary_crossentropy", description="binary_crossentropy needs pixels in [0, 1] and a sigmoid decoder")
    encoder: list[KerasObject] = Field(min_length=1)
    decoder: list[KerasObject] = Field(min_length=1)


class GanModel(Strict):
    """A generative adversarial network (8.5): the ``generator`` layers take ``(latent_dim,)``
    and give an image of the data's shape; the ``discriminator`` layers take that image and end
    in ``Dense(1, activation: sigmoid)``, the probability that an image is generated. Two
    optimizers: ``compile.optimizer`` (the discriminator's) and ``compile.generator_optimizer``."""

    type: Literal["gan"]
    input_shape: list[int] | None = Field(default=None, description="the image shape; default: the data's")
    latent_dim: int = Field(strict=True, default=32, ge=1, lt=2**31)
    label_noise: float = Field(default=0.05, ge=0, le=0.5,
                               description="uniform noise in [0, label_noise) added to the discriminator's labels")
    generator: list[KerasObject] = Field(min_length=1)
    discriminator: list[KerasObject] = Field(min_length=1)


class PluginModel(Strict):
    """A ``keras.Model`` subclass from a module listed under ``plugins:`` (for what the built-in
    kinds don't cover), made as ``Class(**args)`` and built on a batch of the data. ``compile``
    passes ``optimizer`` (and ``loss``, ``metrics``, ``generator_optimizer`` when given) to its
    ``compile``. A plugin with several optimizers creates their variables in ``build_optimizers()``."""

    type: Literal["plugin"]
    class_: str = Field(alias="class", pattern=PLUGIN_CLASS, max_length=300,
                        description="module:ClassName, the module listed under plugins")
    args: dict[str, Any] = Field(default_factory=dict)
    input_shape: list[int] | None = Field(default=None, description="passed as input_shape= when the class takes it")

    model_config = ConfigDict(**Strict.model_config, validate_by_name=True, serialize_by_alias=True)

    @property
    def module(self) -> str:
        return self.class_.split(":", 1)[0]


class SamplesSpec(Strict):
    """What a generative run writes while it trains, into ``samples/`` of the run and MLflow:
    a grid of generated images (``gan``, ``vae``, a plugin with ``latent_dim`` and
    ``generate``), or text at several temperatures (a ``text_chars`` source, 8.1). After a VAE's
    training: its decoded latent grid (2-D latent) and the latent scatter of the test images."""

    every: int = Field(strict=True, default=1, ge=1, lt=2**31, description="every N epochs")
    seed: int = Field(strict=True, default=0, ge=0, lt=2**32, description="the fixed latent points / text seeds")
    images: int = Field(strict=True, default=16, ge=1, le=1024, description="images in each grid (gan, vae, plugin)")
    latent_grid: int = Field(strict=True, default=15, ge=2, le=64,
                             description="vae with a 2-D latent space: the n×n decoded grid written at the end")
    length: int = Field(strict=True, default=400, ge=1, lt=2**31, description="text: characters per sample")
    temperatures: list[Annotated[float, Field(ge=0, le=100)]] = Field(default_factory=lambda: list(BOOK_TEMPERATURES), min_length=1,
                                      description="text: the sampling temperatures (0: always the likeliest)")
    seed_text: str | None = Field(default=None, description="text: the seed; default a random window of the "
                                                            "training text each time (the book's)")


def bind_keras_object(keras_object: type) -> None:
    """Resolve the ``KerasObject`` annotations; called once by schema.py, which defines it."""
    globals()["KerasObject"] = keras_object
    for model in (VaeModel, GanModel):
        model.model_rebuild(force=True)

"""``task:`` — a recipe whose work is not ``fit``: an image optimized against a network's layers
(DeepDream 8.2, neural style transfer 8.3) or a look inside a convnet (5.4).

    task:
      kind: explain
      run: dogs_vs_cats_scratch        # a trained run's model (a run directory, id or recipe name) …
      # base: {application: VGG16, weights: imagenet, include_top: true}   … or a keras.applications network
      image: ../../shared/datasets/dogs_vs_cats/originals_sample/cats/cat.1700.jpg
      activations: {}                   # 5.4.1
      filters: {filters: 16}            # 5.4.2
      grad_cam: {}                      # 5.4.3

A task recipe has no ``data``, ``model``, ``compile``, ``preprocessing`` or ``fit``: the network
and the images are the task's. Image files follow the recipe's file-read rule
(:mod:`dlrun.recipe.reads`). This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from dlrun.recipe.schema_base import Strict

# Where a task's pixels go: a mode, a rescale factor, or a keras.applications name (dlrun.tasks.images).
Preprocessing = Annotated[Union[float, str, None], Field(
    default=None, description="how pixels (0-255) become the network's inputs: none, caffe, tf, torch, a rescale "
                              "factor (0.00392156862745098) or a keras.applications name (VGG16); default: the "
                              "base's own, or the run's rescale")]
ImageSize = Annotated[list[int], Field(min_length=2, max_length=2)]
_BOOK_STYLE_LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]


class TaskBase(Strict):
    """A ``keras.applications`` network (InceptionV3, VGG16, VGG19…)."""

    application: str
    weights: str | None = Field(default="imagenet", description="imagenet, a local .h5/.keras file, or null (random)")
    include_top: bool = Field(default=False, description="with the classifier (Grad-CAM of ImageNet classes needs it)")
    input_shape: list[int] | None = Field(default=None, min_length=3, max_length=3,
                                          description="default: any size (include_top false), else the network's")


class _TaskCommon(Strict):
    base: TaskBase | None = None
    run: str | None = Field(default=None, min_length=1, max_length=1000,
                            description="a trained run: its directory, MLflow run id, recipe file or name (its "
                                        "latest finished run), looked up under --output-root")
    fold: int | None = Field(strict=True, default=None, ge=1, description="with run: a K-fold run's fold N")
    preprocessing: Preprocessing = None

    @model_validator(mode="after")
    def _one_network(self):
        if (self.base is None) == (self.run is None):
            raise ValueError("give exactly one of 'base' (a keras.applications network) or 'run' (a trained run)")
        if self.fold is not None and self.run is None:
            raise ValueError("'fold' picks a fold of a K-fold run: it needs 'run'")
        return self


class DeepDreamTask(_TaskCommon):
    """Gradient ascent on ``image`` to excite ``layers`` (with their weights), octave by octave (8.2)."""

    kind: Literal["deep_dream"]
    image: str
    image_size: ImageSize | None = Field(default=None, description="[height, width]; default the image's own")
    layers: dict[str, float] = Field(min_length=1, description="{layer name: weight} of the activations to raise")
    step: float = Field(default=0.01, gt=0)
    num_octave: int = Field(strict=True, default=3, ge=1, le=20)
    octave_scale: float = Field(default=1.4, gt=1)
    iterations: int = Field(strict=True, default=20, ge=1, lt=2**31, description="ascent steps per octave")
    max_loss: float | None = Field(default=10.0, description="an octave stops once its loss exceeds this")
    save_every: int | None = Field(strict=True, default=None, ge=1, description="also save the image every N steps")


class StyleTransferTask(_TaskCommon):
    """An image with ``content_image``'s layout and ``style_image``'s textures (8.3)."""

    kind: Literal["style_transfer"]
    content_image: str
    style_image: str
    height: int = Field(strict=True, default=400, ge=8, le=4096,
                        description="the generated image's height (the width keeps the content's proportions)")
    content_layer: str = "block5_conv2"
    style_layers: list[str] = Field(default_factory=lambda: list(_BOOK_STYLE_LAYERS), min_length=1)
    content_weight: float = Field(default=0.025, ge=0)
    style_weight: float = Field(default=1.0, ge=0)
    total_variation_weight: float = Field(default=1e-4, ge=0)
    iterations: int = Field(strict=True, default=20, ge=1, lt=2**31)
    optimizer: Literal["lbfgs", "sgd", "adam"] = Field(default="lbfgs", description="lbfgs as the book; sgd/adam as "
                                                                                     "keras-io (one step an iteration)")
    learning_rate: float | None = Field(default=None, gt=0, description="sgd/adam only")
    maxfun: int = Field(strict=True, default=20, ge=1, description="lbfgs: evaluations per iteration")
    save_every: int | None = Field(strict=True, default=1, ge=1)

    @model_validator(mode="after")
    def _rate_for_descent(self) -> "StyleTransferTask":
        if self.learning_rate is not None and self.optimizer == "lbfgs":
            raise ValueError("learning_rate applies to optimizer sgd or adam (L-BFGS finds its own steps)")
        return self


class ActivationsPart(Strict):
    """Every channel of each layer's activation as a grid (5.4.1)."""

    layers: list[str] | None = Field(default=None, description="default: every convolution and pooling layer")
    images_per_row: int = Field(strict=True, default=16, ge=1, le=256)
    max_channels: int | None = Field(strict=True, default=None, ge=1)


class FiltersPart(Strict):
    """The input pattern each filter answers most, by gradient ascent (5.4.2)."""

    layers: list[str] | None = Field(default=None, description="default: every convolution layer")
    filters: int = Field(strict=True, default=64, ge=1, le=4096, description="the first N filters of each layer")
    steps: int = Field(strict=True, default=40, ge=1, le=100000)
    step_size: float = Field(default=1.0, gt=0)
    size: int | None = Field(strict=True, default=None, ge=8, le=2048, description="default: the network's input "
                                                                                  "size, else 150")
    images_per_row: int = Field(strict=True, default=8, ge=1, le=256)


class GradCamPart(Strict):
    """The class-activation heatmap superimposed on the image (5.4.3)."""

    class_index: int | None = Field(strict=True, default=None, ge=0, description="default: the predicted class")
    layer: str | None = Field(default=None, description="default: the last convolution layer")
    alpha: float = Field(default=0.4, ge=0, le=1)


class ExplainTask(_TaskCommon):
    """What a convnet learned, seen on one image (5.4): any of ``activations``, ``filters``, ``grad_cam``."""

    kind: Literal["explain"]
    image: str | None = Field(default=None, description="needed by activations and grad_cam")
    image_size: ImageSize | None = Field(default=None, description="[height, width]; default the network's input size")
    activations: ActivationsPart | None = None
    filters: FiltersPart | None = None
    grad_cam: GradCamPart | None = None

    @model_validator(mode="after")
    def _something_to_draw(self) -> "ExplainTask":
        if self.activations is None and self.filters is None and self.grad_cam is None:
            raise ValueError("give at least one of 'activations', 'filters' or 'grad_cam' (e.g. activations: {})")
        if self.image is None and (self.activations is not None or self.grad_cam is not None):
            raise ValueError("activations and grad_cam look at an image: give 'image'")
        return self


TaskSpec = Annotated[Union[DeepDreamTask, StyleTransferTask, ExplainTask], Field(discriminator="kind")]
TASK_KINDS = ("deep_dream", "style_transfer", "explain")
# The task's image files, by kind: read by the run (dlrun.recipe.reads).
TASK_IMAGE_KEYS = ("image", "content_image", "style_image")

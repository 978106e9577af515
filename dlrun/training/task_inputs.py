"""What a task works on: its network — a ``keras.applications`` base or a trained run's model —
with the preprocessing that network expects, and its images as pixels.

A base takes its application's own preprocessing (``VGG16``: caffe); a run's model takes the
rescale factor its data had (an image folder's ``rescale``, or a ``rescale`` transform), or none
when it rescales itself. The recipe's (or the command line's) ``preprocessing`` wins over both.
A run's model is read from what the run saved (``model.keras``), never trained again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrun.errors import UsageError


@dataclass
class TaskNetwork:
    """A built network, how pixels reach it, and facts to record (where it came from)."""

    model: Any
    preprocessing: Any  # dlrun.tasks.images.Preprocessing
    facts: dict = field(default_factory=dict)
    job_dir: Path | None = None  # a run's model: the job directory it was read from

    @property
    def image_size(self) -> tuple[int, int] | None:
        """The ``(height, width)`` it takes, None when any size goes."""
        from dlrun.tasks.layers import spatial_input

        (height, width), _ = spatial_input(self.model)
        return (height, width) if height is not None and width is not None else None

    @property
    def channels(self) -> int:
        from dlrun.tasks.layers import spatial_input

        return spatial_input(self.model)[1]


def task_network(spec, base_dir: Path, output_root: Path, tracking_uri: str | None = None) -> TaskNetwork:
    """The network a task recipe names: ``spec.base`` or ``spec.run`` (with ``spec.fold``)."""
    if spec.base is not None:
        return base_network(spec.base, base_dir, spec.preprocessing)
    return run_network(spec.run, output_root, tracking_uri, spec.fold, spec.preprocessing)


def base_network(base, base_dir: Path, preprocessing=None) -> TaskNetwork:
    from dlrun.model.pretrained import build_application
    from dlrun.tasks.images import preprocessing as as_preprocessing

    model = build_application(base.application, weights=base.weights, include_top=base.include_top,
                              input_shape=tuple(base.input_shape) if base.input_shape else None,
                              base_dir=Path(base_dir), where="task.base")
    prep = as_preprocessing(preprocessing if preprocessing is not None else base.application)
    return TaskNetwork(model, prep, {"network": f"keras.applications.{base.application}",
                                     "weights": base.weights, "include_top": base.include_top,
                                     "preprocessing": prep.mode})


def run_network(ref: str, output_root: Path, tracking_uri: str | None = None, fold: int | None = None,
                preprocessing=None) -> TaskNetwork:
    from dlrun.inference.trained import open_trained
    from dlrun.tasks.images import preprocessing as as_preprocessing

    trained = open_trained(ref, Path(output_root), tracking_uri, fold=fold)
    model = trained.model
    prep = as_preprocessing(preprocessing if preprocessing is not None else run_rescale(trained.recipe))
    return TaskNetwork(model, prep, {"network": f"run {trained.job.path}", "preprocessing": prep.mode,
                                     **({"scale": prep.scale} if prep.mode == "rescale" else {})}, trained.job.path)


def run_rescale(recipe) -> float | None:
    """The factor a run multiplied its pixels by before the model saw them (None: none)."""
    data = recipe.data
    if getattr(data, "rescale", None) is not None:  # an image folder's
        return float(data.rescale)
    for step in recipe.preprocessing:
        if step.apply_to == "x" and step.transform == "rescale":
            if step.offset:
                raise UsageError(f"the run's preprocessing rescales with an offset ({step.scale} × x + {step.offset}); "
                                 f"give the preprocessing the model expects (a mode or factor) yourself")
            return float(step.scale)
    return None


def task_image(text: str, base_dir: Path, size: tuple[int, int] | None, channels: int):
    """The image ``text`` names (relative to the recipe's folder) as float pixels ``(h, w, c)``."""
    from dlrun.recipe.reads import resolve_read
    from dlrun.tasks.images import load_image

    return load_image(resolve_read(text, base_dir), size=tuple(size) if size else None, channels=channels)


def check_layers(model, names) -> None:
    """Every named layer is in the model (a clear error, before a run exists)."""
    from dlrun.tasks.layers import find_layer

    for name in names or ():
        find_layer(model, name)

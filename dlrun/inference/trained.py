"""A finished job's model together with the preprocessing it was trained with, read back.

The transforms are restored from the job's ``preprocessing.json`` exactly as they were fitted
(vocabularies, means and standard deviations, class counts) — never refitted — so a prediction
sees its input the way training saw its rows. What the model's outputs mean (class names, a
time series' units) comes from what the run recorded, too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from dlrun.errors import UsageError
from dlrun.track.runs import RunReader

# Losses whose targets are classes; the value says how the model's output encodes them.
_CLASS_LOSSES = {
    "categorical_crossentropy": "one_hot", "CategoricalCrossentropy": "one_hot",
    "sparse_categorical_crossentropy": "sparse", "SparseCategoricalCrossentropy": "sparse",
    "binary_crossentropy": "binary", "BinaryCrossentropy": "binary",
    "categorical_focal_crossentropy": "one_hot", "CategoricalFocalCrossentropy": "one_hot",
    "binary_focal_crossentropy": "binary", "BinaryFocalCrossentropy": "binary",
}


@dataclass(frozen=True)
class OutputKind:
    """How to read one output: ``classes`` (``binary``/``one_hot``/``sparse``), else ``values``."""

    kind: str  # binary | one_hot | sparse | values
    from_logits: bool = False

    @property
    def is_classifier(self) -> bool:
        return self.kind != "values"


class TrainedModel:
    """The model a job saved and the fitted preprocessing it trained with.

    ``job`` is a run (hold-out), a fold or a refit directory: see
    :meth:`dlrun.track.runs.RunReader.model_job` for which one stands for a K-fold run."""

    def __init__(self, job: RunReader, *, compile: bool = False):
        self.job = job
        self.run = job.top
        self.recipe = self.run.recipe
        self._compile = compile

    # ------------------------------------------------------------------ the parts

    @cached_property
    def model(self):
        from dlrun.model.saved import load_keras_model

        return load_keras_model(self.job.model_path, plugins=tuple(self.recipe.plugins or ()),
                                compile=self._compile, where=f"run {self.job.path}",
                                precision=self.recipe.fit.precision)

    @cached_property
    def pipeline(self):
        """The fitted transforms of an in-memory source (None for streamed sources: their
        statistics are in :attr:`source_stats`)."""
        from dlrun.data.transforms import restore_pipeline
        from dlrun.errors import DataError

        if self.streamed:
            return None
        records = self.job.preprocessing()
        if records is None:
            raise UsageError(f"{self.job.path} has no preprocessing.json: the run did not finish its first job")
        try:
            return restore_pipeline(self.recipe.preprocessing, records)
        except DataError as exc:
            raise UsageError(f"cannot restore the preprocessing of {self.job.path}: {exc}") from None

    @property
    def streamed(self) -> bool:
        from dlrun.recipe.schema import STREAMED_SOURCES

        return self.recipe.data.source in STREAMED_SOURCES

    @cached_property
    def source_stats(self) -> dict[str, Any]:
        """A streamed source's fitted statistics (a time series' means and standard deviations)."""
        return (self.job.preprocessing() or {}) if self.streamed else {}

    # ------------------------------------------------------------------ what the outputs mean

    @cached_property
    def output_names(self) -> list[str]:
        names = getattr(self.model, "output_names", None) or []
        return list(names) if len(names) > 1 else ["prediction"]

    def output_kind(self, output: str | None = None) -> OutputKind:
        loss = self.recipe.compile.loss
        if isinstance(loss, dict) and output in loss:  # a graph model's loss per output
            loss = loss[output]
        name = getattr(loss, "name", loss)
        kind = _CLASS_LOSSES.get(str(name), "values")
        args = getattr(loss, "args", {}) or {}
        return OutputKind(kind, bool(args.get("from_logits", False)))

    @cached_property
    def class_names(self) -> list[str] | None:
        """The names of the classes, in label order, where the run recorded them."""
        info = self.run.data_info()
        for key in ("class_names", "target_names", "classes"):
            names = info.get(key)
            if isinstance(names, list) and names:
                return [str(n) for n in names]
        classes = getattr(self.recipe.data, "classes", None)
        return list(classes) if classes else None

    # ------------------------------------------------------------------ using it

    def inputs(self, x):
        """Raw inputs in the form of the run's data → what the model takes: the run's transforms,
        a time series' normalization, an image source's rescaling and cached-feature base."""
        from dlrun.data.dataset import plain

        source = self.recipe.data.source
        if source == "timeseries_csv":
            from dlrun.inference.series import normalized

            return normalized(self, x)
        if source == "image_directory":
            if self.recipe.data.rescale is not None:
                x = x * np.float32(self.recipe.data.rescale)
            return x if self.feature_base is None else self.feature_base.predict(x, verbose=0)
        if self.pipeline is None:
            return x
        return plain(self.pipeline.apply(x, None)[0])

    @cached_property
    def feature_base(self):
        """The frozen pretrained base an image run's features came from (``data.features``), rebuilt."""
        features = getattr(self.recipe.data, "features", None)
        if features is None:
            return None
        if features.weights is None:
            raise UsageError(f"run {self.run.path} trained on features of a {features.application} base with random "
                             "weights (data.features.weights: null), which were not saved: its model cannot see new "
                             "images; train it with imagenet or a weights file")
        from dlrun.data.images import _CHANNELS
        from dlrun.model.pretrained import build_application

        spec = self.recipe.data
        shape = (*spec.image_size, _CHANNELS[spec.color_mode])
        return build_application(features.application, weights=features.weights, include_top=False,
                                 pooling=features.pooling, input_shape=shape, base_dir=self.run.base_dir,
                                 where="data.features")

    def readable(self, predictions):
        """Predictions in the units a user reads: a time series' forecast in the series' own units."""
        if self.recipe.data.source == "timeseries_csv":
            from dlrun.inference.series import original_units

            return original_units(self, predictions)
        return predictions

    def targets(self, x, y):
        """Raw ``(x, y)`` → what the model trained on (the label transforms too: one_hot)."""
        from dlrun.data.dataset import plain

        if self.pipeline is None:
            return x, y
        return plain(self.pipeline.apply(x, y))

    def predict(self, model_inputs, batch_size: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
        out = self.model.predict(model_inputs, batch_size=batch_size or self.recipe.fit.batch_size, verbose=0)
        if isinstance(out, dict):
            return {k: np.asarray(v) for k, v in out.items()}
        if isinstance(out, (list, tuple)):
            return dict(zip(self.output_names, map(np.asarray, out)))
        return np.asarray(out)


def open_trained(ref: str, output_root, tracking_uri: str | None = None, fold: int | None = None,
                 compile: bool = False) -> TrainedModel:
    """The trained model a user names (``dlrun predict RUN``): a run, ``--fold N`` of a K-fold run,
    or a K-fold run's refit. Finished runs only."""
    from dlrun.track.runs import open_run

    run = open_run(ref, output_root, tracking_uri, fold=fold)
    job = run.model_job()
    job.require_finished("this command")
    return TrainedModel(job, compile=compile)

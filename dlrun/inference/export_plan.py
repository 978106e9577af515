"""Which of a run's preprocessing steps go inside an exported model, and the model that holds them.

A run's model takes what its preprocessing made of the raw data. The *serving* model puts the
steps Keras has a layer for in front of it, so it takes raw inputs:

    standardize        → Rescaling(1/std, −mean/std)   (Normalization's mean/variance are captured
                                                        tensors that tf2onnx cannot convert)
    rescale            → Rescaling(scale, offset)
    reshape            → Reshape
    one_hot (of x)     → CategoryEncoding(one_hot)
    multi_hot          → CategoryEncoding(multi_hot)    on fixed-width integer rows
    text_vectorization → TextVectorization with the saved vocabulary (and idf weights), where it
                         gives fixed-width rows
    image folders      → Resizing(image_size), Rescaling(data.rescale)
    time series        → Rescaling(1/std, −mean/std) per column

A step without a layer (``pad_sequences``, ``multi_hot`` over ragged sequences, a time series'
windows, a pretrained feature base) stays with the caller, and so does every step before it:
the serving model starts after the last step without a layer. Some layers exist but do not
convert to every format (string ops in ONNX, Select-TF ops in TFLite): for that format such a
step is left out the same way. Label transforms (``apply_to: y``) are not part of prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

FORMATS = ("keras", "savedmodel", "onnx", "tflite")
# Layers that do not convert to a format: TextVectorization's string ops (ONNX has none,
# TFLite only through the Flex delegate) and CategoryEncoding's DenseBincount (a Select-TF op).
_UNSUPPORTED = {
    "text_vectorization": {"onnx": "ONNX has no string ops", "tflite": "TFLite runs string ops only through "
                           "the Flex (Select TF ops) delegate, which the LiteRT interpreter lacks"},
    "multi_hot": {"tflite": "its bincount is a Select-TF op the LiteRT interpreter lacks"},
}


@dataclass
class Step:
    """One step from raw input to the model's inputs."""

    name: str  # the transform, or what a source does: resize, window, features…
    where: str  # where the recipe sets it: preprocessing[0], data.image_size…
    record: dict  # its settings (and, for a step the caller applies, what it learned)
    layer: Any = None  # the Keras layer that does it inside the serving model
    why_outside: str = ""  # why it has no layer (for this format)
    apply: Callable | None = None  # how dlrun applies it to raw rows (for the steps the caller applies)
    inside: bool = False

    def describe(self) -> dict:
        text = {"step": self.name, "where": self.where, "inside": self.inside,
                "settings": {k: v for k, v in self.record.items() if k not in ("transform", "apply_to")}}
        return text if self.inside else {**text, "why": self.why_outside}


@dataclass
class ServingPlan:
    """The steps in order, split into those the caller applies and those inside the model."""

    steps: list[Step]
    labels: list[str]  # label transforms, not part of prediction
    model: Any  # the serving keras.Model (the run's own model when no step goes inside)
    input_dtypes: list[str] = field(default_factory=list)

    @property
    def outside(self) -> list[Step]:
        return [s for s in self.steps if not s.inside]

    @property
    def inside(self) -> list[Step]:
        return [s for s in self.steps if s.inside]

    def prepare(self, x):
        """Raw rows → what the serving model takes: the steps the caller applies, then its dtypes."""
        for step in self.outside:
            if step.apply is None:
                raise ValueError(f"{step.name} cannot be applied to raw rows here")
            x = step.apply(x)
        from dlrun.data.dataset import plain

        return _cast(plain(x), self.input_dtypes)

    def summary(self) -> dict:
        """What the sidecar and the MLflow model's metadata say about the preprocessing."""
        return {"inside": [s.describe() for s in self.inside],
                "caller_applies": [s.describe() for s in self.outside],
                "label_transforms": self.labels}

    def lines(self) -> list[str]:
        """One line per step, for the terminal."""
        out = [f"  inside the model:   {s.name} ({s.where})" for s in self.inside]
        out += [f"  caller applies:     {s.name} ({s.where}) — {s.why_outside}" for s in self.outside]
        out += [f"  not for prediction: {name} (a label transform)" for name in self.labels]
        return out or ["  no preprocessing: the model takes the data as it is"]


def _cast(x, dtypes: list[str]):
    if isinstance(x, dict) or not dtypes:
        return x
    # Texts as Python strings: Keras takes object arrays of str, not NumPy's fixed-width '<U'.
    return np.asarray(x, dtype=object if dtypes[0] == "string" else dtypes[0])


# --------------------------------------------------------------------------- in-memory data


def plan_in_memory(model, pipeline, sample, fmt: str) -> ServingPlan:
    """The plan for a run with in-memory data: ``pipeline`` its restored transforms, ``sample``
    a few raw rows (their shapes and dtypes decide what each step's layer takes)."""
    steps, labels, shapes = [], [], []
    x = sample
    for i, transform in enumerate(pipeline.steps if pipeline is not None else []):
        spec = transform.spec
        if spec.apply_to == "y":
            labels.append(f"{spec.transform} (preprocessing[{i}])")
            continue
        record = spec.model_dump(mode="json")
        layer, why = _transform_layer(transform, x, fmt)
        steps.append(Step(spec.transform, f"preprocessing[{i}]", record, layer, why, transform.apply))
        shapes.append(np.shape(x)[1:])
        x = transform.apply(x)
    shapes.append(np.shape(x)[1:])
    return _plan(model, steps, labels, shapes)


def _transform_layer(transform, x, fmt: str):
    """The Keras layer for one fitted transform given the rows entering it, else (None, why)."""
    import keras

    name = transform.spec.transform
    if fmt in _UNSUPPORTED.get(name, {}):
        return None, f"{_UNSUPPORTED[name][fmt]}; the {fmt} export starts after it"
    x = np.asarray(x) if not isinstance(x, dict) else x
    if isinstance(x, dict) or x.dtype == object and name != "text_vectorization":
        return None, "it takes variable-length sequences, which a model input cannot hold"
    if name == "standardize":
        return _affine(transform.mean, transform.std, "standardize"), ""
    if name == "rescale":
        return keras.layers.Rescaling(transform.spec.scale, transform.spec.offset, name="rescale"), ""
    if name == "reshape":
        return keras.layers.Reshape(tuple(transform.spec.shape), name="reshape"), ""
    if name in ("one_hot", "multi_hot"):
        tokens = transform.num_classes if name == "one_hot" else transform.spec.dimension
        return keras.layers.CategoryEncoding(num_tokens=tokens, output_mode=name, name=name), ""
    if name == "text_vectorization":
        spec = transform.spec
        if spec.output_mode == "int" and spec.output_sequence_length is None:
            return None, ("without output_sequence_length it gives variable-length sequences (set one to have "
                          "the layer in the model)")
        return transform.layer, ""
    return None, "Keras has no layer that does it exactly"


def _affine(mean, std, name: str):
    """(x − mean) / std as one Rescaling: x · (1/std) + (−mean/std), computed in float64."""
    import keras

    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return keras.layers.Rescaling((1.0 / std).astype(np.float32), (-mean / std).astype(np.float32), name=name)


# --------------------------------------------------------------------------- streamed sources


def plan_images(model, spec) -> ServingPlan:
    """An image folder's images: decoded pixels of any size → Resizing → Rescaling → the model."""
    import keras

    channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[spec.color_mode]
    size = list(spec.image_size)
    steps = [Step("resize", "data.image_size", {"image_size": size, "interpolation": "bilinear"},
                  keras.layers.Resizing(*size, interpolation="bilinear", name="resize"))]
    if spec.rescale is not None:
        steps.append(Step("rescale", "data.rescale", {"scale": spec.rescale},
                          keras.layers.Rescaling(float(spec.rescale), name="rescale")))
    if spec.features is not None:
        features = spec.features.model_dump(mode="json")
        steps.append(Step("features", "data.features", features, None,
                          f"the frozen {spec.features.application} base runs before the model and is not saved "
                          "with it"))
    return _plan(model, steps, [], [(None, None, channels)] * (len(steps) + 1))


def plan_timeseries(model, spec, stats: dict) -> ServingPlan:
    """A series' windows (the caller cuts them, and reverses them) → per-column normalization → the model."""
    steps = [Step("window", "data.lookback/step", {"lookback": spec.lookback, "step": spec.step,
                                                    "columns": list((stats.get("mean") or {}).keys()) or spec.columns},
                  None, "a window of rows is cut from the series before the model sees it")]
    if spec.reverse:
        steps.append(Step("reverse", "data.reverse", {"reverse": True}, None,
                          "the window is fed latest row first; Keras has no layer that reverses time"))
    if stats.get("normalize"):
        columns = list(stats["mean"])
        mean = [stats["mean"][c] for c in columns]
        std = [stats["std"][c] for c in columns]
        # Per column, so it commutes with cutting and reversing windows: it may go last.
        steps.append(Step("normalize", "data.normalize", {"columns": columns, "mean": mean, "std": std},
                          _affine(mean, std, "normalize")))
    return _plan(model, steps, [], [None] * (len(steps) + 1))  # None: the model's own window shape


# --------------------------------------------------------------------------- the serving model


def _plan(model, steps: list[Step], labels: list[str], shapes: list) -> ServingPlan:
    """Steps after the last one without a layer go inside; the serving model wraps ``model``.
    ``shapes[i]``: one sample's shape entering step i (None: the model's own input shape)."""
    start = max((i + 1 for i, s in enumerate(steps) if s.layer is None), default=0)
    for i, step in enumerate(steps):
        step.inside = i >= start
        if not step.inside and step.layer is not None:
            step.why_outside = f"a step after it ({steps[start - 1].name}) has no layer, so the export starts later"
    inside = steps[start:]
    if not inside:
        return ServingPlan(steps, labels, model, [str(t.dtype) for t in model.inputs])
    import keras

    shape = tuple(shapes[start]) if shapes[start] is not None else tuple(model.inputs[0].shape[1:])
    dtype = _input_dtype(inside, model)
    name = model.inputs[0].name if len(model.inputs) == 1 else "inputs"
    inputs = keras.Input(shape=shape, dtype=dtype, name=name)
    h = inputs
    for step in inside:
        h = step.layer(h)
    serving = keras.Model(inputs, model(h), name=f"{model.name}_serving")
    return ServingPlan(steps, labels, serving, [dtype])


def _input_dtype(inside: list[Step], model) -> str:
    """What the first step inside takes (a reshape takes anything: the step after it decides)."""
    first = next((s.name for s in inside if s.name != "reshape"), None)
    if first is None:
        return str(model.inputs[0].dtype)
    return {"text_vectorization": "string", "one_hot": "int32", "multi_hot": "int32"}.get(first, "float32")


def example_inputs(model) -> Any:
    """One row of what ``model`` takes: zeros (text for string inputs; a 4×4 image where any size
    goes). It shows the input's form; MLflow stores it and builds the serving example from it."""
    def one(tensor):
        shape = [1, *(4 if d is None else int(d) for d in tensor.shape[1:])]
        if str(tensor.dtype) == "string":
            return np.full(shape, "a text", dtype=object)
        return np.zeros(shape, dtype=str(tensor.dtype))

    if len(model.inputs) == 1:
        return one(model.inputs[0])
    return {t.name: one(t) for t in model.inputs}

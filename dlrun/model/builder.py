"""Recipe model and compile sections → a compiled ``keras.Model``: each ``model.type`` through its
kind (:data:`dlrun.model.kinds.KINDS`); the layer stacks (``sequential``) are built here."""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrun.errors import ModelBuildError
from dlrun.recipe.schema import CompileSpec, KerasObject, SequentialModel


@dataclass
class BuildContext:
    """What building a model may need besides the recipe, and what it found out.

    ``vocabulary``: the fitted text vectorizer's vocabulary in index order (for pretrained
    embeddings); ``base_dir``: the recipe's folder, against which relative file paths resolve;
    ``facts``: what recipe layers report (GloVe coverage, a base's layer count), written to
    the run directory and logged.
    """

    vocabulary: list[str] | None = None
    base_dir: Path = field(default_factory=Path.cwd)
    facts: dict[str, Any] = field(default_factory=dict)


# What TensorFlow and Keras wrap their messages in, of no use to a reader: the kernel's node name,
# the op's name, terminal bold.
_WRAPPING = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\](\s*name:\s*\S*)?|\x1b\[[0-9;]*m")


def first_line(exc: Exception) -> str:
    text = _WRAPPING.sub("", str(exc)).strip() or type(exc).__name__
    return text.splitlines()[0] if len(text) > 400 else " ".join(text.split())


def instantiate_layer(layer_spec: KerasObject, index: int, context: BuildContext, part: str = "layers"):
    """One recipe layer, ``model.<part>[index]``: a Keras layer, one of dlrun's, or a plugin's."""
    from dlrun.model.keras_args import keras_layer
    from dlrun.model.plugins import import_plugins
    from dlrun.model.recipe_layers import RECIPE_LAYERS

    where = f"model.{part}[{index}] ({layer_spec.name})"
    import_plugins(layer_spec.plugins)  # the recipe's plugins: imported when building, never at validate
    if layer_spec.name in RECIPE_LAYERS:
        return RECIPE_LAYERS[layer_spec.name](dict(layer_spec.args), context, where)
    return keras_layer(layer_spec.name, layer_spec.args, where, layer_spec.plugins, context.base_dir)


def build_model(spec, input_shape: tuple, name: str = "model", input_dtype: str = "float32",
                context: BuildContext | None = None):
    """The recipe's model (``model.type``: sequential, graph, vae, gan, plugin) for inputs of
    ``input_shape``, uncompiled."""
    from dlrun.model.kinds import KINDS

    return KINDS[spec.type].build(spec, input_shape, name, input_dtype, context or BuildContext())


def build_sequential(spec: SequentialModel, input_shape: tuple, name: str, input_dtype: str, context: BuildContext):
    """A ``keras.Sequential`` whose input shape comes from the data unless the recipe gives one.

    Layers are added one at a time so a shape mismatch names the layer that caused it.
    """
    import keras

    from dlrun.model.precision import keep_output_float32

    shape = tuple(spec.input_shape) if spec.input_shape is not None else tuple(input_shape)
    model = keras.Sequential(name=_safe_model_name(name))
    model.add(keras.Input(shape=shape, dtype=input_dtype))
    for index, layer_spec in enumerate(spec.layers):
        layer = instantiate_layer(layer_spec, index, context)
        if index == len(spec.layers) - 1:  # under mixed precision the outputs stay float32
            keep_output_float32(layer)
        try:
            model.add(layer)
        except Exception as exc:  # noqa: BLE001
            raise ModelBuildError(
                f"model.layers[{index}] ({layer_spec.name}) does not fit its input of shape "
                f"{_shape_text(model)}: {first_line(exc)}"
            ) from exc
    return model


def _shape_text(model) -> str:
    try:
        if len(model.outputs) > 1:
            return ", ".join(f"{o.name.split('/')[0]} {tuple(o.shape)}" for o in model.outputs)
        return str(tuple(model.outputs[0].shape))
    except Exception:  # noqa: BLE001
        return "unknown"


def _safe_model_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "model"


def make_object(kind: str, spec: KerasObject) -> Any:
    """An optimizer, loss or metric from its recipe form (string names pass through Keras' own lookup)."""
    import keras

    from dlrun.model import plugins

    plugins.import_plugins(spec.plugins)
    if not plugins.keras_knows(kind, spec.name):  # a custom one, from the recipe's plugins
        from dlrun.model.keras_args import resolve_read_args

        args = resolve_read_args(spec.name, dict(spec.args), spec.base_dir)
        return plugins.make(kind, spec.name, args, spec.plugins, f"compile.{kind} {spec.name}")
    module = {"optimizer": keras.optimizers, "loss": keras.losses, "metric": keras.metrics}[kind]
    try:
        if kind == "optimizer":
            from dlrun.model.keras_args import optimizer_args  # a learning_rate schedule object

            config = optimizer_args(dict(spec.args))
            return keras.optimizers.get({"class_name": spec.name, "config": config})
        if not spec.args:
            return spec.name  # 'accuracy', 'mse', 'binary_crossentropy': compile resolves these
        cls = getattr(module, spec.name, None)
        if not isinstance(cls, type):  # an alias such as 'mae' or 'accuracy' names a class too
            cls = type(module.get(spec.name))
        return cls(**spec.args)
    except Exception as exc:  # noqa: BLE001
        raise ModelBuildError(f"compile.{kind} {spec.name}: {first_line(exc)}") from exc


def compile_model(model, spec: CompileSpec, kind: str = "sequential", steps_per_execution: int = 1) -> None:
    """Compile ``model`` as its kind does (a GAN takes two optimizers, a VAE no loss), with the
    recipe's ``compile.jit_compile`` and ``steps_per_execution`` batches per compiled call."""
    from dlrun.model.kinds import KINDS

    KINDS[kind].compile(model, spec)
    # Set after the kind's compile, the same way for every kind (a plugin's compile may not pass them on).
    if spec.jit_compile != "auto":
        model.jit_compile = spec.jit_compile  # Keras warns and keeps False where the model cannot use XLA
    set_steps_per_execution(model, steps_per_execution)


def set_steps_per_execution(model, steps: int) -> None:
    """Run ``steps`` batches per call of the compiled step; the compiled functions are dropped,
    since they loop over as many batches as Keras' epoch iterator hands them."""
    model.steps_per_execution = steps
    model.train_function = model.test_function = model.predict_function = None


def compile_layers(model, spec: CompileSpec) -> None:
    """``compile`` of a sequential or graph model: optimizer, loss(es), metrics, loss weights."""
    # Keyword arguments only: Keras 3's third positional argument is loss_weights.
    # Per-output losses and metrics are dicts keyed by the graph model's output names.
    if isinstance(spec.loss, dict):
        loss = {out: make_object("loss", value) for out, value in spec.loss.items()}
    else:
        loss = make_object("loss", spec.loss)
    # A graph model's outputs by name (Keras keeps the dict it was built with).
    outputs = getattr(model, "_outputs_struct", None)
    outputs = list(outputs) if isinstance(outputs, dict) else []
    if isinstance(spec.metrics, dict):
        metrics = {out: [make_object("metric", m) for m in ms] for out, ms in spec.metrics.items()}
    elif outputs and spec.metrics:  # one list for several outputs: Keras wants it per output
        metrics = {out: [make_object("metric", m) for m in spec.metrics] for out in outputs}
    else:
        metrics = [make_object("metric", m) for m in spec.metrics]
    weights = None
    if spec.loss_weights:  # Keras needs one weight per loss: unnamed outputs weigh 1
        weights = {out: 1.0 for out in (outputs or spec.loss_weights)} | dict(spec.loss_weights)
    model.compile(optimizer=make_object("optimizer", spec.optimizer), loss=loss, metrics=metrics,
                  loss_weights=weights)


@contextmanager
def _eagerly(model):
    """The check's one batch run eagerly: tracing the test step for two rows cost 0.3–0.4 s a run,
    more than the check itself, and fit traces its own. A model compiled for XLA, or under a
    distribution strategy, is checked as it will run (an op XLA cannot compile shows here)."""
    import tensorflow as tf

    if getattr(model, "jit_compile", False) or tf.distribute.has_strategy():
        yield
        return
    before, model.run_eagerly = model.run_eagerly, True
    try:
        yield
    finally:
        model.run_eagerly = before
        model.test_function = None  # fit and evaluate trace their own


def check_data_fits(model, x, y) -> list[str]:
    """Run one tiny batch through the compiled model so a data/model mismatch is reported
    before any training starts, in the user's terms. Returns the names the model logs."""
    from dlrun.data.dataset import rows, sample_shapes

    sample = min(2, len(next(iter(x.values()))) if isinstance(x, dict) else len(x))
    try:
        with _eagerly(model):
            return list(model.test_on_batch(rows(x, slice(0, sample)), rows(y, slice(0, sample)), return_dict=True))
    except Exception as exc:  # noqa: BLE001
        out_shape = _shape_text(model)
        raise ModelBuildError(
            f"the data does not fit the model: inputs {sample_shapes(x)}, targets "
            f"{sample_shapes(y)}, model output {out_shape} — "
            f"{first_line(exc)}. Check the last layer's units, the loss and the preprocessing "
            f"(e.g. one_hot for categorical_crossentropy, none for sparse_categorical_crossentropy)."
        ) from exc

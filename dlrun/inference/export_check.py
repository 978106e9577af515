"""Load an exported model back with the runtime its format is for and run it.

keras: ``keras.saving.load_model`` in safe mode · savedmodel: ``tf.saved_model.load`` and its
``serving_default`` signature · onnx: onnxruntime · tflite: the LiteRT interpreter
(``ai-edge-litert``). Each gives its outputs as a list of arrays in the order Keras flattens the
model's outputs (``output_0``, ``output_1``… for the signature-based runtimes), and says what its
inputs are called and shaped, as that runtime sees them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dlrun.errors import DlrunError

# What each format needs beyond dlrun's own dependencies: (import name, distribution).
NEEDS = {
    "onnx": [("tf2onnx", "tf2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")],
    "tflite": [("ai_edge_litert", "ai-edge-litert")],
}


def require_packages(fmt: str) -> None:
    """A clear error before any work when the packages a format needs are not installed."""
    import importlib.util

    missing = [dist for module, dist in NEEDS.get(fmt, []) if importlib.util.find_spec(module) is None]
    if missing:
        raise DlrunError(f"--format {fmt} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                         "not installed: pip install 'dlrun[export]'")


@dataclass
class LoadedExport:
    run: Callable[[Any], list[np.ndarray]]  # inputs (an array, or a dict by input name) → outputs
    inputs: list[dict]  # name, shape (None: any size), dtype — as the runtime names them
    outputs: list[dict]


def load_export(fmt: str, path, plugins: tuple[str, ...] = ()) -> LoadedExport:
    return _LOADERS[fmt](str(path), plugins)


def _flatten(out) -> list[np.ndarray]:
    import keras

    return [np.asarray(o) for o in keras.tree.flatten(out)]


def _spec(name: str, shape, dtype) -> dict:
    return {"name": name, "shape": [None if d is None or d < 0 else int(d) for d in shape], "dtype": str(dtype)}


def _by_number(outputs: dict) -> list[np.ndarray]:
    """Signature outputs ``output_0``, ``output_1``… in their order (not the string order)."""
    def key(name):
        number = re.search(r"(\d+)$", name)
        return (int(number.group(1)) if number else 0, name)

    return [np.asarray(outputs[k]) for k in sorted(outputs, key=key)]


def _one_or_named(x, names: list[str]) -> dict:
    return dict(x) if isinstance(x, dict) else {names[0]: x}


# --------------------------------------------------------------------------- the runtimes


def _keras(path: str, plugins) -> LoadedExport:
    from dlrun.model.saved import load_keras_model

    model = load_keras_model(path, plugins=plugins, compile=False, where="the exported model")

    def run(x):
        return _flatten(model.predict(x, verbose=0, batch_size=256))

    names = list(getattr(model, "output_names", None) or []) or [t.name for t in model.outputs]
    return LoadedExport(run, [_spec(t.name, t.shape, t.dtype) for t in model.inputs],
                        [_spec(n, t.shape, t.dtype) for n, t in zip(names, model.outputs)])


def _savedmodel(path: str, plugins) -> LoadedExport:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    names = list(specs)

    def run(x):
        feed = {k: tf.constant(v) for k, v in _one_or_named(x, names).items()}
        return _by_number({k: v.numpy() for k, v in serve(**feed).items()})

    outputs = serve.structured_outputs
    return LoadedExport(run, [_spec(k, s.shape, s.dtype.name) for k, s in specs.items()],
                        [_spec(k, s.shape, s.dtype.name) for k, s in sorted(outputs.items())])


def _onnx(path: str, plugins) -> LoadedExport:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(x):
        return [np.asarray(o) for o in session.run(None, _one_or_named(x, names))]

    def dims(shape):
        return [d if isinstance(d, int) else -1 for d in shape]

    def dtype(onnx_type: str) -> str:
        name = onnx_type.removeprefix("tensor(").removesuffix(")")
        return {"float": "float32", "double": "float64", "float16": "float16"}.get(name, name)

    return LoadedExport(run, [_spec(i.name, dims(i.shape), dtype(i.type)) for i in session.get_inputs()],
                        [_spec(o.name, dims(o.shape), dtype(o.type)) for o in session.get_outputs()])


def _tflite(path: str, plugins) -> LoadedExport:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    names = list(inputs)

    def run(x):
        feed = _one_or_named(x, names)
        try:
            return _by_number(runner(**{k: np.ascontiguousarray(v) for k, v in feed.items()}))
        except RuntimeError as exc:
            flex = sorted(set(re.findall(r"Flex(\w+)", str(exc))))
            if not flex:
                raise
            raise DlrunError(
                f"the model needs TensorFlow ops that LiteRT has no built-in kernel for ({', '.join(flex)}: e.g. a "
                "GRU or LSTM layer's loop), which it runs only with the Flex delegate: nothing was written — export "
                "it as savedmodel or onnx") from None

    def spec(name, d):
        return _spec(name, d["shape_signature"], np.dtype(d["dtype"]).name)

    return LoadedExport(run, [spec(k, d) for k, d in inputs.items()], [spec(k, d) for k, d in sorted(outputs.items())])


_LOADERS = {"keras": _keras, "savedmodel": _savedmodel, "onnx": _onnx, "tflite": _tflite}


# --------------------------------------------------------------------------- writing


def write_export(model, fmt: str, path) -> None:
    """``model`` in ``fmt`` at ``path`` (a ``.keras``/``.onnx``/``.tflite`` file or a SavedModel folder)."""
    from dlrun.inference.export_plan import example_inputs

    model(example_inputs(model))  # a model never called is refused by the ONNX export
    if fmt == "keras":
        model.save(str(path))
        return
    keras_format = {"savedmodel": "tf_saved_model", "onnx": "onnx", "tflite": "litert"}[fmt]
    with _quiet_converters():
        model.export(str(path), format=keras_format, verbose=False)


@contextlib.contextmanager
def _quiet_converters():
    """tf2onnx logs a line per converted op; TensorFlow warns about lookup tables it does not
    serialize (the run's restored TextVectorization, which is not in the export); Keras' tf2onnx
    patch warns about NumPy 2. None of it is for users."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)

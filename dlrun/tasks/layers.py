"""Finding layers in a built model and reading their outputs, nested bases included.

A dlrun model often holds a ``keras.applications`` base as one layer of a Sequential
(``Pretrained``), so the layer a task names (``block5_conv3``) may sit one model down. Keras
gives no tensor for such a layer in the outer graph, so :class:`LayerTap` reads outputs during
an ordinary call of the model: it wraps the named layers' ``call`` for the length of that call
and keeps what they return. The kept tensors are the ones that flow on through the model, so a
``GradientTape`` sees the path from input to tap to output (Grad-CAM needs both ends), and it
works the same eagerly and inside ``tf.function``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from dlrun.errors import UsageError, did_you_mean

# Layers whose output is a spatial feature map of channels (5.4's "convolution and pooling layers").
_CONV_CLASSES = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose")
_POOL_CLASSES = ("MaxPooling2D", "AveragePooling2D")


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def flat_layers(model) -> list:
    """Every layer of ``model`` in graph order, the layers of nested models in their place."""
    found = []
    for layer in model.layers:
        found.extend(flat_layers(layer) if _is_model(layer) else [layer])
    return found


def find_layer(model, name: str):
    """The layer called ``name`` anywhere in ``model`` (nested models searched too)."""
    for layer in flat_layers(model):
        if layer.name == name:
            return layer
    names = [layer.name for layer in flat_layers(model)]
    raise UsageError(f"layer '{name}' is not in model '{model.name}'{did_you_mean(name, names)} — "
                     f"its layers: {', '.join(names[:40])}{' …' if len(names) > 40 else ''}")


def conv_layers(model, pooling: bool = True) -> list:
    """The convolution (and, with ``pooling``, 2-D pooling) layers of ``model`` in graph order."""
    kinds = _CONV_CLASSES + (_POOL_CLASSES if pooling else ())
    return [layer for layer in flat_layers(model) if type(layer).__name__ in kinds]


def last_conv_layer(model):
    """The last convolution layer of ``model`` (Grad-CAM's default, as the book's ``block5_conv3``)."""
    convs = conv_layers(model, pooling=False)
    if not convs:
        raise UsageError(f"model '{model.name}' has no convolution layer; name the layer to look at")
    return convs[-1]


def output_layer(model):
    """The layer that makes the model's output (inside a nested model when that comes last)."""
    layer = model.layers[-1]
    return output_layer(layer) if _is_model(layer) else layer


class LayerTap:
    """Call a model and get the outputs of named layers with it.

    Example::

        tap = LayerTap(model, ["block5_conv3"])
        features, predictions = tap(images)     # features["block5_conv3"]: (n, 14, 14, 512)

    A layer used twice in the graph yields its last call's output.
    """

    def __init__(self, model, names: Iterable[str]):
        self.model = model
        self.layers = {}
        for name in names:
            self.layers.setdefault(name, find_layer(model, name))

    def __call__(self, inputs, training: bool = False):
        captured: dict = {}
        own = {name: vars(layer).get("call") for name, layer in self.layers.items()}  # usually none
        try:
            for name, layer in self.layers.items():
                layer.call = self._keeping(layer.call, name, captured)
            outputs = self.model(inputs, training=training)
        finally:
            for name, layer in self.layers.items():
                if own[name] is None:
                    vars(layer).pop("call", None)  # the class's method shows through again
                else:
                    layer.call = own[name]
        return captured, outputs

    @staticmethod
    def _keeping(call, name, captured):
        def keeping_call(*args, **kwargs):
            captured[name] = call(*args, **kwargs)
            return captured[name]

        return keeping_call


def spatial_input(model) -> tuple[tuple[int | None, int | None], int]:
    """``((height, width), channels)`` the model takes; a size is None where any size goes."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise UsageError(f"model '{model.name}' takes inputs of shape {shape}, not images "
                         "(batch, height, width, channels)")
    return (shape[1], shape[2]), int(shape[3])


def flexible_prefix(model, names: Sequence[str]):
    """``model`` itself, or — for a Sequential that takes one image size only — its layers up to the
    last one holding a named layer, on an input of any height and width.

    Input optimization (filter patterns, DeepDream's octaves, style transfer at the image's size)
    needs images of other sizes than a trained classifier's; the convolution layers don't care,
    only its Flatten/Dense top does, and the top is not needed for these losses.
    """
    import keras

    (height, width), channels = spatial_input(model)
    if (height is None and width is None) or not isinstance(model, keras.Sequential):
        return model
    wanted = set(names)
    kept = []
    for layer in model.layers:
        kept.append(layer)
        wanted -= {inner.name for inner in (flat_layers(layer) if _is_model(layer) else [layer])}
        if not wanted:
            break
    inputs = keras.Input(shape=(None, None, channels))
    x = inputs
    try:
        for layer in kept:
            x = layer(x)
    except ValueError:  # a nested base built for one size only: keep the model as it is
        return model
    return keras.Model(inputs, x, name=f"{model.name}_prefix")


def check_feature_map(name: str, tensor) -> None:
    """Refuse a layer whose output is not ``(batch, height, width, channels)``."""
    if len(tensor.shape) != 4:
        raise UsageError(f"layer '{name}' gives outputs of shape {tuple(tensor.shape)}, not feature maps "
                         "(batch, height, width, channels); name a convolution or pooling layer")

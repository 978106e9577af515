"""What the generative kinds share: sub-models assembled from recipe layers with their shapes
checked, and the loss scaling that mixed precision needs in a hand-written training step."""

from __future__ import annotations

from typing import Sequence

from dlrun.errors import ModelBuildError


def assemble(role: str, input_shape: Sequence[int], body, output_shape: Sequence[int] | None = None):
    """A functional ``keras.Model`` named ``role`` from ``keras.Input(input_shape)`` through
    ``body``: a list of built Keras layers, or a ``keras.Model`` (then used as it is, after its
    input shape is checked). ``output_shape`` (without the batch axis): what it must produce.

    Example:

        decoder = assemble("decoder", (2,), [layers.Dense(784, activation="sigmoid"),
                                             layers.Reshape((28, 28, 1))], (28, 28, 1))
    """
    import keras

    if isinstance(body, keras.Model):
        model = body
        got = _input_shape(model)
        if got is not None and tuple(got) != tuple(input_shape):
            raise ModelBuildError(f"{role}: takes inputs of shape {tuple(got)}, it must take {tuple(input_shape)}")
    else:
        x = inputs = keras.Input(shape=tuple(input_shape), name=f"{role}_input")
        for index, layer in enumerate(body):
            try:
                x = layer(x)
            except Exception as exc:  # noqa: BLE001 - Keras raises ValueError/TypeError on a misfit
                from dlrun.model.builder import first_line

                raise ModelBuildError(f"{role}.layers[{index}] ({type(layer).__name__}) does not fit its input of "
                                      f"shape {tuple(_shape(inputs if index == 0 else x))}: {first_line(exc)}") from exc
        model = keras.Model(inputs, x, name=role)
    if output_shape is not None:
        check_output(role, model, output_shape)
    return model


def check_output(role: str, model, output_shape: Sequence[int], hint: str = "") -> None:
    """``model`` has one output of ``output_shape`` (without the batch axis)."""
    outputs = model.outputs
    if len(outputs) != 1:
        raise ModelBuildError(f"{role}: has {len(outputs)} outputs, it must have one of shape {tuple(output_shape)}")
    got = tuple(outputs[0].shape[1:])
    if got != tuple(output_shape):
        raise ModelBuildError(f"{role}: its output has shape {got}, it must be {tuple(output_shape)}{hint}")


def require_model(role: str, net) -> None:
    """``net`` is a built ``keras.Model`` with one input (what the builder gives for a part)."""
    import keras

    if not isinstance(net, keras.Model) or not getattr(net, "inputs", None) or len(net.inputs) != 1:
        raise ModelBuildError(f"{role}: must be a built keras.Model with one input (got {type(net).__name__})")


def _input_shape(model):
    inputs = getattr(model, "inputs", None)
    return tuple(inputs[0].shape[1:]) if inputs and len(inputs) == 1 else None


def _shape(tensor):
    return tuple(tensor.shape[1:])


def mixed_precision(model) -> bool:
    """Whether ``model`` computes in float16 with float32 variables (its dtype policy)."""
    return model.dtype_policy.name == "mixed_float16"


def loss_scaled(model, optimizer):
    """``optimizer`` wrapped in a ``LossScaleOptimizer`` when ``model`` runs in mixed_float16,
    as ``Model.compile`` does for the one optimizer it knows of. A training step must then
    take the gradients of ``optimizer.scale_loss(loss)``: the wrapper divides them back."""
    import keras

    if mixed_precision(model) and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer, name=f"loss_scale_{optimizer.name}")
    return optimizer


def refuse_compile_args(kind: str, kwargs: dict, why: str) -> None:
    """A kind with its own losses and trackers takes none from ``compile``."""
    given = [k for k in ("loss", "loss_weights", "metrics", "weighted_metrics") if kwargs.get(k)]
    if given:
        raise ModelBuildError(f"{kind}: compile takes no {' or '.join(given)}: {why}")


def with_models(config: dict, names: Sequence[str]) -> dict:
    """A kind's ``config`` with its sub-models (serialized by its ``get_config``) built again."""
    import keras

    return {**config, **{name: keras.saving.deserialize_keras_object(config[name]) for name in names}}


def images_only(data):
    """The inputs of a batch that may be ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, w)``: the
    generative kinds learn from the images alone, labels are ignored."""
    import keras

    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    return x



class SavesSeedState:
    """Keras saves a model's weights but not the state of its seed generators (the latent and
    label-noise draws, ε, dropout's masks): a model saved after training would load with fresh
    random seeds and draw otherwise than the run it came from. This mixin stores every seed
    state of the model, in ``model.variables`` order, beside its own variables."""

    _SEED_KEY = "seed_state_"

    def _seed_states(self) -> list:
        return [v for v in self.variables if "seed_generator_state" in v.path]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for index, variable in enumerate(self._seed_states()):
            store[f"{self._SEED_KEY}{index}"] = variable.numpy()

    def load_own_variables(self, store):
        keys = list(store.keys())
        for index, variable in enumerate(self._seed_states()):
            if f"{self._SEED_KEY}{index}" in keys:  # a file saved before the states were stored has none
                variable.assign(store[f"{self._SEED_KEY}{index}"])
        super().load_own_variables({k: store[k] for k in keys if not k.startswith(self._SEED_KEY)})

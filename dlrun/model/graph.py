"""A recipe graph model (:class:`~dlrun.recipe.graph_schema.GraphModel`) → a functional ``keras.Model``.

Nodes are called in topological order, each layer on its inputs' tensors, so a shape mismatch is
reported naming the node. A ``shared`` layer is made once and called at every node that names it:
one object, one set of weights (the siamese models of 7.1.5–7.1.6). Keras layers are named after
their node (or shared name) so summaries, fine-tuning and logged metrics read like the recipe.
One input or output is passed as a tensor; several as a dict keyed by name, which is how the data
(``data.x: {text: …}``) and per-output ``compile`` settings address them.
"""

from __future__ import annotations

from typing import Any

from dlrun.errors import ModelBuildError
from dlrun.recipe.graph_check import input_count

# Layers called as layer(query, value[, key]) rather than on a list of tensors.
_POSITIONAL_INPUTS = {"MultiHeadAttention"}


def topological_order(spec) -> list[str]:
    """Node names, each after the nodes it takes (validation already refused cycles)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]):
        if name in done or name in spec.inputs:
            return
        if name in trail:
            raise ModelBuildError(f"model.nodes: the nodes form a cycle through '{name}'")
        for ref in spec.nodes[name].input_names:
            visit(ref, trail + (name,))
        done.add(name)
        order.append(name)

    for name in spec.nodes:
        visit(name, ())
    return order


def _make_layer(layer_spec, name: str, where: str, context):
    from dlrun.model.keras_args import keras_layer
    from dlrun.model.plugins import import_plugins
    from dlrun.model.recipe_layers import RECIPE_LAYERS

    import_plugins(layer_spec.plugins)
    args = dict(layer_spec.args)
    args.setdefault("name", name)  # every recipe layer takes a name too
    if layer_spec.name in RECIPE_LAYERS:
        return RECIPE_LAYERS[layer_spec.name](args, context, where)
    return keras_layer(layer_spec.name, args, where, layer_spec.plugins, context.base_dir)


def _input_spec(spec, name: str, shapes: Any, dtypes: Any) -> tuple[tuple, str]:
    """An input's shape and dtype: the recipe's, else the data array's of that name."""
    declared = spec.inputs[name]
    data_shape = shapes.get(name) if isinstance(shapes, dict) else (shapes if len(spec.inputs) == 1 else None)
    data_dtype = dtypes.get(name) if isinstance(dtypes, dict) else (dtypes if len(spec.inputs) == 1 else None)
    shape = declared.shape if declared.shape is not None else data_shape
    if shape is None:
        raise ModelBuildError(f"model.inputs.{name}: give its shape (the data has no array named '{name}' "
                              f"to take it from)")
    return tuple(shape), declared.dtype or data_dtype or "float32"


def build_graph(spec, input_shapes: Any = None, name: str = "model", input_dtypes: Any = None, context=None):
    """The functional model of ``spec``; ``input_shapes``/``input_dtypes`` (one, or a dict by input
    name) fill in what the recipe's inputs leave out."""
    import keras

    from dlrun.model.builder import BuildContext, _safe_model_name, first_line
    from dlrun.model.precision import keep_output_float32

    context = context or BuildContext()
    tensors: dict[str, Any] = {}
    for input_name in spec.inputs:
        shape, dtype = _input_spec(spec, input_name, input_shapes, input_dtypes)
        tensors[input_name] = keras.Input(shape=shape, dtype=dtype, name=input_name)
    shared = {key: _make_layer(layer, key, f"model.shared.{key} ({layer.name})", context)
              for key, layer in spec.shared.items()}
    for node_name in topological_order(spec):
        node = spec.nodes[node_name]
        layer_spec = spec.shared[node.shared] if node.shared is not None else node.layer
        where = f"model.nodes.{node_name} ({layer_spec.name})"
        layer = shared[node.shared] if node.shared is not None else _make_layer(layer_spec, node_name, where, context)
        if node_name in spec.output_names:  # under mixed precision the outputs stay float32
            keep_output_float32(layer)
        args = [tensors[ref] for ref in node.input_names]
        try:
            if len(args) == 1 and input_count(layer_spec.name)[0] == 1:
                tensors[node_name] = layer(args[0])
            elif layer_spec.name in _POSITIONAL_INPUTS:
                tensors[node_name] = layer(*args)
            else:
                tensors[node_name] = layer(args)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for shape errors
            shapes = ", ".join(f"{ref} {_shape(t)}" for ref, t in zip(node.input_names, args))
            raise ModelBuildError(f"{where} does not fit its input{'s' if len(args) > 1 else ''} "
                                  f"({shapes}): {first_line(exc)}") from exc
    inputs = {k: tensors[k] for k in spec.inputs}
    outputs = {k: tensors[k] for k in spec.output_names}
    try:
        return keras.Model(inputs=_one_or_dict(inputs), outputs=_one_or_dict(outputs), name=_safe_model_name(name))
    except Exception as exc:  # noqa: BLE001
        raise ModelBuildError(f"model: {first_line(exc)}") from exc


def _one_or_dict(tensors: dict) -> Any:
    return next(iter(tensors.values())) if len(tensors) == 1 else tensors


def _shape(tensor) -> str:
    try:
        return str(tuple(tensor.shape))
    except Exception:  # noqa: BLE001
        return "?"

"""``model: {type: graph}`` — a Keras functional model written as named inputs, nodes and outputs.

    model:
      type: graph
      inputs:
        text: {shape: [100], dtype: int32}
        question: {shape: [100], dtype: int32}
      shared:                                  # one layer, one set of weights, used by several nodes
        encoder: {LSTM: {units: 32}}
      nodes:
        text_vec: {shared: encoder, inputs: text_emb}
        merged: {layer: Concatenate, inputs: [text_vec, question_vec]}
        answer: {layer: {Dense: {units: 10, activation: softmax}}, inputs: merged}
      outputs: answer                          # or a list of node names

The wiring (references, cycles, input counts) is checked by :mod:`dlrun.recipe.graph_check` on
the raw recipe, with positions; this schema only fixes the form. No tensorflow/keras here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from dlrun.recipe.schema_base import Strict

if TYPE_CHECKING:  # schema.py defines it and binds it here (bind_keras_object): no import cycle
    from dlrun.recipe.schema import KerasObject

# A node, input or shared-layer name: also a Keras layer name, so an identifier.
NodeName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]


class GraphInput(Strict):
    """One ``keras.Input``. Left out, ``shape`` and ``dtype`` come from the data array of that name."""

    shape: list[int | None] | None = None
    dtype: Literal["float32", "int32", "string"] | None = None


class GraphNode(Strict):
    """A layer applied to one or more earlier nodes or inputs: its own ``layer``, or a
    ``shared`` one (the same object, so the same weights, wherever it is used)."""

    layer: KerasObject | None = None
    shared: str | None = None
    inputs: str | list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_layer(self) -> "GraphNode":
        if (self.layer is None) == (self.shared is None):
            raise ValueError("give exactly one of 'layer' (a Keras layer) or 'shared' (a name under model.shared)")
        return self

    @property
    def input_names(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class GraphModel(Strict):
    type: Literal["graph"]
    inputs: dict[NodeName, GraphInput] = Field(min_length=1)
    shared: dict[NodeName, KerasObject] = Field(default_factory=dict)
    nodes: dict[NodeName, GraphNode] = Field(min_length=1)
    outputs: str | list[str] = Field(min_length=1)

    @property
    def output_names(self) -> list[str]:
        return [self.outputs] if isinstance(self.outputs, str) else list(self.outputs)


def bind_keras_object(keras_object: type) -> None:
    """Resolve the ``KerasObject`` annotations; called once by schema.py, which defines it."""
    globals()["KerasObject"] = keras_object
    for model in (GraphNode, GraphModel):
        model.model_rebuild(force=True)

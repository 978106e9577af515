"""The book's chapter 4–6 layers build from recipe form and train: convnets, recurrent layers,
wrappers, regularizers and dropout (their validation is in test_nested_args.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.errors import ModelBuildError
from dlrun.model.builder import build_model, compile_model
from dlrun.recipe.schema import CompileSpec, SequentialModel

CONVNET = [  # 5.1, 5.2, 7.3.1
    {"Conv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"MaxPooling2D": {"pool_size": 2}},
    {"SeparableConv2D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    "GlobalAveragePooling2D",
    {"Dropout": {"rate": 0.5}},
    {"Dense": {"units": 1, "activation": "sigmoid"}},
]
CONV1D = [  # 6.4
    {"Embedding": {"input_dim": 50, "output_dim": 4}},
    {"Conv1D": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"MaxPooling1D": {"pool_size": 2}},
    "GlobalMaxPooling1D",
    {"Dense": {"units": 1, "activation": "sigmoid"}},
]
STACKED_RNN = [  # 6.2, 6.3.6–6.3.7
    {"Embedding": {"input_dim": 50, "output_dim": 4}},
    {"SimpleRNN": {"units": 3, "return_sequences": True}},
    {"LSTM": {"units": 3, "dropout": 0.1, "recurrent_dropout": 0.2, "return_sequences": True}},
    {"GRU": {"units": 3, "dropout": 0.1, "recurrent_dropout": 0.2}},
    {"Dense": {"units": 1, "activation": "sigmoid"}},
]
WRAPPED_AND_REGULARIZED = [  # 6.3.8, 4.4.2
    {"Embedding": {"input_dim": 50, "output_dim": 4, "embeddings_initializer": {"RandomUniform": {"seed": 1}}}},
    {"Bidirectional": {"layer": {"GRU": {"units": 3}}, "merge_mode": "concat"}},
    {"Dense": {"units": 4, "activation": "relu", "kernel_regularizer": {"L2": {"l2": 0.001}}}},
    {"Dense": {"units": 4, "activation": "relu", "kernel_regularizer": {"L1L2": {"l1": 0.001, "l2": 0.002}},
               "bias_regularizer": "l2", "kernel_initializer": "he_normal"}},
    {"Dense": {"units": 1, "activation": "sigmoid", "kernel_constraint": {"MaxNorm": {"max_value": 2}}}},
]


def _model(layers, shape, dtype="float32"):
    model = build_model(SequentialModel(layers=layers), shape, input_dtype=dtype)
    compile_model(model, CompileSpec.model_validate({"optimizer": "rmsprop", "loss": "binary_crossentropy",
                                                     "metrics": ["accuracy"]}))
    return model


@pytest.mark.parametrize(("layers", "shape", "dtype"), [
    (CONVNET, (12, 12, 1), "float32"),
    (CONV1D, (10,), "int32"),
    (STACKED_RNN, (10,), "int32"),
    (WRAPPED_AND_REGULARIZED, (10,), "int32"),
], ids=["convnet", "conv1d", "stacked_rnn", "wrapped_regularized"])
def test_book_layers_build_and_train(layers, shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (16, *shape)) if dtype == "int32" else rng.random((16, *shape), dtype=np.float32)
    y = rng.integers(0, 2, (16, 1)).astype("float32")
    model = _model(layers, shape, dtype)
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_nested_keras_objects_become_keras_objects():
    import keras

    model = _model(WRAPPED_AND_REGULARIZED, (10,), "int32")
    bidirectional, dense_l2, dense_l1l2, out = model.layers[1:]
    assert isinstance(bidirectional.forward_layer, keras.layers.GRU) and bidirectional.forward_layer.units == 3
    assert isinstance(bidirectional.backward_layer, keras.layers.GRU)
    assert isinstance(dense_l2.kernel_regularizer, keras.regularizers.L2)
    assert dense_l2.kernel_regularizer.l2 == pytest.approx(0.001)
    assert dense_l1l2.kernel_regularizer.l1 == pytest.approx(0.001)
    assert dense_l1l2.kernel_regularizer.l2 == pytest.approx(0.002)
    assert isinstance(dense_l1l2.bias_regularizer, keras.regularizers.L2)
    assert isinstance(dense_l1l2.kernel_initializer, keras.initializers.HeNormal)
    assert isinstance(out.kernel_constraint, keras.constraints.MaxNorm)
    model(np.zeros((2, 10), dtype="int32"))
    assert len(model.losses) == 3  # the weight penalties reach the loss (4.4.2)


def test_bad_nested_argument_names_the_place():
    layers = [{"Dense": {"units": 2, "kernel_regularizer": {"L2": {"l3": 0.1}}}}]
    with pytest.raises(ModelBuildError, match=r"model.layers\[0\] \(Dense\).kernel_regularizer"):
        _model(layers, (3,))
    wrapped = [{"Bidirectional": {"layer": {"LSTM": {"unitz": 2}}}}]
    with pytest.raises(ModelBuildError, match=r"model.layers\[0\] \(Bidirectional\).layer \(LSTM\)"):
        _model(wrapped, (3, 2))

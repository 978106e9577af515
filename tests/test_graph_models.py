"""Graph models (``model: {type: graph}``): wiring errors found without TensorFlow, each located;
the functional model built from the recipe (shared layers, shape errors naming the node,
per-output compile settings); named arrays through splits."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dlrun.errors import ModelBuildError, RecipeError
from dlrun.recipe.loading import load_recipe

BASE = """\
name: g
data: {source: npz, path: d.npz, x: {text: a, question: b}, y: c}
model:
  type: graph
  inputs:
    text: {shape: [10], dtype: int32}
    question: {shape: [10], dtype: int32}
  shared:
    enc: {LSTM: {units: 4}}
  nodes:
    t_emb: {layer: {Embedding: {input_dim: 50, output_dim: 4}}, inputs: text}
    q_emb: {layer: {Embedding: {input_dim: 50, output_dim: 4}}, inputs: question}
    t_vec: {shared: enc, inputs: t_emb}
    q_vec: {shared: enc, inputs: q_emb}
    merged: {layer: Concatenate, inputs: [t_vec, q_vec]}
    answer: {layer: {Dense: {units: 3, activation: softmax}}, inputs: merged}
  outputs: answer
compile: {loss: categorical_crossentropy}
"""


def _errors(tmp_path, text: str) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, require_data=False)
    return [str(issue) for issue in caught.value.issues]


def _one(tmp_path, old: str, new: str) -> str:
    assert old in BASE
    errors = _errors(tmp_path, BASE.replace(old, new))
    return "\n".join(errors)


def test_base_recipe_is_valid(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(BASE)
    recipe = load_recipe(path, require_data=False).recipe
    assert recipe.model.type == "graph" and recipe.model.output_names == ["answer"]


def test_sequential_stays_the_default(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: s\ndata: {source: embedded, name: digits}\nmodel: {layers: [{Dense: {units: 2}}]}\n"
                    "compile: {loss: mse}\n")
    assert load_recipe(path).recipe.model.type == "sequential"


def test_unknown_reference_did_you_mean(tmp_path):
    text = _one(tmp_path, "inputs: [t_vec, q_vec]", "inputs: [t_vec, q_vce]")
    assert "r.yaml:15:50:" in text and "model.nodes.merged.inputs[1]: unknown node or input 'q_vce' — did you mean " \
                                    "'q_vec'?" in text


def test_unknown_shared_layer(tmp_path):
    text = _one(tmp_path, "q_vec: {shared: enc,", "q_vec: {shared: encc,")
    assert "model.nodes.q_vec.shared: unknown shared layer 'encc' — did you mean 'enc'?" in text


def test_cycle_is_named(tmp_path):
    text = _one(tmp_path, "t_vec: {shared: enc, inputs: t_emb}",
                "t_vec: {shared: enc, inputs: t_emb}\n    loop_a: {layer: {Dense: {units: 2}}, inputs: loop_b}\n"
                "    loop_b: {layer: {Dense: {units: 2}}, inputs: loop_a}")
    assert "model.nodes.loop_a: the nodes form a cycle: loop_a → loop_b → loop_a" in text


def test_unused_input(tmp_path):
    text = _one(tmp_path, "    question: {shape: [10], dtype: int32}\n",
                "    question: {shape: [10], dtype: int32}\n    extra: {shape: [3]}\n")
    assert "r.yaml:8:5: model.inputs.extra: input 'extra' is not used by any node" in text


def test_node_names_are_unique_layer_names(tmp_path):
    text = _one(tmp_path, "    answer: {layer:", "    enc: {layer: Flatten, inputs: merged}\n    answer: {layer:")
    assert "model.nodes.enc: 'enc' names both a shared layer and a node; give them different names" in text


def test_output_that_does_not_exist(tmp_path):
    text = _one(tmp_path, "outputs: answer", "outputs: [answer, anser]")
    assert "model.outputs[1]: unknown node 'anser'; outputs name nodes — did you mean 'answer'?" in text


def test_merge_layer_needs_two_inputs(tmp_path):
    text = _one(tmp_path, "inputs: [t_vec, q_vec]", "inputs: [t_vec]")
    assert "model.nodes.merged.inputs: Concatenate takes at least 2 inputs, got 1 input" in text


def test_subtract_takes_exactly_two(tmp_path):
    text = _one(tmp_path, "merged: {layer: Concatenate, inputs: [t_vec, q_vec]}",
                "merged: {layer: Subtract, inputs: [t_vec, q_vec, t_vec]}")
    assert "model.nodes.merged.inputs: Subtract takes exactly 2 inputs, got 3 inputs" in text


def test_plain_layer_takes_one_input(tmp_path):
    text = _one(tmp_path, "inputs: merged}", "inputs: [t_vec, q_vec]}\n    unused_merged: {layer: Concatenate, "
                "inputs: [t_vec, q_vec]}")
    assert "model.nodes.answer.inputs: Dense takes one input, got 2 inputs; join several with a merge layer" in text


def test_node_layer_names_and_args_are_checked(tmp_path):
    text = _one(tmp_path, "{Dense: {units: 3, activation: softmax}}", "{Dense: {units: 3, activaton: softmax}}")
    assert "model.nodes.answer.layer.Dense.activaton: Dense has no argument 'activaton' — did you mean " \
           "'activation'?" in text
    text = _one(tmp_path, "enc: {LSTM: {units: 4}}", "enc: {LTSM: {units: 4}}")
    assert "model.shared.enc.LTSM: unknown layer 'LTSM' — did you mean 'LSTM'?" in text


def test_per_output_names_are_checked(tmp_path):
    text = _one(tmp_path, "compile: {loss: categorical_crossentropy}",
                "compile: {loss: {answr: mse}, loss_weights: {answer: 1, other: 2}, metrics: {answer: [acuracy]}}")
    assert "compile.loss.answr: unknown output 'answr' — did you mean 'answer'?" in text
    assert "compile.loss: output 'answer' has no loss" in text
    assert "compile.loss_weights.other: unknown output 'other'" in text
    assert "compile.metrics.answer[0]: unknown metric 'acuracy' — did you mean 'accuracy'?" in text


def test_named_data_arrays_match_the_model(tmp_path):
    text = _one(tmp_path, "x: {text: a, question: b}", "x: {text: a, questoin: b}")
    assert "data.x.questoin: unknown model input 'questoin' — did you mean 'question'?" in text
    assert "data.x: no array for the model input 'question'" in text


def test_transforms_on_named_arrays_are_refused(tmp_path):
    text = _one(tmp_path, "model:\n", "preprocessing: [{transform: standardize}]\nmodel:\n")
    assert "preprocessing[0]: data.x maps arrays to inputs by name; preprocessing does not apply" in text


def test_per_output_settings_need_a_graph(tmp_path):
    errors = _errors(tmp_path, "name: s\ndata: {source: embedded, name: digits}\nmodel: {layers: [Dense]}\n"
                               "compile: {loss: {a: mse, b: mae}}\n")
    assert any("compile.loss: a loss per output needs a graph model" in e for e in errors)


def test_validate_imports_no_tensorflow(tmp_path):
    """The graph checks run in `dlrun validate` without TensorFlow or Keras."""
    bad = BASE.replace("inputs: [t_vec, q_vec]", "inputs: [t_vec, nope]")
    (tmp_path / "r.yaml").write_text(bad)
    code = textwrap.dedent(f"""
        import sys
        from dlrun.recipe.loading import load_recipe
        from dlrun.errors import RecipeError
        try:
            load_recipe({str(tmp_path / 'r.yaml')!r}, require_data=False)
        except RecipeError as e:
            print(e)
        print('heavy:', sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "unknown node or input 'nope'" in out and "heavy: []" in out


# --------------------------------------------------------------------------- building (TensorFlow)


def _recipe(tmp_path, text: str = BASE):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load_recipe(path, require_data=False).recipe


def test_shared_layer_is_one_object_with_one_set_of_weights(tmp_path):
    from dlrun.model.builder import build_model

    model = build_model(_recipe(tmp_path).model, None, name="g")
    lstm = model.get_layer("enc")
    calls = [n for n in model._nodes_by_depth.values() for n in n if n.operation is lstm]
    assert len(calls) == 2  # called in both branches
    assert len(lstm.weights) == 3  # kernel, recurrent kernel, bias: once, not twice
    lstm_params = lstm.count_params()
    others = sum(layer.count_params() for layer in model.layers if layer is not lstm)
    assert model.count_params() == lstm_params + others
    assert sum(1 for layer in model.layers if layer.name == "enc") == 1


def test_shape_mismatch_names_the_node(tmp_path):
    from dlrun.model.builder import build_model

    text = BASE.replace("q_vec: {shared: enc, inputs: q_emb}", "q_vec: {layer: Flatten, inputs: q_emb}")
    text = text.replace("merged: {layer: Concatenate", "merged: {layer: Add")
    with pytest.raises(ModelBuildError) as caught:
        build_model(_recipe(tmp_path, text).model, None, name="g")
    message = str(caught.value)
    assert message.startswith("model.nodes.merged (Add) does not fit its inputs (t_vec (None, 4), "
                              "q_vec (None, 40))"), message


def test_input_shape_and_dtype_from_named_data(tmp_path):
    from dlrun.training.job import _compiled_model
    from dlrun.model.builder import BuildContext

    text = BASE.replace("text: {shape: [10], dtype: int32}", "text: {}")
    recipe = _recipe(tmp_path, text)
    x = {"text": np.zeros((4, 7), "int64"), "question": np.zeros((4, 10), "int64")}
    model, _ = _compiled_model(recipe, x, BuildContext())
    assert tuple(model.get_layer("text").output.shape) == (None, 7)
    assert model.get_layer("text").output.dtype == "int32"


THREE = """\
name: three
data: {source: npz, path: d.npz, x: posts, y: {age: age, income: income, gender: gender}}
model:
  type: graph
  inputs: {posts: {shape: [6]}}
  nodes:
    features: {layer: {Dense: {units: 8, activation: relu}}, inputs: posts}
    age: {layer: {Dense: {units: 1}}, inputs: features}
    income: {layer: {Dense: {units: 3, activation: softmax}}, inputs: features}
    gender: {layer: {Dense: {units: 1, activation: sigmoid}}, inputs: features}
  outputs: [age, income, gender]
compile:
  optimizer: {Adam: {learning_rate: 0.001}}
  loss: {age: mse, income: categorical_crossentropy, gender: {BinaryCrossentropy: {label_smoothing: 0.1}}}
  loss_weights: {age: 0.25, income: 1, gender: 10}
  metrics: {income: [accuracy], gender: [accuracy]}
"""


def test_per_output_losses_and_weights_reach_compile(tmp_path):
    import keras

    from dlrun.model.builder import build_model, check_data_fits, compile_model

    recipe = _recipe(tmp_path, THREE)
    model = build_model(recipe.model, None, name="three")
    compile_model(model, recipe.compile)
    assert model.loss["age"] == "mse" and model.loss["income"] == "categorical_crossentropy"
    assert isinstance(model.loss["gender"], keras.losses.BinaryCrossentropy)
    assert model.loss["gender"].label_smoothing == 0.1
    assert model._compile_loss._user_loss_weights == {"age": 0.25, "income": 1.0, "gender": 10.0}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6)).astype("float32")
    y = {"age": rng.normal(size=(4, 1)).astype("float32"), "income": np.eye(3, dtype="float32")[[0, 1, 2, 0]],
         "gender": np.array([[0], [1], [1], [0]], "float32")}
    names = check_data_fits(model, x, y)
    assert {"loss", "age_loss", "income_loss", "gender_loss", "income_accuracy", "gender_accuracy"} <= set(names)
    assert not model.run_eagerly and model.test_function is None  # the check ran eagerly; fit traces its own
    logs = model.test_on_batch(x, y, return_dict=True)
    weighted = 0.25 * logs["age_loss"] + logs["income_loss"] + 10 * logs["gender_loss"]
    assert logs["loss"] == pytest.approx(weighted, rel=1e-4)


def test_named_arrays_split_limit_and_shuffle(tmp_path):
    from dlrun.data.dataset import NamedArrays, plain
    from dlrun.data.sources import load_dataset
    from dlrun.data.splits import apply_test_split, holdout_split, kfold_splits, resolve_stratify

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", a=np.arange(20).reshape(10, 2), b=np.arange(10) * 10, c=np.arange(10) % 2)
    path = tmp_path / "r.yaml"
    path.write_text(BASE.replace("path: d.npz", "path: d.npz, shuffle: true, limit: 8"))
    recipe = load_recipe(path).recipe
    ds = load_dataset(recipe.data, tmp_path, seed=1)
    assert isinstance(ds.x_train, NamedArrays) and len(ds.x_train) == 8
    # rows stay aligned across the named arrays after the seeded shuffle
    assert np.array_equal(ds.x_train["text"][:, 0] // 2 * 10, ds.x_train["question"])
    assert ds.info["x"]["text"] == {"sample_shape": [2], "dtype": "int64"}
    from dlrun.recipe.schema import SplitSpec

    ds = apply_test_split(ds, SplitSpec.model_validate({"test": {"fraction": 0.25}}), 0)
    assert len(ds.x_train) == 6 and len(ds.x_test) == 2
    split = holdout_split(len(ds.y_train), recipe.data.split.validation, 0)
    part = plain(ds.x_train[split.train])
    assert isinstance(part, dict) and set(part) == {"text", "question"}
    assert not resolve_stratify("auto", NamedArrays({"a": np.zeros(4, int)}), ["mse", "mae"])
    assert len(kfold_splits(ds.y_train, 3, True, False, 0)) == 3
    del rng


def test_one_metric_list_and_partial_weights_cover_every_output(tmp_path):
    """A plain metrics list applies to each output; outputs left out of loss_weights weigh 1."""
    from dlrun.model.builder import build_model, compile_model

    text = THREE.replace("loss_weights: {age: 0.25, income: 1, gender: 10}", "loss_weights: {gender: 10}")
    text = text.replace("metrics: {income: [accuracy], gender: [accuracy]}", "metrics: [mae]")
    recipe = _recipe(tmp_path, text)
    model = build_model(recipe.model, None, name="three")
    compile_model(model, recipe.compile)
    assert model._compile_loss._user_loss_weights == {"age": 1.0, "income": 1.0, "gender": 10.0}
    x = np.zeros((2, 6), "float32")
    y = {"age": np.zeros((2, 1), "float32"), "income": np.eye(3, dtype="float32")[[0, 1]],
         "gender": np.zeros((2, 1), "float32")}
    assert {"age_mae", "income_mae", "gender_mae"} <= set(model.test_on_batch(x, y, return_dict=True))


CSV_GRAPH = """\
name: csvg
data: {source: csv, path: t.csv, features: {left: [a, b], right: [c]}, target: {size: size, kind: kind}}
model:
  type: graph
  inputs: {left: {}, right: {}}
  nodes:
    joined: {layer: Concatenate, inputs: [left, right]}
    size: {layer: {Dense: {units: 1}}, inputs: joined}
    kind: {layer: {Dense: {units: 2, activation: softmax}}, inputs: joined}
  outputs: [size, kind]
compile: {loss: {size: mse, kind: sparse_categorical_crossentropy}}
"""


def test_csv_column_groups_feed_named_inputs_and_outputs(tmp_path):
    from dlrun.data.dataset import NamedArrays, plain, rows
    from dlrun.data.sources import load_dataset
    from dlrun.model.builder import BuildContext, check_data_fits
    from dlrun.training.job import _compiled_model

    (tmp_path / "t.csv").write_text("a,b,c,size,kind\n1,2,3,0.5,cat\n4,5,6,1.5,dog\n7,8,9,2.5,cat\n")
    recipe = _recipe(tmp_path, CSV_GRAPH)
    ds = load_dataset(recipe.data, tmp_path)
    assert isinstance(ds.x_train, NamedArrays) and ds.x_train["left"].shape == (3, 2)
    assert ds.y_train["kind"].tolist() == [0, 1, 0] and ds.info["classes"] == {"kind": ["cat", "dog"]}
    x, y = plain(ds.x_train), plain(ds.y_train)
    model, _ = _compiled_model(recipe, rows(x, slice(0, 2)), BuildContext())
    assert {"size_loss", "kind_loss"} <= set(check_data_fits(model, x, y))
    errors = _errors(tmp_path, CSV_GRAPH.replace("right: [c]}", "rigth: [c]}"))
    assert any("data.features.rigth: unknown model input 'rigth' — did you mean 'right'?" in e for e in errors)


def test_a_saved_model_is_a_frozen_shared_layer(tmp_path):
    """Another run's model.keras used as a layer (7.1.6), here shared by two branches."""
    import keras

    from dlrun.model.builder import BuildContext, build_model

    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="enc_dense")], name="encoder")
    encoder.save(tmp_path / "encoder.keras")
    text = """\
name: reuse
data: {source: npz, path: d.npz, x: {a: a, b: b}, y: y}
model:
  type: graph
  inputs: {a: {shape: [6]}, b: {shape: [6]}}
  shared:
    enc: {SavedModel: {path: encoder.keras}}
  nodes:
    ea: {shared: enc, inputs: a}
    eb: {shared: enc, inputs: b}
    joined: {layer: Concatenate, inputs: [ea, eb]}
    out: {layer: {Dense: {units: 1}}, inputs: joined}
  outputs: out
compile: {loss: mse}
"""
    context = BuildContext(base_dir=tmp_path)
    model = build_model(_recipe(tmp_path, text).model, None, name="reuse", context=context)
    nested = model.get_layer("enc")  # named after its shared name, like every graph layer
    assert not nested.trainable and len(model.trainable_weights) == 2  # only the new Dense head trains
    np.testing.assert_array_equal(nested.get_layer("enc_dense").kernel.numpy(),
                                  encoder.get_layer("enc_dense").kernel.numpy())
    assert context.facts["saved_models"]["enc"]["trainable"] is False
    errors = _errors(tmp_path, text.replace("{path: encoder.keras}", "{pth: encoder.keras}"))
    assert any("SavedModel has no argument 'pth' — did you mean 'path'?" in e for e in errors)


ONE_OUT = """\
name: one_out
data: {source: npz, path: d.npz, x: a, y: y}
model:
  type: graph
  inputs: {a: {shape: [3]}}
  nodes:
    hidden: {layer: {Dense: {units: 4, activation: relu}}, inputs: a}
    price: {layer: {Dense: {units: 1}}, inputs: hidden}
  outputs: price
compile: {loss: {price: {Huber: {delta: 1.0}}}}
fit: {epochs: 1, batch_size: 8, checkpoint: false}
"""


@pytest.mark.parametrize("loss, per_output", [
    ("mse", False), ({"Huber": None}, False), ({"Huber": {}}, False), ({"Huber": {"delta": 1}}, False),
    ({"Huber": {"delta": 1, "name": "h"}}, False), ({"Huber": {"reduction": None}}, False),  # a loss name
    ({"age": "mse", "b": "mae"}, True), ({"answr": "mse"}, True), ({"price": {"Huber": {"delta": 1}}}, True),
    ({"price": {"Huber": None}}, True), ({"price": {"MyLoss": {"k": {"x": 1}}}}, True), ({}, False), (None, False),
])
def test_one_rule_tells_one_loss_from_one_per_output(loss, per_output):
    from dlrun.recipe.graph_check import loss_is_per_output, per_output as per_output_items
    from dlrun.recipe.schema import CompileSpec

    assert loss_is_per_output(loss) is per_output
    assert bool(list(per_output_items(loss, "loss"))) is per_output  # what the catalog check walks
    if loss:
        parsed = CompileSpec.model_validate({"loss": loss}).loss
        assert isinstance(parsed, dict) is per_output


def test_a_single_output_keyed_loss_with_arguments_validates_and_trains(tmp_path):
    """``loss: {price: {Huber: {delta: 1}}}`` is the output 'price''s loss, not a loss named 'price'."""
    import keras

    import dlrun
    from dlrun.model.builder import build_model, compile_model

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", a=rng.normal(size=(32, 3)).astype("float32"),
             y=rng.normal(size=(32, 1)).astype("float32"))
    path = tmp_path / "r.yaml"
    path.write_text(ONE_OUT)
    recipe = load_recipe(path).recipe
    assert set(recipe.compile.loss) == {"price"} and recipe.compile.loss["price"].name == "Huber"
    assert recipe.compile.loss_names == ["Huber"]
    assert load_recipe(path).resolved["compile"]["loss"] == {"price": {"Huber": {"delta": 1.0}}}
    model = build_model(recipe.model, None, name="one_out")
    compile_model(model, recipe.compile)
    assert isinstance(model.loss["price"], keras.losses.Huber) and model.loss["price"]._fn_kwargs["delta"] == 1.0
    summary = dlrun.train(path, output_root=tmp_path / "out")
    assert summary.status == "FINISHED" and np.isfinite(summary.metrics["best_loss"]), summary.metrics
    # a typo in the output name is located as one, not read as an unknown loss
    errors = _errors(tmp_path, ONE_OUT.replace("{loss: {price:", "{loss: {prise:"))
    assert any("compile.loss.prise: unknown output 'prise' — did you mean 'price'?" in e for e in errors), errors
    assert not any("unknown loss" in e for e in errors), errors
    # written for a sequential model, the same form asks for a graph model
    errors = _errors(tmp_path, "name: s\ndata: {source: embedded, name: iris}\nmodel: {layers: [{Dense: {units: 3}}]}\n"
                               "compile: {loss: {out: {Huber: {delta: 1.0}}}}\n")
    assert any("compile.loss: a loss per output needs a graph model" in e for e in errors), errors


def test_keras_messages_reach_the_user_without_tensorflows_wrapping():
    from dlrun.model.builder import first_line

    raw = ("{{function_node __wrapped__SparseSoftmaxCrossEntropyWithLogits_device_/job:localhost/replica:0/task:0/"
           "device:CPU:0}} Received a label value of 9 which is outside the valid range of [0, 5).  Label values: 2 9 "
           "[Op:SparseSoftmaxCrossEntropyWithLogits] name: ")
    assert first_line(ValueError(raw)) == "Received a label value of 9 which is outside the valid range of [0, 5). " \
                                          "Label values: 2 9"
    assert first_line(ValueError("layer \x1b[1mdense\x1b[0m is incompatible")) == "layer dense is incompatible"
    assert first_line(ValueError("the range [0, 5) stays")) == "the range [0, 5) stays"

"""The Keras catalog used by `dlrun validate` matches the installed Keras."""

from dlrun.recipe.catalog import catalog
from dlrun.recipe.catalog_gen import build_catalog


def test_catalog_is_in_sync_with_installed_keras():
    fresh = build_catalog()
    assert fresh == catalog(), "run: python -m dlrun.recipe.catalog_gen"


def test_catalog_covers_the_books_vocabulary():
    cat = catalog()
    for layer in ("Dense", "Dropout", "Conv2D", "MaxPooling2D", "SeparableConv2D", "Flatten",
                  "GlobalAveragePooling2D", "Conv1D", "MaxPooling1D", "Embedding", "SimpleRNN",
                  "LSTM", "GRU", "Bidirectional", "BatchNormalization", "TextVectorization"):
        assert layer in cat["layers"], layer
    assert {"recurrent_dropout", "dropout", "return_sequences"} <= set(cat["layers"]["GRU"]["args"])
    assert "input_length" not in cat["layers"]["Embedding"]["args"]  # gone in Keras 3
    assert "RMSprop" in cat["optimizers"] and "learning_rate" in cat["optimizers"]["RMSprop"]["args"]
    assert {"binary_crossentropy", "mse", "BinaryCrossentropy"} <= set(cat["losses"])
    assert {"accuracy", "mae", "AUC"} <= set(cat["metrics"])
    assert {"EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "TensorBoard"} <= set(cat["callbacks"])


def test_catalog_records_the_kind_of_each_default():
    """`dlrun validate` checks a value against its argument's default kind (dlrun.recipe.arguments)."""
    cat = catalog()
    dense = cat["layers"]["Dense"]["defaults"]
    assert dense["use_bias"] == "bool" and dense["kernel_initializer"] == "str" and "units" not in dense
    assert cat["layers"]["Conv2D"]["defaults"]["strides"] == "sequence"
    assert cat["callbacks"]["EarlyStopping"]["defaults"]["min_delta"] == "number"  # 0: floats fit too
    assert cat["optimizers"]["Adam"]["defaults"]["learning_rate"] == "number"

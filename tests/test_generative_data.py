"""The data the chapter 8 recipes need: ``keep_labels`` (8.5's frogs: one class of a labelled
set), the ``text_chars`` source (8.1: a character vocabulary fitted on the training text, the
book's sentences streamed one-hot), and the NaN guard watching a GAN's two losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlrun.data.dataset import source_row
from dlrun.data.sources import load_data
from dlrun.errors import DataError
from dlrun.recipe.schema import DataSpec


def _spec(**fields):
    return TypeAdapter(DataSpec).validate_python(fields)


def test_keep_labels_keeps_one_class_in_both_parts_and_remembers_the_source_rows(tmp_path):
    y, y_test = np.array([0, 6, 2, 6, 6, 1]), np.array([6, 0, 6])
    np.savez(tmp_path / "d.npz", x=np.arange(6 * 2).reshape(6, 2).astype("float32"), y=y,
             x_test=np.zeros((3, 2), "float32"), y_test=y_test)
    ds = load_data(_spec(source="npz", path="d.npz", x_test="x_test", y_test="y_test", keep_labels=[6]), tmp_path)
    assert ds.y_train.tolist() == [6, 6, 6] and ds.y_test.tolist() == [6, 6]
    assert ds.x_train[:, 0].tolist() == [2.0, 6.0, 8.0]  # rows 1, 3, 4 of the file
    assert ds.info["keep_labels"] == [6] and ds.info["n_train_before_keep_labels"] == 6 and ds.info["n_train"] == 3
    assert source_row(ds, "train", 1) == "row 3 of array 'y' in " + str(tmp_path / "d.npz")
    with pytest.raises(DataError, match=r"data.keep_labels: no training row has a label in \[9\] \(labels present: "
                                        r"\[0, 1, 2, 6\]\)"):
        load_data(_spec(source="npz", path="d.npz", keep_labels=[9]), tmp_path)


def test_keep_labels_refuses_labels_that_are_not_class_numbers(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), "float32"), y=np.eye(4, dtype="float32"))
    with pytest.raises(DataError, match=r"keep_labels: the labels must be class numbers, one per row \(these have "
                                        r"shape \(4,\) and dtype float32\)"):
        load_data(_spec(source="npz", path="d.npz", keep_labels=[1]), tmp_path)


def test_text_chars_fits_its_vocabulary_on_the_training_text_and_streams_the_books_sentences(tmp_path):
    text = "The cat sat on the mat. " * 20 + "Zebras quietly?"  # Z, b, q, u, y, ?: only in the last 15 %
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    ds = load_data(_spec(source="text_chars", path="t.txt", maxlen=10, step=3, validation=0.15), tmp_path,
                   seed=1, batch_size=8)
    vocabulary = ds.fitted["vocabulary"]
    assert vocabulary == sorted(set(text.lower()[: int(len(text) * 0.85)]))  # lowercased, training part only
    assert "z" not in vocabulary and ds.info["validation_characters_left_out"] > 0
    cut = int(len(text) * 0.85)
    assert ds.info["train_sequences"] == len(range(0, cut - 10, 3))
    stream = ds.train_stream()
    assert stream.batches_per_pass == math.ceil(ds.info["train_sequences"] / 8)
    x, y = next(iter(stream.dataset()))
    assert x.shape == (8, 10, len(vocabulary)) and y.shape == (8, len(vocabulary))
    assert np.all(np.asarray(x).sum(axis=-1) == 1) and np.all(np.asarray(y).sum(axis=-1) == 1)
    batches = list(ds.validation())
    assert sum(len(b[0]) for b in batches) == ds.info["validation_sequences"]


def test_text_chars_says_what_is_wrong_with_its_file(tmp_path):
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(DataError, match=r"data \(short.txt\): text sequences: the text has 4 characters, not more "
                                        r"than maxlen=60"):
        load_data(_spec(source="text_chars", path="short.txt"), tmp_path)
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1") * 40)
    with pytest.raises(DataError, match=r"latin.txt is not utf-8 text .* set data.encoding"):
        load_data(_spec(source="text_chars", path="latin.txt"), tmp_path)


def test_the_nan_guard_watches_every_loss_a_model_logs():
    from dlrun.training.callbacks import nonfinite_guard

    class Model:
        stop_training = False

    guard = nonfinite_guard()
    guard.set_model(Model())
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(0, {"d_loss": 0.7, "g_loss": 0.7})
    assert guard.tripped is None
    guard.on_train_batch_end(1, {"d_loss": 0.7, "g_loss": float("nan")})
    assert guard.tripped[:2] == (1, 2) and guard.loss_name == "g_loss" and guard.model.stop_training

"""Text sources and the text_vectorization transform: aclImdb folders and archives, a
vocabulary fitted on the training part only, each output mode."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

from dlrun.data.sources import load_dataset
from dlrun.data.splits import holdout_split
from dlrun.data.transforms import fit_pipeline
from dlrun.errors import DataError
from dlrun.recipe.schema import DataSpec, HoldoutPart, TransformSpec


def data_spec(path, **extra):
    return TypeAdapter(DataSpec).validate_python({"source": "text_directory", "path": str(path), **extra})


def specs(*items):
    return [TypeAdapter(TransformSpec).validate_python(item) for item in items]


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


TINY = {
    "train/pos/1_9.txt": "A great film", "train/pos/0_8.txt": "Loved it",
    "train/neg/0_1.txt": "Dull and long", "train/unsup/0_0.txt": "no label",
    "test/pos/0_9.txt": "Great", "test/neg/0_2.txt": "Awful",
}


def make_archive(folder: Path, archive: Path, top: str | None) -> Path:
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(folder, arcname=top or ".")
    return archive


# --------------------------------------------------------------------------- text_directory


def test_aclimdb_sample_folder(shared_datasets):
    ds = load_dataset(data_spec(shared_datasets / "imdb" / "aclImdb_sample", classes=["neg", "pos"]), Path("."))
    assert ds.x_train.shape == (50,) and ds.x_train.dtype == object and isinstance(ds.x_train[0], str)
    assert ds.y_train.tolist() == [0] * 25 + [1] * 25
    assert ds.x_test.shape == (50,) and ds.y_test.sum() == 25
    # Sorted file order: train/pos/0_9.txt is the first positive review.
    assert ds.x_train[25].startswith("Bromwell High is a cartoon comedy.")
    assert ds.info["classes"] == ["neg", "pos"] and ds.info["n_train"] == 50


def test_archive_reads_the_same_as_the_folder_with_or_without_a_top_folder(shared_datasets, tmp_path):
    folder = shared_datasets / "imdb" / "aclImdb_sample"
    expected = load_dataset(data_spec(folder, classes=["neg", "pos"]), Path("."))
    for top, name in (("aclImdb", "wrapped.tar.xz"), (None, "flat.tar.xz")):
        archive = make_archive(folder, tmp_path / name, top)
        ds = load_dataset(data_spec(name, classes=["neg", "pos"]), tmp_path)  # relative to the recipe folder
        assert ds.x_train.tolist() == expected.x_train.tolist()
        assert ds.y_train.tolist() == expected.y_train.tolist()
        assert ds.x_test.tolist() == expected.x_test.tolist()
        assert ds.info["format"] == "archive" and ds.info.get("archive_root", "") == (top or "")
        assert archive.is_file()


def test_unlisted_classes_are_skipped_and_default_classes_are_every_folder(tmp_path):
    root = write_tree(tmp_path / "imdb", TINY)
    listed = load_dataset(data_spec(root, classes=["neg", "pos"], test=None), tmp_path)
    assert listed.x_train.tolist() == ["Dull and long", "Loved it", "A great film"]  # sorted names per class
    assert listed.y_train.tolist() == [0, 1, 1] and listed.x_test is None
    everything = load_dataset(data_spec(root, test=None), tmp_path)
    assert everything.info["classes"] == ["neg", "pos", "unsup"] and everything.y_train.tolist() == [0, 1, 1, 2]
    archived = make_archive(root, tmp_path / "imdb.tar.gz", "aclImdb")
    from_archive = load_dataset(data_spec(archived, classes=["neg", "pos"]), tmp_path)
    assert from_archive.x_train.tolist() == listed.x_train.tolist()
    assert from_archive.x_test.tolist() == ["Awful", "Great"]


def test_shuffle_limit_and_split_work_on_texts(tmp_path):
    files = {f"train/{c}/{i}_1.txt": f"{c} review {i}" for c in ("neg", "pos") for i in range(10)}
    root = write_tree(tmp_path / "d", files)
    spec = data_spec(root, test=None, shuffle=True, limit=12, split={"validation": {"last": 10}})
    ds = load_dataset(spec, tmp_path)
    assert len(ds.x_train) == 12 and sorted(ds.y_train.tolist()) != ds.y_train.tolist()
    again = load_dataset(spec, tmp_path)
    assert again.x_train.tolist() == ds.x_train.tolist()  # seeded: the same 12 reviews every time


def test_missing_folders_and_bad_files_are_clear_errors(tmp_path):
    root = write_tree(tmp_path / "imdb", TINY)
    with pytest.raises(DataError, match=r"data.train: no folder 'training'.*\['test', 'train'\]"):
        load_dataset(data_spec(root, train="training"), tmp_path)
    with pytest.raises(DataError, match=r"data.test: no folder 'testing'.*data.test: null"):
        load_dataset(data_spec(root, test="testing"), tmp_path)
    with pytest.raises(DataError, match=r"no \.txt files in 'train/neutral'.*\['neg', 'pos', 'unsup'\]"):
        load_dataset(data_spec(root, classes=["neg", "neutral"]), tmp_path)
    with pytest.raises(DataError, match="no such folder or archive"):
        load_dataset(data_spec(tmp_path / "nowhere"), tmp_path)
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(DataError, match="neither a folder nor a readable"):
        load_dataset(data_spec(tmp_path / "notes.txt"), tmp_path)
    other = write_tree(tmp_path / "other", {"reviews/a.txt": "x"})
    with pytest.raises(DataError, match=r"top-level entries are \['reviews'\]"):
        load_dataset(data_spec(make_archive(other, tmp_path / "o.tar.xz", None)), tmp_path)
    (root / "train" / "neg" / "9_1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"train/neg/9_1.txt .* not utf-8 text.*data.encoding"):
        load_dataset(data_spec(root, classes=["neg", "pos"]), tmp_path)
    assert load_dataset(data_spec(root, classes=["neg", "pos"], encoding="latin-1"), tmp_path).x_train[1] == "café"


# --------------------------------------------------------------------------- text_vectorization


def test_vocabulary_is_fitted_on_the_training_part_only():
    x = np.array(["good film", "bad film", "good good plot", "zebra film"], dtype=object)
    y = np.array([1, 0, 1, 0])
    split = holdout_split(4, HoldoutPart(last=1), seed=0)  # "zebra film" is validation
    pipeline = fit_pipeline(specs({"transform": "text_vectorization", "output_sequence_length": 3}),
                            x[split.train], y[split.train])
    vocabulary = pipeline.vocabulary()
    assert vocabulary[:2] == ["", "[UNK]"] and "zebra" not in vocabulary
    assert vocabulary[2] == "good" and all(type(t) is str for t in vocabulary)  # most frequent first
    val, _ = pipeline.apply(x[split.validation], y[split.validation])
    assert val.dtype == np.int32 and val.tolist() == [[1, vocabulary.index("film"), 0]]  # zebra → [UNK]
    state = pipeline.state()[0]
    assert state["vocabulary_size"] == len(vocabulary) and state["first_tokens"][:3] == ["", "[UNK]", "good"]
    json.dumps(pipeline.state())


def test_int_mode_without_a_length_keeps_whole_sequences_for_pad_sequences():
    x = np.array(["a b c d e", "b", ""], dtype=object)
    pipeline = fit_pipeline(specs({"transform": "text_vectorization"}), x, None)
    ragged, _ = pipeline.apply(x)
    assert ragged.dtype == object and [len(s) for s in ragged] == [5, 1, 0]
    padded, _ = fit_pipeline(specs({"transform": "text_vectorization"},
                                   {"transform": "pad_sequences", "maxlen": 3}), x, None).apply(x)
    # The book's texts_to_sequences + pad_sequences: the last 3 words, zeros in front.
    assert padded.tolist()[0] == ragged[0][-3:].tolist() and padded.tolist()[1][:2] == [0, 0]


def test_other_modes_give_float_rows_and_no_vocabulary_for_embeddings():
    x = np.array([["the cat"], ["the dog"], ["a cat"]], dtype=object)  # an (n, 1) CSV column
    for mode in ("multi_hot", "count", "tf_idf"):
        pipeline = fit_pipeline(specs({"transform": "text_vectorization", "output_mode": mode,
                                       "max_tokens": 4}), x, None)
        out, _ = pipeline.apply(x)
        assert out.dtype == np.float32 and out.shape == (3, 4)
        assert pipeline.vocabulary() is None  # only int mode feeds an Embedding
    counts, _ = fit_pipeline(specs({"transform": "text_vectorization", "output_mode": "count",
                                    "ngrams": 2}), np.array(["a a b"]), None).apply(np.array(["a a b"]))
    assert counts.sum() == 5  # a, a, b, "a a", "a b"


def test_non_text_input_is_a_clear_error():
    with pytest.raises(DataError, match=r"preprocessing\[0\] \(text_vectorization.*one text per sample"):
        fit_pipeline(specs({"transform": "text_vectorization"}), np.zeros((3, 5), np.int32), None)
    with pytest.raises(DataError, match="sample 1 is float, not text"):
        fit_pipeline(specs({"transform": "text_vectorization"}), np.array(["ok", np.nan], dtype=object), None)

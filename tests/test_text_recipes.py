"""Pretrained word embeddings (GloVe files → a frozen Embedding) and the book's chapter 6
text recipes, each run end to end for one short epoch on tiny data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun.errors import ModelBuildError
from dlrun.model.builder import BuildContext
from dlrun.model.embeddings import make_pretrained_embedding

ROOT = Path(__file__).resolve().parent.parent
WHERE = "model.layers[0] (PretrainedEmbedding)"
VOCABULARY = ["", "[UNK]", "the", "movie", "good", "zebraish"]
# A hand-written GloVe file: "the" twice (the first wins), a word with no use, "zebraish" absent.
GLOVE = "the 0.1 0.2 0.3\nmovie 1 2 3\nunused 9 9 9\ngood -1 -0.5 0.25\nthe 7 7 7\n"


def embed(path, vocabulary=VOCABULARY, **args):
    context = BuildContext(vocabulary=vocabulary, base_dir=Path(path).parent)
    layer = make_pretrained_embedding({"path": Path(path).name, **args}, context, WHERE)
    return layer, context.facts


# --------------------------------------------------------------------------- GloVe loading


def test_glove_rows_follow_the_vocabulary_and_the_layer_is_frozen(tmp_path):
    import keras

    (tmp_path / "g.txt").write_text(GLOVE)
    layer, facts = embed(tmp_path / "g.txt")
    assert facts == {"embedding_path": str(tmp_path / "g.txt"), "embedding_dim": 3, "embedding_vocabulary": 6,
                     "embedding_found": 3, "embedding_missing": 1}
    (matrix,) = layer.get_weights()
    assert matrix.dtype == np.float32 and matrix.shape == (6, 3)
    np.testing.assert_array_equal(matrix[[0, 1, 5]], 0)  # padding, [UNK], the word GloVe lacks
    np.testing.assert_allclose(matrix[2:5], [[0.1, 0.2, 0.3], [1, 2, 3], [-1, -0.5, 0.25]])
    model = keras.Sequential([keras.Input((2,), dtype="int32"), layer, keras.layers.Flatten(), keras.layers.Dense(1)])
    assert not layer.trainable and len(model.non_trainable_weights) == 1 and len(model.trainable_weights) == 2
    trainable, _ = embed(tmp_path / "g.txt", trainable=True, mask_zero=True, name="glove")
    assert trainable.trainable and trainable.mask_zero and trainable.name == "glove"


def test_gzipped_files_and_word2vec_headers_are_read(tmp_path):
    with gzip.open(tmp_path / "g.txt.gz", "wt") as f:
        f.write("4 3\n" + GLOVE)
    _, facts = embed(tmp_path / "g.txt.gz")
    assert facts["embedding_found"] == 3 and facts["embedding_dim"] == 3


def test_bad_embedding_inputs_are_clear_errors(tmp_path):
    (tmp_path / "g.txt").write_text(GLOVE)
    with pytest.raises(ModelBuildError, match="text_vectorization step with output_mode: int"):
        embed(tmp_path / "g.txt", vocabulary=None)
    with pytest.raises(ModelBuildError, match=r"no such word-vector file: .*glove.6B.100d.txt.*"
                                              r"--set 'model.layers\[0\].PretrainedEmbedding.path="):
        embed(tmp_path / "glove.6B.100d.txt")
    (tmp_path / "short.txt").write_text("the 1 2 3\nmovie 1 2\n")
    with pytest.raises(ModelBuildError, match=r"short.txt:2: 2 values, the file's first vector has 3"):
        embed(tmp_path / "short.txt")
    (tmp_path / "words.txt").write_text("the 1 2 3\nmovie 1 x 3\n")
    with pytest.raises(ModelBuildError, match=r"words.txt:2: the values of 'movie' are not all numbers"):
        embed(tmp_path / "words.txt")
    (tmp_path / "other.txt").write_text("chat 1 2\nchien 3 4\n")
    with pytest.raises(ModelBuildError, match="none of the 4 vocabulary words has a vector"):
        embed(tmp_path / "other.txt")
    with pytest.raises(ModelBuildError, match="'trainable' must be true or false"):
        embed(tmp_path / "g.txt", trainable="no")


def test_the_offline_glove_50d_subset_covers_common_words(shared_datasets):
    path = shared_datasets / "glove" / "glove.6B.50d.imdb20k.txt.gz"
    if not path.is_file():
        pytest.skip(f"no {path}")
    layer, facts = embed(path, vocabulary=["", "[UNK]", "the", "movie", "br", "qqqzzzx"])
    assert facts["embedding_dim"] == 50 and facts["embedding_found"] == 3 and facts["embedding_missing"] == 1
    np.testing.assert_allclose(layer.get_weights()[0][2, :3], [0.418, 0.24968, -0.41242])  # GloVe's "the"


# --------------------------------------------------------------------------- recipes end to end

KERAS_IMDB_RECIPES = ["imdb_embedding_flatten", "imdb_simplernn", "imdb_lstm", "imdb_bidirectional_lstm",
                      "imdb_conv1d"]


@pytest.fixture
def imdb_like_npz(tmp_path) -> Path:
    """Integer reviews as Keras' IMDB gives them (word indices < 10,000), padded to 30."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, 10000, size=(60, 30)).astype(np.int32)
    path = tmp_path / "imdb_like.npz"
    np.savez(path, x=x[:40], y=rng.integers(0, 2, 40), x_test=x[40:], y_test=rng.integers(0, 2, 20))
    return path


def train(name: str, tmp_path: Path, *overrides: str):
    return dlrun.train(ROOT / "recipes" / f"{name}.yaml", overrides=["fit.epochs=1", *overrides],
                       output_root=tmp_path / "out")


@pytest.mark.parametrize("name", KERAS_IMDB_RECIPES)
def test_keras_imdb_recipes_run_on_integer_sequences(name, imdb_like_npz, tmp_path):
    import keras

    data = (f"data={{source: npz, path: {imdb_like_npz}, x_test: x_test, y_test: y_test, "
            f"split: {{validation: {{fraction: 0.2, shuffle: false}}}}}}")
    summary = train(name, tmp_path, data)
    assert {"final_val_accuracy", "test_accuracy"} <= set(summary.metrics)
    run_dir = Path(summary.run_dir)
    split = json.loads((run_dir / "splits.json").read_text())["holdout"]
    assert split["validation"] == list(range(32, 40))  # Keras' validation_split=0.2: the last 20%, in order
    model = keras.models.load_model(run_dir / "model.keras")
    assert type(model.layers[0]).__name__ == "Embedding" and model.input_shape[1:] == (
        20 if name == "imdb_embedding_flatten" else 500,)
    assert model.layers[-1].get_config()["activation"] == "sigmoid"


@pytest.fixture
def tiny_glove(tmp_path, shared_datasets) -> Path:
    """A few hand-made 4-d vectors for words of the aclImdb sample."""
    words = ["the", "and", "a", "of", "movie", "film", "good", "bad"]
    lines = [f"{w} " + " ".join(f"{(i + 1) * 0.1 + j:.2f}" for j in range(4)) for i, w in enumerate(words)]
    (tmp_path / "tiny_glove.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "tiny_glove.txt"


def raw_overrides(shared_datasets: Path, *more: str) -> list[str]:
    return [f"data.path={shared_datasets / 'imdb' / 'aclImdb_sample'}", "data.limit=40",
            "data.split.validation={last: 10}", *more]


def test_raw_text_glove_recipe_trains_with_a_frozen_embedding(shared_datasets, tiny_glove, tmp_path):
    import keras

    summary = train("imdb_raw_glove", tmp_path, *raw_overrides(
        shared_datasets, f"model.layers[0].PretrainedEmbedding.path={tiny_glove}"))
    assert {"final_val_accuracy", "test_accuracy"} <= set(summary.metrics)
    run_dir = Path(summary.run_dir)
    facts = json.loads((run_dir / "model_facts.json").read_text())
    state = json.loads((run_dir / "preprocessing.json").read_text())[0]
    assert facts["embedding_dim"] == 4 and facts["embedding_found"] == 8
    assert facts["embedding_vocabulary"] == state["vocabulary_size"] == facts["embedding_found"] + \
        facts["embedding_missing"] + 2
    model = keras.models.load_model(run_dir / "model.keras")
    embedding = model.layers[0]
    assert not embedding.trainable and model.input_shape[1:] == (100,)
    matrix = embedding.get_weights()[0]
    vocabulary = state["first_tokens"]  # the most frequent words all have a tiny-GloVe vector
    row = vocabulary.index("the")
    np.testing.assert_allclose(matrix[row], [0.1, 1.1, 2.1, 3.1], rtol=1e-6)  # unchanged by training
    assert np.count_nonzero(matrix.any(axis=1)) == 8


def test_raw_text_recipe_without_glove_learns_its_embedding(shared_datasets, tmp_path):
    import keras

    summary = train("imdb_raw_no_glove", tmp_path, *raw_overrides(shared_datasets))
    run_dir = Path(summary.run_dir)
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.layers[0].trainable and model.layers[0].get_weights()[0].shape == (10000, 100)
    assert not (run_dir / "model_facts.json").exists()


def test_kfold_fits_a_vocabulary_and_an_embedding_per_fold(shared_datasets, tiny_glove, tmp_path):
    summary = train("imdb_raw_glove", tmp_path, *raw_overrides(
        shared_datasets, f"model.layers[0].PretrainedEmbedding.path={tiny_glove}",
        "data.split.validation=none", "evaluation={protocol: kfold, k: 2}", "fit.batch_size=64"))
    sizes = {json.loads(p.read_text())[0]["vocabulary_size"]
             for p in Path(summary.run_dir).rglob("preprocessing.json")}
    facts = [json.loads(p.read_text()) for p in Path(summary.run_dir).rglob("model_facts.json")]
    assert len(sizes) == 2  # each fold's 20 training reviews give their own vocabulary
    assert {f["embedding_vocabulary"] for f in facts} == sizes
